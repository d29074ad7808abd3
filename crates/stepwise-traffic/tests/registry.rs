//! The places a new router touches, kept honest: its module and its row in `BUILT_IN`, its field
//! under `trafficRouting` (the API type, from which core and the CRD's rule learn it), and its
//! permissions in the chart (`routers.<kind>.enabled`). A row without the others fails here.

use std::collections::BTreeSet;

use stepwise_api::TrafficRouting;
use stepwise_traffic::{BUILT_IN, Routers};

/// The fields of `trafficRouting` that are routers (`plugins`, the map of them, included), as
/// the API type's schema has them.
fn router_fields() -> BTreeSet<String> {
    let schema = schemars::schema_for!(TrafficRouting);
    let properties = schema.get("properties").and_then(|p| p.as_object()).expect("trafficRouting has properties");
    properties.keys().filter(|f| !TrafficRouting::SETTINGS.contains(&f.as_str())).cloned().collect()
}

#[test]
fn every_router_has_its_field_under_traffic_routing() {
    let fields = router_fields();
    for router in BUILT_IN {
        // A built-in plugin form (`plugins.<name>`) lives in the `plugins` map.
        let field = if router.kind.starts_with("plugins.") { "plugins" } else { router.kind };
        assert!(fields.contains(field), "{} has no field under trafficRouting: {fields:?}", router.kind);
    }
}

#[test]
fn every_router_field_is_a_router_of_this_build_or_refused_by_name() {
    let built = Routers::default().kinds(|_| true);
    // Argo's AWS routers: accepted by the schema so that Argo manifests apply, refused by core
    // with a message that names them.
    let refused = ["alb", "appMesh"];
    for field in router_fields().into_iter().filter(|f| f != "plugins") {
        assert!(
            built.contains(&field) || refused.contains(&field.as_str()),
            "trafficRouting.{field} is neither a router of this build nor refused by name"
        );
    }
}

#[test]
fn every_router_has_its_permissions_in_the_chart() {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/stepwise/values.yaml")).unwrap(),
    )
    .unwrap();
    for router in BUILT_IN {
        // A built-in plugin form shares the permissions of the router it is a form of.
        let kind = router.kind.strip_prefix("plugins.argoproj-labs/").unwrap_or(router.kind);
        assert!(
            values["routers"][kind]["enabled"].is_bool(),
            "charts/stepwise/values.yaml has no routers.{kind}.enabled for the {} router",
            router.kind
        );
    }
}
