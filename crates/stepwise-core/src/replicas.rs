//! Replica arithmetic, compatible with Argo Rollouts and the Deployment controller: maxSurge
//! rounds up, maxUnavailable rounds down, both resolving to zero makes maxUnavailable one; the
//! basic canary approximates its weight with pod counts; a traffic-routed canary scales by its
//! weight rounded up.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// An IntOrString of `total`: a plain number, or a percentage (`"25%"`, or `"25"` as Argo
/// Rollouts reads a string), rounded up or down.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Option<i32> {
    match value {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().ok()?;
            let num = pct * i64::from(total);
            let v = if round_up { (num + 99).div_euclid(100) } else { num.div_euclid(100) };
            i32::try_from(v).ok()
        }
    }
}

/// `(maxSurge, maxUnavailable)` for `replicas`, with the defaults of 25% each.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    let default = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&default), replicas, true).unwrap_or(0).max(0);
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&default), replicas, false).unwrap_or(0).max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

fn weight_delta(weight: i32, max_weight: i32, canary: i32, total: i32) -> f64 {
    (f64::from(canary) * f64::from(max_weight) / f64::from(total) - f64::from(weight)).abs()
}

fn tied(weight: i32, max_weight: i32, total: i32) -> bool {
    (i64::from(total) * i64::from(weight) * 2) % (2 * i64::from(max_weight)) == i64::from(max_weight)
}

/// The `(canary, stable)` pod counts that best approximate `weight` out of `max_weight` with
/// `replicas` pods, or one more when surge allows. A weight strictly between 0 and the maximum
/// never gets zero canary pods (unless one pod and no surge), and never all pods.
pub fn approximate_weighted_counts(replicas: i32, weight: i32, max_weight: i32, max_surge: i32) -> (i32, i32) {
    if replicas <= 0 {
        return (0, 0);
    }
    let zero_allowed = weight == max_weight || weight == 0 || (replicas == 1 && max_surge == 0);
    let mut options: Vec<(i32, i32)> = Vec::with_capacity(4);
    let totals: &[i32] = if max_surge > 0 { &[replicas, replicas + 1] } else { &[replicas] };
    for &total in totals {
        let exact = i64::from(total) * i64::from(weight);
        let floor = i32::try_from(exact / i64::from(max_weight)).unwrap_or(total);
        let ceil = i32::try_from((exact + i64::from(max_weight) - 1) / i64::from(max_weight)).unwrap_or(total);
        if ceil < total || zero_allowed {
            options.push((ceil, total));
        }
        if !tied(weight, max_weight, total) && (floor != 0 || zero_allowed) {
            options.push((floor, total));
        }
    }
    let Some(&first) = options.first() else { return (0, replicas) };
    let best = options.iter().skip(1).fold(first, |best, &opt| {
        if weight_delta(weight, max_weight, opt.0, opt.1) < weight_delta(weight, max_weight, best.0, best.1) {
            opt
        } else {
            best
        }
    });
    (best.0, best.1 - best.0)
}

/// Pods of the canary for a traffic weight: rounded up, so the canary has capacity for its share.
pub fn replicas_for_weight(weight: i32, replicas: i32, max_weight: i32) -> i32 {
    let num = i64::from(weight) * i64::from(replicas);
    i32::try_from((num + i64::from(max_weight) - 1) / i64::from(max_weight)).unwrap_or(replicas)
}

/// The highest weight that `available` canary pods can carry.
pub fn weight_supported_by(available: i32, replicas: i32, max_weight: i32) -> i32 {
    if replicas <= 0 {
        return 0;
    }
    let w = i64::from(available.max(0)) * i64::from(max_weight) / i64::from(replicas);
    i32::try_from(w.min(i64::from(max_weight))).unwrap_or(max_weight)
}

/// Raises a non-zero count to at least `min_pods`, capped at `replicas`.
pub fn at_least_min_pods(count: i32, min_pods: Option<i32>, replicas: i32) -> i32 {
    match min_pods {
        Some(m) if count > 0 && count < m => m.min(replicas.max(count)),
        _ => count,
    }
}

