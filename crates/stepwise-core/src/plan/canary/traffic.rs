//! The canary's desired state once the decisions are made: the weight, the pods of each
//! ReplicaSet and the version each Service selects.

use stepwise_api::{CanaryStatus, RolloutStatus, TrafficWeights, WeightDestination};

use super::Decision;
use super::pods::{Canary, Others};
use crate::plan::desired::{Draft, Weight, beyond_delay_limit};
use crate::replicas::{Counts, at_least_min_pods, replicas_for_weight, weight_supported_by};
use crate::traffic::Sides;

pub(crate) fn desire(
    c: &Canary,
    d: &Decision,
    status: &RolloutStatus,
    canary_status: &mut CanaryStatus,
    draft: &mut Draft,
) {
    // A promotion in this plan has made the previous stable one of the older ReplicaSets.
    let others = c.others(status);
    if !c.routed {
        basic_pods(c, d, &others, draft);
        point_stable_service(c, status, 0, draft);
        point_basic_canary_service(c, d, status, draft);
        return;
    }
    let target_weight = target_weight(c, d, &others);
    let step_pods = canary_pods(c, d, target_weight);
    let side = canary_side(c, d, &others, step_pods);
    // The share the stable cannot take back yet stays where it is, on pods that carry it: the
    // canary keeps the pods for that share, unless a setCanaryScale step sizes it without
    // dynamicStableScale (a canary below its weight is then the user's choice, as in Argo).
    let r = c.ctx.replicas;
    let off_stable = off_stable(c, d, &others);
    let dynamic = c.spec.dynamic_stable_scale == Some(true);
    let new_side = side.hash == c.ctx.hash && !d.aborted;
    let held_now = off_stable.min(weight_supported_by(side.kept, r, c.max_weight));
    let keeps_pods = dynamic || !c.sized_by_step(d.idx);
    let canary_pods =
        if keeps_pods && new_side { step_pods.max(replicas_for_weight(held_now, r, c.max_weight)) } else { step_pods };
    // Judged on the pods the canary keeps once this plan has scaled it, so that planning again
    // holds the same share.
    let kept_after = if new_side { c.ctx.counts(&c.ctx.hash).available_once_scaled_to(canary_pods) } else { side.kept };
    let held = off_stable.min(weight_supported_by(kept_after, r, c.max_weight));
    let weight = weight_now(c, d, target_weight, step_pods, &side, held);
    let routed = Routed { target: target_weight, weight, canary_pods, side };
    routed_pods(c, d, &others, &routed, draft);
    point_stable_service(c, status, weight, draft);
    point_routed_canary_service(c, d, &others, &routed, draft);
    // The canary's share goes where the canary Service points once this plan is carried out;
    // without one (Istio subsets), to the side that carries it.
    let canary_service = c.canary_service;
    let canary_hash = canary_service.and_then(|s| draft.desired.selected(c.ctx, s)).unwrap_or(routed.side.hash.clone());
    record_weight(c, status, weight, &canary_hash, canary_status, draft);
}

/// What a routed canary's plan settled on.
struct Routed {
    /// The weight the step wants.
    target: i32,
    /// The weight set now.
    weight: i32,
    /// The new version's pods.
    canary_pods: i32,
    /// Where the canary's share goes.
    side: CanarySide,
}

/// The version the router's canary share reaches (through the canary Service) once the plan is
/// done, and its available pods. During an abort, the one the canary Service selects. Otherwise
/// the new version, unless the canary Service selects a canary the new version superseded and the
/// new one cannot yet carry the share that must stay off the stable: that canary then keeps the
/// share, and its pods, until the stable or the new version can carry it.
struct CanarySide {
    hash: String,
    /// Its available pods once the plan has scaled it to the step's size.
    available: i32,
    /// Its available pods now, at the spec it has.
    kept: i32,
}

fn canary_side(c: &Canary, d: &Decision, others: &Others, canary_pods: i32) -> CanarySide {
    let ctx = c.ctx;
    let new = ctx.counts(&ctx.hash);
    let new_available = if d.aborted { new.kept_available() } else { new.available_once_scaled_to(canary_pods) };
    let new_side = CanarySide { hash: ctx.hash.clone(), available: new_available, kept: new.kept_available() };
    let selected = c.canary_service.and_then(|s| ctx.observed.services.get(s).cloned().flatten());
    let Some(selected) = selected.filter(|h| *h != ctx.hash) else { return new_side };
    let kept = ctx.counts(&selected).kept_available();
    let selected_side = CanarySide { available: kept, kept, hash: selected };
    if d.aborted {
        return selected_side;
    }
    let superseded = others.stable.as_deref() != Some(selected_side.hash.as_str());
    let new_carries = weight_supported_by(new_available, ctx.replicas, c.max_weight);
    if superseded && (new_available == 0 || new_carries < off_stable(c, d, others)) { selected_side } else { new_side }
}

