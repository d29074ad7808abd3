//! The canary's arithmetic: the weight and pods each step wants, with and without a router, and
//! whether the pods for a step are there.

use stepwise_api::{CanaryStep, CanaryStrategy, ReplicaProgressThresholdType, RolloutStatus};

use crate::plan::context::Ctx;
use crate::replicas::{
    Counts, approximate_weighted_counts, at_least_min_pods, basic_canary_targets, replicas_for_weight,
    resolve_fenceposts,
};

/// A canary strategy as one plan sees it.
pub(crate) struct Canary<'c> {
    pub ctx: &'c Ctx<'c>,
    pub spec: &'c CanaryStrategy,
    pub steps: &'c [CanaryStep],
    /// The number of steps.
    pub n: i32,
    pub routed: bool,
    pub max_weight: i32,
    pub surge: i32,
    pub unavailable: i32,
    /// The weight the router was last given, as the status recorded it.
    pub prev_weight: Option<i32>,
    /// The (canary, stable) pod-template-hashes the router was last given, as the status
    /// recorded them.
    pub prev_hashes: Option<(Option<String>, Option<String>)>,
    /// The (canary, stable) Services the router was last given, as the status recorded them.
    pub prev_services: Option<(Option<String>, Option<String>)>,
    /// The header and mirror routes the router was last given, as the status recorded them.
    pub prev_routes: Vec<stepwise_api::ManagedRouteStatus>,
    /// The Service in front of the canary: canaryService, or with pingPong the one of the two
    /// that is not stable now.
    pub canary_service: Option<&'c str>,
    /// The Service in front of the stable pods: stableService, or the stable one of pingPong.
    pub stable_service: Option<&'c str>,
}

/// The ReplicaSets other than the newest: the stable one (when it is another) and the older ones.
pub(crate) struct Others {
    pub stable: Option<String>,
    pub older: Vec<String>,
}

impl<'c> Canary<'c> {
    pub fn new(ctx: &'c Ctx<'c>, spec: &'c CanaryStrategy, prev: &RolloutStatus) -> Self {
        let steps = spec.steps.as_deref().unwrap_or_default();
        let roles = prev.canary.as_ref().and_then(|c| c.stable_ping_pong);
        let (canary_service, stable_service) = spec.services_in_roles(roles);
        let (surge, unavailable) =
            resolve_fenceposts(spec.max_surge.as_ref(), spec.max_unavailable.as_ref(), ctx.replicas);
        Canary {
            ctx,
            spec,
            steps,
            n: steps.len() as i32,
            routed: spec.traffic_routing.is_some(),
            max_weight: crate::traffic::max_weight(spec),
            surge,
            unavailable,
            prev_weight: prev.canary.as_ref().and_then(|c| c.weights.as_ref()).map(|w| w.canary.weight),
            prev_hashes: prev
                .canary
                .as_ref()
                .and_then(|c| c.weights.as_ref())
                .map(|w| (w.canary.pod_template_hash.clone(), w.stable.pod_template_hash.clone())),
            prev_services: prev
                .canary
                .as_ref()
                .and_then(|c| c.weights.as_ref())
                .map(|w| (w.canary.service_name.clone(), w.stable.service_name.clone())),
            prev_routes: prev.canary.as_ref().and_then(|c| c.managed_routes.clone()).unwrap_or_default(),
            canary_service,
            stable_service,
        }
    }

    /// Takes the Services' roles from `stable_ping_pong`, as the decisions left it (a promotion
    /// swaps the pingPong Services).
    pub fn set_roles(&mut self, stable_ping_pong: Option<stepwise_api::PingPong>) {
        (self.canary_service, self.stable_service) = self.spec.services_in_roles(stable_ping_pong);
    }

    /// The stable and older ReplicaSets, as the status has them now.
    pub fn others(&self, status: &RolloutStatus) -> Others {
        let ctx = self.ctx;
        let stable = ctx.older_stable(status);
        let older = ctx
            .observed
            .replica_sets
            .iter()
            .filter(|rs| rs.hash != ctx.hash && Some(&rs.hash) != status.stable_rs.as_ref())
            .map(|rs| rs.hash.clone())
            .collect();
        Others { stable, older }
    }

    /// The weight the step at `idx` wants: the last setWeight up to it; all of it after the last.
    pub fn weight_at(&self, idx: i32) -> i32 {
        if idx >= self.n {
            return self.max_weight;
        }
        self.steps[..=idx as usize].iter().rev().find_map(|s| s.set_weight).unwrap_or(0)
    }

    /// The canary pods a setCanaryScale up to `idx` asks for, if one does.
    fn canary_scale_at(&self, idx: i32) -> Option<i32> {
        if idx >= self.n {
            return None;
        }
        let scale = self.steps[..=idx as usize].iter().rev().find_map(|s| s.set_canary_scale.as_ref())?;
        if scale.match_traffic_weight == Some(true) {
            return None;
        }
        scale.replicas.or_else(|| scale.weight.map(|w| replicas_for_weight(w, self.ctx.replicas, 100)))
    }

