//! The canary's desired state once the decisions are made: the weight, the pods of each
//! ReplicaSet and the version each Service selects.

use stepwise_api::{CanaryStatus, RolloutStatus, TrafficWeights, WeightDestination};

use super::Decision;
use super::pods::{Canary, Others};
use crate::plan::desired::{Draft, Weight};
use crate::replicas::{Counts, at_least_min_pods, replicas_for_weight, weight_supported_by};

pub(crate) fn desire(
    c: &Canary,
    d: &Decision,
    status: &RolloutStatus,
    canary_status: &mut CanaryStatus,
    draft: &mut Draft,
) {
    // A promotion in this plan has made the previous stable one of the older ReplicaSets.
    let others = c.others(status);
    let target_weight = target_weight(c, d, &others);
    let canary_pods = canary_pods(c, d, target_weight);
    let weight = weight_now(c, d, &others, target_weight, canary_pods);
    if c.routed {
        routed_pods(c, d, &others, target_weight, weight, canary_pods, draft);
    } else {
        basic_pods(c, d, &others, draft);
    }
    point_services(c, d, status, draft);
    if c.routed {
        record_weight(c, status, weight, canary_status, draft);
    }
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

/// The canary's pods with a router (without one, the basic arithmetic decides): the step's
/// (setCanaryScale may set fewer or more than the weight needs), all of them at the end, and on
/// abort they stay until traffic is back on stable.
fn canary_pods(c: &Canary, d: &Decision, target_weight: i32) -> i32 {
    let ctx = c.ctx;
    if d.promoted {
        ctx.replicas
    } else if d.aborted || !c.routed {
        ctx.counts(&ctx.hash).spec
    } else if d.idx >= c.n || d.promote_full {
        ctx.replicas
    } else {
        c.routed_canary(d.idx, target_weight)
    }
}

/// The weight the canary gets now: traffic only ever goes to available pods. Toward the canary it
/// never exceeds what the canary's available pods carry; back toward a stable that
/// dynamicStableScale shrank (a lower step, an abort) it moves only as far as the stable's
/// available pods carry, while the stable is scaled up.
fn weight_now(c: &Canary, d: &Decision, others: &Others, target_weight: i32, canary_pods: i32) -> i32 {
    let ctx = c.ctx;
    let r = ctx.replicas;
    let canary_available = ctx.counts(&ctx.hash).available_once_scaled_to(canary_pods);
    if canary_available == 0 {
        return 0;
    }
    let stepping = c.routed && !d.aborted && !d.promoted && d.idx < c.n && !d.promote_full;
    let needed = if stepping { canary_pods } else { replicas_for_weight(target_weight, r, c.max_weight) };
    let supported =
        if canary_available >= needed { target_weight } else { weight_supported_by(canary_available, r, c.max_weight) };
    let toward_canary = if target_weight <= supported || d.aborted || d.promoted {
        target_weight
    } else {
        c.prev_weight.unwrap_or(0).max(d.completed_weight.unwrap_or(0)).min(supported).min(target_weight)
    };
    // Only dynamicStableScale shrinks the stable; otherwise it keeps all its pods and a stable pod
    // that is not available is not this plan's to wait for (as in Argo).
    let dynamic = c.spec.dynamic_stable_scale == Some(true);
    let Some(stable) = others.stable.as_deref().filter(|_| dynamic && !d.promoted) else { return toward_canary };
    let stable_carries = weight_supported_by(ctx.counts(stable).kept_available(), r, c.max_weight);
    let floor = c.max_weight - stable_carries;
    toward_canary.max(floor.min(c.prev_weight.unwrap_or(0)))
}

/// Pods with a router: the canary's as decided; the stable keeps all its pods, or with
/// dynamicStableScale the pods for the largest share of traffic it may carry; older versions go
/// after scaleDownDelaySeconds; on abort the canary goes once traffic is back on a stable that
/// can carry it.
fn routed_pods(
    c: &Canary,
    d: &Decision,
    others: &Others,
    target: i32,
    weight: i32,
    canary_pods: i32,
    draft: &mut Draft,
) {
    let ctx = c.ctx;
    let r = ctx.replicas;
    let dynamic = c.spec.dynamic_stable_scale == Some(true);
    let stable_pods = if dynamic && !d.aborted && !d.promoted {
        // The largest share the stable may carry once this plan is done: the new weight's, the
        // previous weight's while the router has yet to confirm the change, and the target's,
        // which it will carry once it has the pods. A router that cannot confirm weights has the
        // new weight once it is set, so the stable shrinks in the same plan, after the traffic
        // moved (scale-downs come after traffic).
        let mut lowest = weight.min(target);
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
    for hash in &others.older {
        draft.scale_down_after(ctx, hash, delay);
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
        && let Some(canary_service) = c.spec.canary_service.as_deref()
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

/// Stable Service to the stable pods, canary Service to the new pods (to stable on abort), each
/// once the pods behind it are available.
fn point_services(c: &Canary, d: &Decision, status: &RolloutStatus, draft: &mut Draft) {
    let ctx = c.ctx;
    let stable = status.stable_rs.clone();
    if let (Some(service), Some(sh)) = (c.spec.stable_service.as_deref(), stable.as_deref())
        && draft.desired.available(ctx, sh) > 0
    {
        draft.desired.select(service, sh);
    }
    let canary_target = if d.aborted { stable } else { Some(ctx.hash.clone()) };
    if let (Some(service), Some(target)) = (c.spec.canary_service.as_deref(), canary_target)
        && draft.desired.available(ctx, &target) > 0
    {
        draft.desired.select(service, &target);
    }
}

fn record_weight(c: &Canary, status: &RolloutStatus, weight: i32, canary_status: &mut CanaryStatus, draft: &mut Draft) {
    let ctx = c.ctx;
    let stable_hash = status.stable_rs.clone();
    draft.desired.weight = Some(Weight { canary: weight, previous: c.prev_weight, stable_hash: stable_hash.clone() });
    canary_status.weights = Some(TrafficWeights {
        canary: WeightDestination {
            weight,
            pod_template_hash: Some(ctx.hash.clone()),
            service_name: c.spec.canary_service.clone(),
        },
        stable: WeightDestination {
            weight: c.max_weight - weight,
            pod_template_hash: stable_hash,
            service_name: c.spec.stable_service.clone(),
        },
        verified: if c.prev_weight == Some(weight) { ctx.observed.weight_verified } else { None },
    });
}