/// The share of the traffic the stable cannot take back yet: what it had last time beyond what
/// its available pods carry (a stable that dynamicStableScale shrank, or one still coming up).
fn off_stable(c: &Canary, d: &Decision, others: &Others) -> i32 {
    let ctx = c.ctx;
    let Some(stable) = others.stable.as_deref().filter(|_| !d.promoted) else { return 0 };
    let stable_carries = weight_supported_by(ctx.counts(stable).kept_available(), ctx.replicas, c.max_weight);
    (c.max_weight - stable_carries).min(c.prev_weight.unwrap_or(0)).max(0)
}

/// The weight the step wants for the canary.
fn target_weight(c: &Canary, d: &Decision, others: &Others) -> i32 {
    if d.aborted || d.promoted || others.stable.is_none() {
        0
    } else if d.promote_full {
        c.prev_weight.unwrap_or(0).max(if d.idx >= c.n { c.max_weight } else { 0 })
    } else {
        c.weight_at(d.idx)
    }
}

/// The canary's pods with a router: the step's
/// (setCanaryScale may set fewer or more than the weight needs), all of them at the end, and on
/// abort they stay until traffic is back on stable.
fn canary_pods(c: &Canary, d: &Decision, target_weight: i32) -> i32 {
    let ctx = c.ctx;
    if d.promoted {
        ctx.replicas
    } else if d.aborted {
        ctx.counts(&ctx.hash).spec
    } else if d.idx >= c.n || d.promote_full {
        ctx.replicas
    } else {
        c.routed_canary(d.idx, target_weight)
    }
}

/// The weight the canary gets now: traffic only ever goes to available pods. Toward the canary it
/// never exceeds what the canary's available pods carry; back toward the stable (a lower step, an
/// abort, a new version) it moves only as far as the stable's available pods carry, while the
/// stable is scaled up, and the rest stays where it is.
fn weight_now(c: &Canary, d: &Decision, target: i32, step_pods: i32, side: &CanarySide, held: i32) -> i32 {
    let ctx = c.ctx;
    let r = ctx.replicas;
    if side.hash != ctx.hash || side.available == 0 {
        return held;
    }
    let stepping = !d.aborted && !d.promoted && d.idx < c.n && !d.promote_full;
    let needed = if stepping { step_pods } else { replicas_for_weight(target, r, c.max_weight) };
    let supported =
        if side.available >= needed { target } else { weight_supported_by(side.available, r, c.max_weight) };
    let toward_canary = if target <= supported || d.aborted || d.promoted {
        target
    } else {
        c.prev_weight.unwrap_or(0).max(d.completed_weight.unwrap_or(0)).min(supported).min(target)
    };
    toward_canary.max(held)
}