/// One ReplicaSet as the basic-canary arithmetic sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// spec.replicas.
    pub spec: i32,
    /// status.availableReplicas, counted only up to spec.
    pub available: i32,
}

impl Counts {
    /// Available pods that will stay (a ReplicaSet never keeps more than its spec).
    pub fn kept_available(self) -> i32 {
        self.available.min(self.spec)
    }

    /// The spec this ReplicaSet may be given now, wanting `target`. One that still reports more
    /// available pods than its spec is scaling down: its surplus pods may already be going, so
    /// it grows only once its status has caught up. (Growing it at once would count those pods
    /// as available after the scale but not before, and no plan may depend on that.)
    pub fn reachable(self, target: i32) -> i32 {
        if target > self.spec && self.available > self.spec { self.spec } else { target }
    }

    /// The available pods that count once this plan has scaled the ReplicaSet towards `target`.
    pub fn available_once_scaled_to(self, target: i32) -> i32 {
        Counts { spec: self.reachable(target), available: self.available }.kept_available()
    }
}

/// Targets for a basic canary (no traffic routing): `(canary, stable, old)` spec counts.
///
/// The rules: available pods stay at least `replicas - max_unavailable`; a ReplicaSet that
/// shrinks loses its unavailable pods first; older ReplicaSets are drained before the stable or
/// canary shrinks; then, within `replicas + max_surge` pods in all, the stable ReplicaSet is
/// scaled up before the canary. Shrinking is decided first so that the room it makes is used in
/// the same plan.
///
/// The targets are a fixed point: computed again from the spec counts they give (with the same
/// pods available) they are the same, so planning again after scaling asks for nothing more.
/// One pass is not enough: a ReplicaSet that grows keeps more of its available pods, and an
/// older one scaled to zero lets the others shrink, which allows more. Passes repeat until
/// nothing moves; each moves every count only toward its desired value (older ones toward
/// zero) and keeps the pods available at least `min(before, replicas - max_unavailable)`, so
/// the passes end (within the total distance to go) and the result keeps the rules.
pub fn basic_canary_targets(
    replicas: i32,
    desired: (i32, i32),
    max_surge: i32,
    max_unavailable: i32,
    canary: Counts,
    stable: Option<Counts>,
    old: &[Counts],
) -> (i32, i32, Vec<i32>) {
    let with_spec = |c: Counts, spec: i32| Counts { spec, ..c };
    let mut targets =
        (canary.spec, stable.map(|s| s.spec).unwrap_or(0), old.iter().map(|c| c.spec).collect::<Vec<_>>());
    let distance = (canary.spec - desired.0).abs()
        + stable.map_or(0, |s| (s.spec - desired.1).abs())
        + old.iter().map(|c| c.spec.max(0)).sum::<i32>();
    for _ in 0..=distance {
        let old_now: Vec<Counts> = old.iter().zip(&targets.2).map(|(c, &t)| with_spec(*c, t)).collect();
        let next = basic_canary_pass(
            replicas,
            desired,
            max_surge,
            max_unavailable,
            with_spec(canary, targets.0),
            stable.map(|s| with_spec(s, targets.1)),
            &old_now,
        );
        if next == targets {
            break;
        }
        targets = next;
    }
    targets
}

