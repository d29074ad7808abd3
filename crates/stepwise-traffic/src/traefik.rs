//! Traefik: the weights of a weighted TraefikService (`traefik.io/v1alpha1`).
//!
//! `spec.weighted.services` must name the canary and the stable Service, and nothing else (a
//! third service would get a share nobody decided). Only their `weight`s are written; ports,
//! sticky sessions, health checks and every other field stay as the user wrote them.

use serde_json::Value;
use stepwise_api::TraefikTrafficRouting;

use crate::{Desired, Error, JsonPatch, Target, TrafficRouter, guarded, set_weight, split_name};

/// The Traefik router of one Rollout: its weighted TraefikService.
#[derive(Clone, Debug, PartialEq)]
pub struct Traefik {
    service: Target,
}

/// The TraefikService `name` in `namespace`.
pub fn traefik_service(name: &str, namespace: &str) -> Target {
    Target {
        group: "traefik.io",
        version: "v1alpha1",
        kind: "TraefikService",
        plural: "traefikservices",
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

impl Traefik {
    /// The router for `config` in a Rollout of `namespace`.
    pub fn new(config: &TraefikTrafficRouting, namespace: &str) -> Result<Traefik, Error> {
        if config.weighted_traefik_service_name.is_empty() {
            return Err(Error::Config("trafficRouting.traefik.weightedTraefikServiceName must not be empty".into()));
        }
        let (namespace, name) = split_name(&config.weighted_traefik_service_name, namespace);
        Ok(Traefik { service: traefik_service(&name, &namespace) })
    }
}

/// Where the canary's and the stable's entries are in `spec.weighted.services`.
struct Entries {
    canary: usize,
    stable: usize,
}

/// Traefik's entries name a Service unless `kind` says TraefikService.
fn service_of(entry: &Value) -> Option<&str> {
    let kind = entry.get("kind").and_then(Value::as_str).unwrap_or("Service");
    (kind == "Service").then(|| entry.get("name").and_then(Value::as_str)).flatten()
}

fn entries(target: &Target, current: &Value, desired: &Desired) -> Result<Entries, Error> {
    let object = target.to_string();
    let Some(services) = current.pointer("/spec/weighted/services").and_then(Value::as_array) else {
        return Err(Error::Malformed { object, message: "it has no spec.weighted.services to split".into() });
    };
    let find = |service: &str| services.iter().position(|e| service_of(e) == Some(service));
    let missing = |service: &str| Error::DestinationMissing {
        object: object.clone(),
        route: "spec.weighted.services".into(),
        service: service.to_string(),
    };
    let canary = find(&desired.canary_service).ok_or_else(|| missing(&desired.canary_service))?;
    let stable = find(&desired.stable_service).ok_or_else(|| missing(&desired.stable_service))?;
    if let Some(other) = services.iter().enumerate().find(|(i, _)| *i != canary && *i != stable).map(|(_, e)| e) {
        let kind = other.get("kind").and_then(Value::as_str).unwrap_or("Service");
        let name = other.get("name").and_then(Value::as_str).unwrap_or_default();
        return Err(Error::UnknownDestination {
            object,
            route: "spec.weighted.services".into(),
            destination: format!("{kind} {name}"),
            canary: desired.canary_service.clone(),
            stable: desired.stable_service.clone(),
        });
    }
    Ok(Entries { canary, stable })
}

fn weight_at(current: &Value, entry: usize) -> Option<&Value> {
    current.pointer(&format!("/spec/weighted/services/{entry}/weight"))
}

impl TrafficRouter for Traefik {
    fn targets(&self) -> Vec<Target> {
        vec![self.service.clone()]
    }

    fn patch(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        let at = entries(target, current, desired)?;
        let mut ops = Vec::new();
        for (entry, want) in [(at.canary, desired.canary_weight), (at.stable, desired.stable_weight())] {
            set_weight(&mut ops, format!("/spec/weighted/services/{entry}/weight"), weight_at(current, entry), want);
        }
        Ok(guarded(current, ops))
    }

    fn canary_weight(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<i32>, Error> {
        let at = entries(target, current, desired)?;
        // Traefik's default weight is 1.
        let read = |entry| weight_at(current, entry).and_then(Value::as_i64).unwrap_or(1);
        let (canary, stable) = (read(at.canary), read(at.stable));
        Ok((canary + stable == i64::from(desired.max_weight)).then(|| i32::try_from(canary).ok()).flatten())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{apply, desired, without_weights};

    fn router() -> Traefik {
        Traefik::new(&TraefikTrafficRouting { weighted_traefik_service_name: "web".into() }, "shop").unwrap()
    }

    fn target() -> Target {
        traefik_service("web", "shop")
    }

    /// A weighted TraefikService as users write them: ports, a sticky cookie, a health check.
    fn service() -> Value {
        json!({
            "apiVersion": "traefik.io/v1alpha1",
            "kind": "TraefikService",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7"},
            "spec": {"weighted": {
                "sticky": {"cookie": {"name": "lb", "secure": true}},
                "services": [
                    {"name": "web-stable", "port": 80, "weight": 100, "healthCheck": {"path": "/health"}},
                    {"name": "web-canary", "port": 80, "weight": 0}
                ]
            }}
        })
    }

    #[test]
    fn a_weight_changes_only_the_two_weights_guarded_by_the_resource_version() {
        let current = service();
        let patch = router().patch(&target(), &current, &desired(30)).unwrap().unwrap();
        assert_eq!(
            patch,
            vec![
                json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}),
                json!({"op": "add", "path": "/spec/weighted/services/1/weight", "value": 30}),
                json!({"op": "add", "path": "/spec/weighted/services/0/weight", "value": 70}),
            ]
        );
        let after = apply(&current, &patch);
        assert_eq!(without_weights(&after), without_weights(&current), "nothing but weights changes");
        assert_eq!(router().canary_weight(&target(), &after, &desired(30)).unwrap(), Some(30));
        assert_eq!(router().patch(&target(), &after, &desired(30)).unwrap(), None, "and then nothing to do");
    }

    #[test]
    fn omitted_weights_count_as_traefiks_default_of_one_and_are_written() {
        let current = json!({"metadata": {"name": "web"}, "spec": {"weighted": {"services": [
            {"name": "web-canary", "port": 80}, {"name": "web-stable", "port": 80}
        ]}}});
        assert_eq!(router().canary_weight(&target(), &current, &desired(1)).unwrap(), None);
        let after = apply(&current, &router().patch(&target(), &current, &desired(0)).unwrap().unwrap());
        assert_eq!(after["spec"]["weighted"]["services"][0]["weight"], 0);
        assert_eq!(after["spec"]["weighted"]["services"][1]["weight"], 100);
    }

    #[test]
    fn a_missing_service_entry_is_an_error_naming_it() {
        let mut current = service();
        current["spec"]["weighted"]["services"].as_array_mut().unwrap().pop();
        let err = router().patch(&target(), &current, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TraefikService shop/web: spec.weighted.services has no destination for Service web-canary"
        );
        let err = router().patch(&target(), &json!({"spec": {"mirroring": {}}}), &desired(10)).unwrap_err();
        assert_eq!(err.to_string(), "TraefikService shop/web: it has no spec.weighted.services to split");
    }

    #[test]
    fn a_third_service_in_the_split_is_an_error_rather_than_a_guess() {
        let mut current = service();
        current["spec"]["weighted"]["services"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "other", "kind": "TraefikService", "weight": 5}));
        let err = router().patch(&target(), &current, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TraefikService shop/web: spec.weighted.services sends traffic to TraefikService other, which is neither the canary Service web-canary nor the stable Service web-stable"
        );
    }

    #[test]
    fn a_name_with_a_dot_names_the_namespace_and_an_empty_name_is_refused() {
        let r = Traefik::new(&TraefikTrafficRouting { weighted_traefik_service_name: "web.edge".into() }, "shop");
        assert_eq!(r.unwrap().targets()[0].to_string(), "TraefikService edge/web");
        assert!(Traefik::new(&TraefikTrafficRouting::default(), "shop").is_err());
    }
}