    /// Whether a setCanaryScale step sizes the canary at step `idx`.
    pub fn sized_by_step(&self, idx: i32) -> bool {
        self.canary_scale_at(idx).is_some()
    }

    /// The canary pods with a router at step `idx` wanting `weight`: as setCanaryScale says (which
    /// may be more than spec.replicas, as in Argo), or enough for the weight.
    pub fn routed_canary(&self, idx: i32, weight: i32) -> i32 {
        let r = self.ctx.replicas;
        let count = self.canary_scale_at(idx).unwrap_or_else(|| replicas_for_weight(weight, r, self.max_weight).min(r));
        at_least_min_pods(count, self.spec.min_pods_per_replica_set, r)
    }

    /// The (canary, stable) pods that approximate `weight` without a router.
    pub fn basic_desired(&self, weight: i32, has_stable: bool) -> (i32, i32) {
        let r = self.ctx.replicas;
        if !has_stable { (r, 0) } else { approximate_weighted_counts(r, weight, 100, self.surge) }
    }

    /// Spec counts of (canary, stable, older) without a router, moving from the observed counts
    /// toward `desired` within maxSurge and maxUnavailable; frozen while the user pauses.
    pub fn basic_targets(&self, desired: (i32, i32), others: &Others) -> (i32, i32, Vec<i32>) {
        let ctx = self.ctx;
        let old_counts: Vec<Counts> = others.older.iter().map(|h| ctx.counts(h)).collect();
        let stable_counts = others.stable.as_deref().map(|h| ctx.counts(h));
        let new_counts = ctx.counts(&ctx.hash);
        if ctx.user_paused() {
            return (
                new_counts.spec,
                stable_counts.map(|c| c.spec).unwrap_or(0),
                old_counts.iter().map(|c| c.spec).collect(),
            );
        }
        let r = ctx.replicas;
        basic_canary_targets(r, desired, self.surge, self.unavailable, new_counts, stable_counts, &old_counts)
    }

    /// Whether the step at `idx` has its pods, judged on the spec counts this plan gives the
    /// ReplicaSets if it stays at the step (so that planning again does not find the step done)
    /// and on the pods observed.
    pub fn pods_ready_for(&self, idx: i32, others: &Others) -> bool {
        let ctx = self.ctx;
        let w = self.weight_at(idx);
        let new_counts = ctx.counts(&ctx.hash);
        if self.routed {
            let want = self.routed_canary(idx, w);
            // The stable (which dynamicStableScale may have shrunk) must carry its share before a
            // lower weight is done.
            let stable_share = replicas_for_weight(self.max_weight - w, ctx.replicas, self.max_weight);
            let stable_ok = others.stable.as_deref().is_none_or(|h| ctx.counts(h).kept_available() >= stable_share);
            return new_counts.available_once_scaled_to(want) >= self.progress_needed(want) && stable_ok;
        }
        let pods = |h: &str| ctx.rs(h).map(|rs| rs.replicas);
        let (dc, ds) = self.basic_desired(w, others.stable.is_some());
        let (canary_t, stable_t, old_t) = self.basic_targets((dc, ds), others);
        let stable_ok = others.stable.as_deref().is_none_or(|h| stable_t == ds && pods(h).is_none_or(|p| p == ds));
        let old_ok = old_t.iter().all(|&t| t == 0) && others.older.iter().all(|h| pods(h).is_none_or(|p| p == 0));
        let canary_ok = canary_t == dc
            && Counts { spec: canary_t, available: new_counts.available }.kept_available() >= self.progress_needed(dc);
        canary_ok && stable_ok && old_ok
    }

    /// How many of `want` canary pods must be available for a step's pod count to count as
    /// reached: all of them, or as `replicaProgressThreshold` says, never none while any is
    /// wanted. With a router the weight still follows the available pods (`weight_now`): the
    /// threshold lets the steps go on, not traffic go to pods that are not there.
    pub fn progress_needed(&self, want: i32) -> i32 {
        let Some(threshold) = &self.spec.replica_progress_threshold else { return want };
        if want <= 0 {
            return want;
        }
        let needed = match threshold.threshold_type {
            ReplicaProgressThresholdType::Pods => threshold.value,
            ReplicaProgressThresholdType::Percent => ((i64::from(want) * i64::from(threshold.value) + 99) / 100) as i32,
        };
        needed.clamp(1, want)
    }

    /// Whether the router carries weight `w`. When the controller reads weights back: set by an
    /// earlier plan and read back in effect. Otherwise: set by an earlier plan and not reported
    /// wrong, or set by this very plan, which it may be once the canary's available pods carry
    /// it; deciding it here keeps the plan idempotent: a step never waits one more reconcile for
    /// a weight nobody will confirm.
    pub fn weight_reached(&self, w: i32, pods_carry_it: bool) -> bool {
        let observed = self.ctx.observed;
        let set = self.prev_weight == Some(w);
        if observed.weight_checkable {
            return set && observed.weight_verified == Some(true);
        }
        let verified = observed.weight_verified;
        (set && verified != Some(false)) || (pods_carry_it && verified.is_none())
    }
}