/// One pass of [`basic_canary_targets`].
fn basic_canary_pass(
    replicas: i32,
    desired: (i32, i32),
    max_surge: i32,
    max_unavailable: i32,
    canary: Counts,
    stable: Option<Counts>,
    old: &[Counts],
) -> (i32, i32, Vec<i32>) {
    let (desired_canary, desired_stable) = desired;
    let max_total = replicas + max_surge;
    let min_available = replicas - max_unavailable;
    let stable_c = stable.unwrap_or_default();

    // Scale down without going below the minimum of available pods.
    let mut available_total = canary.kept_available() + stable_c.kept_available();
    available_total += old.iter().map(|c| c.kept_available()).sum::<i32>();
    let mut removable = (available_total - min_available).max(0);
    let mut shrink = |count: Counts, floor: i32| -> i32 {
        if count.spec <= floor {
            return count.spec;
        }
        let unavailable = count.spec - count.kept_available();
        let mut target = (count.spec - unavailable).max(floor);
        let take = (target - floor).min(removable);
        target -= take;
        removable -= take;
        target
    };
    let old_t: Vec<i32> = old.iter().map(|c| shrink(*c, 0)).collect();
    let mut canary_t = canary.spec;
    let mut stable_t = stable_c.spec;
    if old_t.iter().all(|&t| t == 0) {
        if canary.spec > desired_canary {
            canary_t = shrink(canary, desired_canary);
        }
        if stable.is_some() && stable_c.spec > desired_stable {
            stable_t = shrink(stable_c, desired_stable);
        }
    }

    // Scale up within the surge budget, stable first.
    let mut budget = (max_total - (canary_t + stable_t + old_t.iter().sum::<i32>())).max(0);
    if stable.is_some() && stable_t < desired_stable {
        let grown = stable_c.reachable(desired_stable.min(stable_t + budget));
        budget -= grown - stable_t;
        stable_t = grown;
    }
    if canary_t < desired_canary {
        canary_t = canary.reachable(desired_canary.min(canary_t + budget));
    }
    (canary_t, stable_t, old_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> IntOrString {
        IntOrString::String(v.into())
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        // (maxSurge, maxUnavailable, replicas) -> (surge, unavailable), worked out by hand.
        type Case = (Option<IntOrString>, Option<IntOrString>, i32, (i32, i32));
        let cases: &[Case] = &[
            (None, None, 4, (1, 1)),
            (None, None, 10, (3, 2)),
            (None, None, 1, (1, 0)),
            (Some(s("1%")), Some(s("1%")), 2, (1, 0)),
            (Some(s("0%")), Some(s("1%")), 2, (0, 1)),
            (Some(IntOrString::Int(0)), Some(IntOrString::Int(0)), 5, (0, 1)),
            (Some(IntOrString::Int(3)), Some(IntOrString::Int(9)), 4, (3, 4)),
            (Some(s("50%")), Some(s("50%")), 5, (3, 2)),
            (Some(s("25")), Some(s("25")), 10, (3, 2)),
            (Some(s("100%")), Some(s("0%")), 3, (3, 0)),
        ];
        for (surge, unavail, r, want) in cases {
            assert_eq!(resolve_fenceposts(surge.as_ref(), unavail.as_ref(), *r), *want, "{surge:?} {unavail:?} R={r}");
        }
    }

    #[test]
    fn approximation_matches_hand_worked_cases() {
        // (replicas, weight, surge) -> (canary, stable)
        let cases = [
            ((10, 10, 1), (1, 9)),
            ((10, 30, 3), (3, 7)),
            ((4, 25, 1), (1, 3)),
            ((4, 50, 1), (2, 2)),
            ((4, 100, 1), (4, 0)),
            ((4, 0, 1), (0, 4)),
            ((1, 5, 1), (1, 1)),
            ((1, 5, 0), (0, 1)),
            ((1, 50, 0), (1, 0)),
            ((2, 10, 0), (1, 1)),
            ((3, 50, 1), (2, 2)),
            ((3, 50, 0), (2, 1)),
            ((5, 20, 0), (1, 4)),
            ((5, 99, 0), (4, 1)),
            ((5, 1, 0), (1, 4)),
            ((0, 50, 1), (0, 0)),
        ];
        for ((r, w, surge), want) in cases {
            assert_eq!(approximate_weighted_counts(r, w, 100, surge), want, "R={r} W={w} S={surge}");
        }
    }

    #[test]
    fn traffic_weight_rounds_canary_pods_up() {
        assert_eq!(replicas_for_weight(10, 4, 100), 1);
        assert_eq!(replicas_for_weight(25, 4, 100), 1);
        assert_eq!(replicas_for_weight(26, 4, 100), 2);
        assert_eq!(replicas_for_weight(100, 4, 100), 4);
        assert_eq!(replicas_for_weight(0, 4, 100), 0);
        assert_eq!(replicas_for_weight(1, 10, 1000), 1);
        assert_eq!(weight_supported_by(1, 4, 100), 25);
        assert_eq!(weight_supported_by(3, 10, 100), 30);
        assert_eq!(at_least_min_pods(1, Some(2), 4), 2);
        assert_eq!(at_least_min_pods(0, Some(2), 4), 0);
        assert_eq!(at_least_min_pods(1, Some(5), 3), 3);
    }

    fn c(spec: i32, available: i32) -> Counts {
        Counts { spec, available }
    }

    #[test]
    fn basic_canary_scales_stable_first_then_canary_within_surge() {
        // R=4, W=25 -> desired (1,3); S=1 U=1; stable 4/4, canary 0: surge one canary pod.
        assert_eq!(basic_canary_targets(4, (1, 3), 1, 1, c(0, 0), Some(c(4, 4)), &[]), (1, 3, vec![]));
        // Once the canary exists but is not available, the stable may still lose one pod (U=1).
        assert_eq!(basic_canary_targets(4, (1, 3), 1, 1, c(1, 0), Some(c(4, 4)), &[]), (1, 3, vec![]));
        // With no unavailability budget the stable waits for the canary.
        assert_eq!(basic_canary_targets(4, (1, 3), 1, 0, c(1, 0), Some(c(4, 4)), &[]), (1, 4, vec![]));
        assert_eq!(basic_canary_targets(4, (1, 3), 1, 0, c(1, 1), Some(c(4, 4)), &[]), (1, 3, vec![]));
    }

    #[test]
    fn basic_canary_worked_examples_from_the_reference() {
        // R=10, W=30, U=0, S=3: the canary surges to 3 and the stable keeps 10.
        assert_eq!(basic_canary_targets(10, (3, 7), 3, 0, c(0, 0), Some(c(10, 10)), &[]), (3, 10, vec![]));
        // R=10, W=30, U=5, S=0: 3 stable pods go and their room goes to the canary at once
        // (Argo Rollouts takes two reconciles: (0,7) then (3,7)).
        assert_eq!(basic_canary_targets(10, (3, 7), 0, 5, c(0, 0), Some(c(10, 10)), &[]), (3, 7, vec![]));
        // R=1, W=5, U=0, S=1 -> (1,1).
        assert_eq!(basic_canary_targets(1, (1, 1), 1, 0, c(0, 0), Some(c(1, 1)), &[]), (1, 1, vec![]));
    }

    #[test]
    fn basic_canary_abort_drains_the_canary_without_dropping_below_minimum() {
        // R=4, S=1, U=1; aborting: desired (0,4); stable 3/3 and canary 2/2: the canary goes
        // (3 stable pods stay available) and the stable grows back into the room.
        assert_eq!(basic_canary_targets(4, (0, 4), 1, 1, c(2, 2), Some(c(3, 3)), &[]), (0, 4, vec![]));
        // Canary pods that are not available go first and do not count.
        assert_eq!(basic_canary_targets(4, (0, 4), 1, 0, c(2, 0), Some(c(3, 3)), &[]), (0, 4, vec![]));
        // With U=1 the 3 stable pods are exactly the minimum; the canary pod may go.
        assert_eq!(basic_canary_targets(4, (0, 4), 0, 1, c(1, 1), Some(c(3, 3)), &[]), (0, 4, vec![]));
        // With U=0 and no surge the available canary pod must stay until the stable grows.
        assert_eq!(basic_canary_targets(4, (0, 4), 0, 0, c(1, 1), Some(c(3, 3)), &[]), (1, 3, vec![]));
    }

    #[test]
    fn older_replica_sets_are_drained_before_stable_or_canary_shrink() {
        // Old 2/2, stable 2/2, canary 0; R=4 S=1 U=1, desired (1,3).
        let (canary, stable, old) = basic_canary_targets(4, (1, 3), 1, 1, c(0, 0), Some(c(2, 2)), &[c(2, 2)]);
        assert_eq!((canary, stable, old), (1, 3, vec![1]));
    }
}