/// Pods with a router: the canary's as decided; the stable keeps all its pods, or with
/// dynamicStableScale the pods for the largest share of traffic it may carry; older versions go
/// after scaleDownDelaySeconds; on abort the canary goes once traffic is back on a stable that
/// can carry it.
fn routed_pods(c: &Canary, d: &Decision, others: &Others, routed: &Routed, draft: &mut Draft) {
    let Routed { target, weight, canary_pods, ref side } = *routed;
    let ctx = c.ctx;
    let r = ctx.replicas;
    let dynamic = c.spec.dynamic_stable_scale == Some(true);
    let stable_pods = if dynamic && !d.aborted && !d.promoted {
        // The largest share the stable may carry once this plan is done: the new weight's, the
        // previous weight's while the router has yet to confirm the change, and the target's,
        // which it will carry once it has the pods. A router that cannot confirm weights has the
        // new weight once it is set, so the stable shrinks in the same plan, after the traffic
        // moved (scale-downs come after traffic).
        // Nor does it give up more than the canary's available pods can carry: a setCanaryScale
        // canary may take a weight its pods cannot carry, and the stable stays ready for it.
        let mut lowest = weight.min(target).min(weight_supported_by(side.available, r, c.max_weight));
        if !c.weight_reached(weight, true) {
            lowest = lowest.min(c.prev_weight.unwrap_or(0));
        }
        replicas_for_weight(c.max_weight - lowest.clamp(0, c.max_weight), r, c.max_weight)
    } else {
        r
    };
    let stable_pods = at_least_min_pods(stable_pods, c.spec.min_pods_per_replica_set, r);
    if !d.aborted {
        draft.desired.scale(ctx, &ctx.hash, canary_pods);
        draft.desired.clear_deadline(&ctx.hash);
    }
    if let Some(sh) = others.stable.as_deref() {
        draft.desired.scale(ctx, sh, stable_pods);
        draft.desired.clear_deadline(sh);
        let stable_ready = draft.desired.available(ctx, sh) >= r;
        if d.aborted && weight == 0 && c.weight_reached(0, true) && stable_ready {
            let delay = match c.spec.abort_scale_down_delay_seconds {
                Some(0) => None,
                Some(d) => Some(d),
                None => Some(stepwise_api::DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS),
            };
            draft.scale_down_after(ctx, &ctx.hash, delay);
        }
    }
    // Every older version gets the delay, not only the one that was stable: the cache may not yet
    // show the deadline written a moment ago, and guessing wrong must err on the side of keeping
    // pods, never of removing pods that may still take traffic.
    let delay = if dynamic {
        Some(0)
    } else {
        Some(c.spec.scale_down_delay_seconds.unwrap_or(stepwise_api::DEFAULT_SCALE_DOWN_DELAY_SECONDS))
    };
    // A superseded canary that still takes traffic keeps its pods.
    let leaving = others.older.iter().filter(|h| !(**h == side.hash && weight > 0));
    let beyond = beyond_delay_limit(ctx, leaving.clone(), c.spec.scale_down_delay_revision_limit);
    for hash in leaving {
        if beyond.contains(hash) {
            draft.desired.scale(ctx, hash, 0);
        } else {
            draft.scale_down_after(ctx, hash, delay);
        }
    }
}

/// Pods without a router: the weight approximated with pod counts, within maxSurge and
/// maxUnavailable.
fn basic_pods(c: &Canary, d: &Decision, others: &Others, draft: &mut Draft) {
    let ctx = c.ctx;
    let weight = if d.aborted {
        0
    } else if d.promoted || d.idx >= c.n || d.promote_full {
        100
    } else {
        c.weight_at(d.idx)
    };
    let mut desired = c.basic_desired(weight, others.stable.is_some());
    let mut targets = c.basic_targets(desired, others);
    // On abort the canary keeps its pods until the canary Service selects the stable pods,
    // which it does once the stable has available pods at its new spec. Holding the canary
    // leaves the stable no more room, so the answer stays the same.
    if d.aborted
        && let Some(canary_service) = c.canary_service
    {
        let service_on_stable = others.stable.as_deref().is_some_and(|h| {
            ctx.observed.services.get(canary_service).cloned().flatten().as_deref() == Some(h)
                || Counts { spec: targets.1, available: ctx.counts(h).available }.kept_available() > 0
        });
        if !service_on_stable {
            desired.0 = desired.0.max(ctx.counts(&ctx.hash).spec);
            targets = c.basic_targets(desired, others);
        }
    }
    let (canary_t, stable_t, old_t) = targets;
    draft.desired.scale(ctx, &ctx.hash, canary_t);
    if let Some(sh) = others.stable.as_deref() {
        draft.desired.scale(ctx, sh, stable_t);
    }
    for (h, t) in others.older.iter().zip(old_t) {
        draft.desired.scale(ctx, h, t);
    }
}

/// The stable Service selects the stable pods once they carry its share (all the traffic but the
/// canary's `canary_weight`), or carry more of it than the pods it selects now (a Rollout scaled
/// from zero has nothing better to wait for).
fn point_stable_service(c: &Canary, status: &RolloutStatus, canary_weight: i32, draft: &mut Draft) {
    let ctx = c.ctx;
    let (Some(service), Some(sh)) = (c.stable_service, status.stable_rs.as_deref()) else { return };
    let available = draft.desired.available(ctx, sh);
    let share = replicas_for_weight(c.max_weight - canary_weight.clamp(0, c.max_weight), ctx.replicas, c.max_weight);
    let selected = draft.desired.selected(ctx, service);
    let selected_available = selected.as_deref().map(|h| draft.desired.available(ctx, h)).unwrap_or(0);
    if available > 0 && (available >= share || available > selected_available) {
        draft.desired.select(service, sh);
    }
}

