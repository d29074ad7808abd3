//! Traffic: the one place that reads the routing objects (VirtualServices, HTTPRoutes,
//! TraefikServices, Ingresses) and applies the patches and generated objects the routers decide
//! (crates/stepwise-traffic, which is pure).
//!
//! Every object is read and every patch decided before anything is written, so a Rollout whose
//! second VirtualService is missing or malformed changes none of them: a half-shifted split is
//! worse than an unshifted one. The objects are read with a GET on each change of weight, which
//! happens a handful of times per rollout; a cache would also let the controller verify weights
//! between changes.
//!
//! Router plugins (`--router-plugin`, src/router_plugin.rs) are called here too. Their handshake
//! (`v1/info`) counts as a read; their set-traffic call is a write, made after every built-in
//! router's objects are read and decided and before any of them is written, so that a plugin
//! that refuses (a mirror route it cannot make) leaves the built-in routers as they were.

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use stepwise_api::Rollout;
use stepwise_traffic::plugin::RolloutRef;
use stepwise_traffic::{Desired, Generated, JsonPatch, Routers, Target};
use tracing::info;

use crate::context::Context;
use crate::error::{Error, KubeContext};
use crate::execute::FIELD_MANAGER;

fn api(ctx: &Context, target: &Target) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: target.group.into(),
        version: target.version.into(),
        // The core group has no name: its objects are `v1`, not `/v1`.
        api_version: if target.group.is_empty() {
            target.version.to_string()
        } else {
            format!("{}/{}", target.group, target.version)
        },
        kind: target.kind.into(),
        plural: target.plural.into(),
    };
    Api::namespaced_with(ctx.client.clone(), &target.namespace, &resource)
}

/// Brings every router the Rollout names to `desired`, as core decided it: the canary's weight
/// (out of maxTrafficWeight) to the canary and the rest to the stable version, and exactly the
/// managed routes wanted. Without a router there is nothing to do.
pub async fn set_traffic(ctx: &Context, rollout: &Rollout, desired: &Desired) -> Result<(), Error> {
    let Some(routing) = rollout.spec.strategy.canary.as_ref().and_then(|c| c.traffic_routing.as_ref()) else {
        return Ok(());
    };
    let ns = rollout.namespace().unwrap_or_default();
    let plugins = &ctx.router_plugins;
    let registered = ctx.routers.out_of_process();
    let routers = ctx.routers.build(routing, &rollout.name_any(), &ns)?;
    let plugin_calls: Vec<(&String, &serde_json::Value)> =
        routing.plugins.iter().flatten().filter(|(name, _)| registered.contains(*name)).collect();
    let canary_weight = desired.canary_weight;

    let mut patches: Vec<(Target, JsonPatch)> = Vec::new();
    let mut generated: Vec<Generated> = Vec::new();
    for router in &routers {
        for target in router.targets() {
            let current = match api(ctx, &target).get_opt(&target.name).await {
                // get_opt reads a missing object as None: a 404 here is a resource not served.
                Err(kube::Error::Api(status)) if status.code == 404 => return Err(not_served(ctx, &target).await),
                read => read.during(|| format!("get {target}"))?,
            };
            let Some(current) = current else {
                return Err(stepwise_traffic::Error::NotFound(target.to_string()).into());
            };
            let current = serde_json::to_value(&current).map_err(|e| Error::Traffic(format!("{target}: {e}")))?;
            if let Some(patch) = router.patch(&target, &current, desired)? {
                patches.push((target.clone(), patch));
            }
            generated.extend(router.generated(&target, &current, desired)?);
        }
    }
    for object in &generated {
        check_owned(ctx, rollout, &object.target).await?;
    }
    for (name, _) in &plugin_calls {
        plugins.info(name).await?;
    }
    let rollout_ref =
        RolloutRef { namespace: ns.clone(), name: rollout.name_any(), uid: rollout.uid().unwrap_or_default() };
    for (name, config) in plugin_calls {
        let answer = plugins.set_traffic(name, &rollout_ref, config, desired).await?;
        info!(
            rollout = %rollout.name_any(),
            plugin = %name,
            canary_weight,
            routes = desired.routes.len(),
            verified = ?answer.verified,
            "set traffic through router plugin"
        );
    }
    for object in generated {
        apply_generated(ctx, rollout, object, canary_weight).await?;
    }
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    for (target, patch) in patches {
        let patch = Patch::Json::<()>(
            serde_json::from_value(serde_json::Value::Array(patch))
                .map_err(|e| Error::Traffic(format!("patch of {target}: {e}")))?,
        );
        // A Conflict means the object changed since it was read (the patch carries its
        // resourceVersion); the next reconcile reads it again.
        api(ctx, &target)
            .patch(&target.name, &params, &patch)
            .await
            .during(|| format!("set the weights of {target}"))?;
        info!(rollout = %rollout.name_any(), object = %target, canary_weight, "set traffic weight");
    }
    Ok(())
}

/// The error for a routing object whose kind the cluster does not serve at the version the router
/// writes (Istio before 1.22 serves no `networking.istio.io/v1`), naming what it serves instead.
async fn not_served(ctx: &Context, target: &Target) -> Error {
    let served = ctx.client.list_api_groups().await.ok().map(|groups| {
        groups
            .groups
            .into_iter()
            .filter(|g| g.name == target.group)
            .flat_map(|g| g.versions.into_iter().map(|v| v.version))
            .collect::<Vec<_>>()
    });
    Error::Traffic(not_served_message(target, served.as_deref()))
}

/// What [`not_served`] says, given the versions of the target's group the cluster serves (None
/// when discovery could not tell).
fn not_served_message(target: &Target, served: Option<&[String]>) -> String {
    let group = target.group;
    let needed = format!("{}/{} {}", group, target.version, target.kind);
    let serves = match served {
        None => "its API discovery did not answer".to_string(),
        Some([]) => format!("it serves no {group} API (are its CRDs installed?)"),
        Some(versions) if versions.iter().any(|v| v == target.version) => {
            format!("it serves {group}/{} but no {} in it", target.version, target.plural)
        }
        Some(versions) => {
            let listed: Vec<String> = versions.iter().map(|v| format!("{group}/{v}")).collect();
            format!("it serves {} only", listed.join(", "))
        }
    };
    format!("{target}: this cluster does not serve {needed}, which stepwise needs: {serves}")
}

/// Whether the controller can read back the weight of `rollout`'s routers: one of them keeps it
/// in the objects it patches, or is a router plugin (whose answer says `verified`).
pub fn weight_checkable(rollout: &Rollout, routers: &Routers) -> bool {
    let Some(routing) = rollout.spec.strategy.canary.as_ref().and_then(|c| c.traffic_routing.as_ref()) else {
        return false;
    };
    if routing.plugins.iter().flatten().any(|(name, _)| routers.out_of_process().contains(name)) {
        return true;
    }
    let ns = rollout.namespace().unwrap_or_default();
    routers.build(routing, &rollout.name_any(), &ns).is_ok_and(|routers| routers.iter().any(|r| r.weight_in_targets()))
}

/// What the routers' objects say of the traffic last set, as the Rollout's status records it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightReading {
    /// In effect everywhere it can be read (true), not somewhere (false), or nothing to read.
    pub verified: Option<bool>,
    /// What does not carry it, for people.
    pub not_in_effect: Option<String>,
}