/// Without a router the canary Service selects the new pods once they are available, and the
/// stable pods on abort.
fn point_basic_canary_service(c: &Canary, d: &Decision, status: &RolloutStatus, draft: &mut Draft) {
    let ctx = c.ctx;
    let target = if d.aborted { status.stable_rs.clone() } else { Some(ctx.hash.clone()) };
    if let (Some(service), Some(target)) = (c.canary_service, target)
        && draft.desired.available(ctx, &target) > 0
    {
        draft.desired.select(service, &target);
    }
}

/// With a router the canary Service selects the version that carries the canary's share (see
/// [`canary_side`]) once it has available pods; on abort it goes to the stable pods only once the
/// weight is back at 0 and the stable carries it all, since until then the canary's share must
/// reach pods that are available.
fn point_routed_canary_service(c: &Canary, d: &Decision, others: &Others, routed: &Routed, draft: &mut Draft) {
    let Routed { weight, ref side, .. } = *routed;
    let ctx = c.ctx;
    let Some(service) = c.canary_service else { return };
    let target = match others.stable.as_deref() {
        Some(sh) if d.aborted => {
            let back = weight == 0 && draft.desired.available(ctx, sh) >= ctx.replicas;
            back.then(|| sh.to_string())
        }
        // Nothing to go back to: the new version is (or becomes) stable.
        _ if d.aborted => None,
        _ => Some(side.hash.clone()),
    };
    // With no replicas wanted the stable has no pods to wait for: the Service goes back at once
    // rather than hold on to a canary that is about to go.
    if let Some(target) = target
        && (draft.desired.available(ctx, &target) > 0 || (d.aborted && ctx.replicas == 0))
    {
        draft.desired.select(service, &target);
    }
}

/// How soon a weight found not in effect is read back (and given again).
const WEIGHT_READ_AGAIN_SECONDS: f64 = 5.0;

/// Records the weight, the versions it splits between and the managed routes, and hands them to
/// the router when any of them changed. `canary_hash` is the version that carries the canary's
/// share: routers that select pods themselves (Istio subsets) must not point the canary's share
/// at a version whose pods are not there yet.
fn record_weight(
    c: &Canary,
    status: &RolloutStatus,
    weight: i32,
    canary_hash: &str,
    canary_status: &mut CanaryStatus,
    draft: &mut Draft,
) {
    let ctx = c.ctx;
    // Nothing the controller watches changes when a routing object is put back: it looks again.
    if ctx.observed.weight_verified == Some(false) {
        draft.requeue_in(WEIGHT_READ_AGAIN_SECONDS);
    }
    let stable_hash = status.stable_rs.clone();
    let sides = Sides {
        services: (c.canary_service.map(String::from), c.stable_service.map(String::from)),
        hashes: (Some(canary_hash.to_string()), stable_hash.clone()),
    };
    let routes = super::routes::managed_routes(c.spec, status);
    let recorded = super::routes::recorded(&routes);
    // A pingPong promotion swaps the Services at the same weights: the router is told too.
    let changed = c.prev_hashes.as_ref().is_some_and(|prev| *prev != sides.hashes)
        || c.prev_services.as_ref().is_some_and(|prev| *prev != sides.services)
        || recorded != c.prev_routes;
    let routes = routes.into_iter().map(|(r, _)| r).collect();
    let traffic = crate::traffic::wanted(c.spec, sides, weight, routes);
    draft.desired.weight = Some(Weight { traffic, previous: c.prev_weight, changed });
    canary_status.managed_routes = (!recorded.is_empty()).then_some(recorded);
    canary_status.weights = Some(TrafficWeights {
        canary: WeightDestination {
            weight,
            pod_template_hash: Some(canary_hash.to_string()),
            service_name: c.canary_service.map(String::from),
        },
        stable: WeightDestination {
            weight: c.max_weight - weight,
            pod_template_hash: stable_hash,
            service_name: c.stable_service.map(String::from),
        },
        verified: if c.prev_weight == Some(weight) { ctx.observed.weight_verified } else { None },
    });
}