/// Reads every routing object back (and asks every router plugin again: its set-traffic is
/// idempotent) against the weight the status says was set last. A plugin that answered it cannot
/// tell (`verified: null`) for this traffic is not asked again.
pub async fn read_weight(ctx: &Context, rollout: &Rollout) -> Result<WeightReading, Error> {
    let Some(desired) = stepwise_core::traffic::last_set(rollout) else { return Ok(WeightReading::default()) };
    let Some(routing) = rollout.spec.strategy.canary.as_ref().and_then(|c| c.traffic_routing.as_ref()) else {
        return Ok(WeightReading::default());
    };
    let ns = rollout.namespace().unwrap_or_default();
    let registered = ctx.routers.out_of_process();
    let routers = ctx.routers.build(routing, &rollout.name_any(), &ns)?;
    let mut reading = WeightReading::default();
    let mut not_in_effect = |why: String| {
        reading.verified = Some(false);
        reading.not_in_effect.get_or_insert(why);
    };
    let mut read_any = false;
    for router in routers.iter().filter(|r| r.weight_in_targets()) {
        for target in router.targets() {
            read_any = true;
            let Some(current) = api(ctx, &target).get_opt(&target.name).await.during(|| format!("get {target}"))?
            else {
                not_in_effect(format!("{target} is not found"));
                continue;
            };
            let current = serde_json::to_value(&current).map_err(|e| Error::Traffic(format!("{target}: {e}")))?;
            match router.canary_weight(&target, &current, &desired)? {
                Some(w) if w == desired.canary_weight => {}
                Some(w) => not_in_effect(format!(
                    "{target} sends {} to the canary",
                    stepwise_core::weight_text(w, desired.max_weight)
                )),
                None => not_in_effect(format!("{target} does not send one weight to the canary on all its routes")),
            }
        }
    }
    let rollout_ref =
        RolloutRef { namespace: ns.clone(), name: rollout.name_any(), uid: rollout.uid().unwrap_or_default() };
    let asked =
        |name: &String| registered.contains(name) && !ctx.router_plugins.cannot_tell(name, &rollout_ref.uid, &desired);
    for (name, config) in routing.plugins.iter().flatten().filter(|(name, _)| asked(name)) {
        let answer = ctx.router_plugins.set_traffic(name, &rollout_ref, config, &desired).await?;
        match answer.verified {
            Some(true) => read_any = true,
            Some(false) => not_in_effect(format!("router plugin {name} has not verified it yet")),
            None => {}
        }
    }
    if read_any && reading.verified.is_none() {
        reading.verified = Some(true);
    }
    ctx.metrics.weight_read(reading.verified);
    Ok(reading)
}

/// A generated object may replace only one this Rollout owns: an Ingress of the same name that a
/// person wrote is theirs.
async fn check_owned(ctx: &Context, rollout: &Rollout, target: &Target) -> Result<(), Error> {
    let Some(existing) = api(ctx, target).get_opt(&target.name).await.during(|| format!("get {target}"))? else {
        return Ok(());
    };
    let ours = existing
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == rollout.uid().as_ref());
    if ours { Ok(()) } else { Err(Error::Traffic(format!("{target} exists and is not owned by this Rollout"))) }
}

/// Applies a generated object as it is (server-side apply: fields it no longer has are removed,
/// fields other managers own are kept), owned by the Rollout so that it goes with it.
async fn apply_generated(
    ctx: &Context,
    rollout: &Rollout,
    generated: Generated,
    canary_weight: i32,
) -> Result<(), Error> {
    let Generated { target, mut object } = generated;
    object["metadata"]["ownerReferences"] = serde_json::json!([stepwise_core::analysis_run::owner_reference(rollout)]);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api(ctx, &target)
        .patch(&target.name, &params, &Patch::Apply(&object))
        .await
        .during(|| format!("apply {target}"))?;
    info!(rollout = %rollout.name_any(), object = %target, canary_weight, "set traffic weight");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn virtual_service() -> Target {
        Target {
            group: "networking.istio.io",
            version: "v1",
            kind: "VirtualService",
            plural: "virtualservices",
            namespace: "shop".into(),
            name: "checkout".into(),
        }
    }

    #[test]
    fn an_unserved_version_names_what_stepwise_needs_and_what_the_cluster_serves() {
        let older = ["v1beta1".to_string(), "v1alpha3".to_string()];
        let message = not_served_message(&virtual_service(), Some(&older));
        assert!(message.contains("does not serve networking.istio.io/v1 VirtualService"), "{message}");
        assert!(
            message.ends_with("it serves networking.istio.io/v1beta1, networking.istio.io/v1alpha3 only"),
            "{message}"
        );
    }

    #[test]
    fn an_unserved_group_asks_whether_its_crds_are_installed() {
        let message = not_served_message(&virtual_service(), Some(&[]));
        assert!(message.ends_with("it serves no networking.istio.io API (are its CRDs installed?)"), "{message}");
    }

    #[test]
    fn a_served_version_without_the_kind_says_so() {
        let message = not_served_message(&virtual_service(), Some(&["v1".to_string()]));
        assert!(message.ends_with("it serves networking.istio.io/v1 but no virtualservices in it"), "{message}");
    }
}
