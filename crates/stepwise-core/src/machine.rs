//! `plan`: from a Rollout, what was observed and the time, to actions, the next status and when
//! to look again.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use stepwise_api::{
    AnalysisPhase, AnalysisRun, CanaryStatus, CanaryStep, PauseCondition, PauseReason, Rollout, RolloutAnalysis,
    RolloutAnalysisRunStatus, RolloutCondition, RolloutPhase, RolloutSpec, RolloutStatus, SetHeaderRoute,
    SetMirrorRoute, TrafficWeights, WeightDestination,
};

use crate::analysis_run::{RunRequest, build_analysis_run};
use crate::condition;
use crate::hash::{steps_hash, version_hash};
use crate::observed::{AnalysisKind, Observed, ObservedAnalysisRun, ObservedReplicaSet};
use crate::replicas::{
    Counts, approximate_weighted_counts, at_least_min_pods, basic_canary_targets, replicas_for_weight,
    resolve_fenceposts, weight_supported_by,
};
use crate::time::{add_seconds, seconds_between};

/// Whether an event reports normal progress or something a person should look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Normal progress.
    Normal,
    /// Something went wrong.
    Warning,
}

/// One thing the controller must do. The plan lists them in a safe order: pods are added before
/// traffic moves to them, and traffic moves away before pods are removed.
// A plan holds a handful of actions, so the size of CreateReplicaSet's pod template costs
// nothing that matters; boxing it would change the type the controller matches on.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create a ReplicaSet for a new version, owned by the Rollout.
    CreateReplicaSet {
        /// `<rollout>-<hash>`.
        name: String,
        /// The pod template hash.
        hash: String,
        /// Revision number.
        revision: i64,
        /// Initial spec.replicas.
        replicas: i32,
        /// The pod template, with the hash label.
        template: PodTemplateSpec,
        /// The selector, with the hash label.
        selector: LabelSelector,
        /// minReadySeconds of the Rollout.
        min_ready_seconds: i32,
    },
    /// Change a ReplicaSet's spec.replicas.
    ScaleReplicaSet {
        /// Name of the ReplicaSet.
        name: String,
        /// New spec.replicas.
        replicas: i32,
    },
    /// Change the revision annotation of a ReplicaSet (an old template became new again).
    SetRevision {
        /// Name of the ReplicaSet.
        name: String,
        /// New revision.
        revision: i64,
    },
    /// Set or clear the time at which a ReplicaSet is scaled to zero.
    SetScaleDownDeadline {
        /// Name of the ReplicaSet.
        name: String,
        /// The deadline, or none to clear it.
        deadline: Option<Time>,
    },
    /// Delete an old ReplicaSet beyond the revision history limit.
    DeleteReplicaSet {
        /// Name of the ReplicaSet.
        name: String,
    },
    /// Point a Service's selector at a version.
    SetServiceSelector {
        /// Name of the Service.
        service: String,
        /// Pod template hash to select.
        hash: String,
    },
    /// Set the canary's traffic weight through the router.
    SetTrafficWeight {
        /// Weight of the canary, out of maxTrafficWeight.
        canary_weight: i32,
        /// Pod template hash of the canary.
        canary_hash: String,
        /// Pod template hash of the stable version.
        stable_hash: Option<String>,
    },
    /// Create or remove a header route.
    SetHeaderRoute(SetHeaderRoute),
    /// Create or remove a mirror route.
    SetMirrorRoute(SetMirrorRoute),
    /// Remove every header and mirror route.
    RemoveManagedRoutes,
    /// Start an AnalysisRun.
    CreateAnalysisRun {
        /// What it judges.
        kind: AnalysisKind,
        /// The run, complete: metrics, arguments, labels and owner.
        run: Box<AnalysisRun>,
    },
    /// Ask an AnalysisRun to stop measuring.
    TerminateAnalysisRun {
        /// Name of the run.
        name: String,
    },
    /// Replace pods of a version created before a time (spec.restartAt).
    RestartPods {
        /// Pod template hash of the pods.
        hash: String,
        /// Pods created before this are replaced.
        before: Time,
        /// At most this many at once.
        max: i32,
    },
    /// Record a Kubernetes Event on the Rollout.
    Event {
        /// Normal or Warning.
        type_: EventType,
        /// CamelCase reason.
        reason: String,
        /// What happened.
        message: String,
    },
}

/// What `plan` decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Actions, in the order they must be carried out.
    pub actions: Vec<Action>,
    /// The status to write once the actions are done.
    pub status: RolloutStatus,
    /// When to plan again even if nothing changes.
    pub requeue_after: Option<StdDuration>,
}

/// Name, namespace and generation of the Rollout being planned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutIdentity {
    /// metadata.name.
    pub name: String,
    /// metadata.generation.
    pub generation: Option<i64>,
}

/// Actions grouped by when they must happen, concatenated at the end.
#[derive(Default)]
struct Actions {
    make_room: Vec<Action>,
    scale_up: Vec<Action>,
    traffic: Vec<Action>,
    scale_down: Vec<Action>,
    other: Vec<Action>,
    events: Vec<Action>,
}

impl Actions {
    fn event(&mut self, type_: EventType, reason: &str, message: impl Into<String>) {
        self.events.push(Action::Event { type_, reason: reason.into(), message: message.into() });
    }

    fn into_vec(self) -> Vec<Action> {
        let mut all = self.make_room;
        all.extend(self.scale_up);
        all.extend(self.traffic);
        all.extend(self.scale_down);
        all.extend(self.other);
        all.extend(self.events);
        all
    }
}

/// Everything derived from the inputs that does not change during planning.
struct Ctx<'a> {
    rollout: &'a Rollout,
    name: &'a str,
    spec: &'a RolloutSpec,
    observed: &'a Observed,
    now: &'a Time,
    replicas: i32,
    hash: String,
    template: PodTemplateSpec,
    selector: LabelSelector,
}

impl Ctx<'_> {
    fn rs(&self, hash: &str) -> Option<&ObservedReplicaSet> {
        self.observed.replica_sets.iter().find(|rs| rs.hash == hash)
    }
    fn new_rs(&self) -> Option<&ObservedReplicaSet> {
        self.rs(&self.hash)
    }
    fn rs_name(&self, hash: &str) -> String {
        self.rs(hash).map(|rs| rs.name.clone()).unwrap_or_else(|| format!("{}-{}", self.name, hash))
    }
    fn counts(&self, hash: &str) -> Counts {
        self.rs(hash).map(|rs| Counts { spec: rs.spec_replicas, available: rs.available }).unwrap_or_default()
    }
    fn max_revision(&self) -> i64 {
        self.observed.replica_sets.iter().map(|rs| rs.revision).max().unwrap_or(0)
    }
    fn run(&self, name: &str) -> Option<&ObservedAnalysisRun> {
        self.observed.analysis_runs.iter().find(|r| r.name == name)
    }
    fn unique_run_name(&self, base: &str) -> String {
        let mut candidate = base.to_string();
        let mut n = 2;
        while self.run(&candidate).is_some() {
            candidate = format!("{base}.{n}");
            n += 1;
        }
        candidate
    }
    fn selector_string(&self, with_hash: Option<&str>) -> String {
        let mut labels: BTreeMap<String, String> = self.selector.match_labels.clone().unwrap_or_default();
        if let Some(h) = with_hash {
            labels.insert(stepwise_api::POD_TEMPLATE_HASH_LABEL.into(), h.into());
        }
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }
}

fn set_condition(status: &mut RolloutStatus, type_: &str, value: &str, reason: &str, message: &str, now: &Time) {
    match status.conditions.iter_mut().find(|c| c.r#type == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = Some(now.clone());
            }
            if c.status != value || c.reason.as_deref() != Some(reason) || c.message.as_deref() != Some(message) {
                c.last_update_time = Some(now.clone());
            }
            c.status = value.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
        }
        None => status.conditions.push(RolloutCondition {
            r#type: type_.into(),
            status: value.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(now.clone()),
            last_update_time: Some(now.clone()),
        }),
    }
}

fn remove_condition(status: &mut RolloutStatus, type_: &str) {
    status.conditions.retain(|c| c.r#type != type_);
}

fn condition<'s>(status: &'s RolloutStatus, type_: &str) -> Option<&'s RolloutCondition> {
    status.conditions.iter().find(|c| c.r#type == type_)
}

fn describe_step(step: &CanaryStep) -> String {
    if let Some(w) = step.set_weight {
        format!("setWeight {w}")
    } else if let Some(p) = &step.pause {
        match &p.duration {
            Some(d) => format!("pause {d}"),
            None => "pause".into(),
        }
    } else if let Some(s) = &step.set_canary_scale {
        match (s.replicas, s.weight) {
            (Some(r), _) => format!("setCanaryScale {r} pods"),
            (None, Some(w)) => format!("setCanaryScale {w}%"),
            _ => "setCanaryScale matchTrafficWeight".into(),
        }
    } else if let Some(a) = &step.analysis {
        let names: Vec<&str> = a.templates.iter().map(|t| t.template_name.as_str()).collect();
        format!("analysis {}", names.join(","))
    } else if let Some(h) = &step.set_header_route {
        format!("setHeaderRoute {}", h.name)
    } else if let Some(m) = &step.set_mirror_route {
        format!("setMirrorRoute {}", m.name)
    } else {
        "empty step".into()
    }
}

/// The pause length of a step, if it is a timed pause.
fn pause_seconds(step: &CanaryStep) -> Option<Option<f64>> {
    let pause = step.pause.as_ref()?;
    Some(pause.duration.as_ref().map(|d| d.to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0)))
}

/// Checks what the schema cannot: the facts that only the controller has, and fields of objects
/// written before the schema had a rule. The message names the field.
fn validate(rollout: &Rollout, observed: &Observed) -> Result<(PodTemplateSpec, LabelSelector), String> {
    let spec = &rollout.spec;
    let strategies = usize::from(spec.strategy.canary.is_some()) + usize::from(spec.strategy.blue_green.is_some());
    if strategies != 1 {
        return Err("spec.strategy must set exactly one of canary and blueGreen".into());
    }
    if spec.replicas.is_some_and(|r| r < 0) {
        return Err("spec.replicas must not be negative".into());
    }
    let (template, selector) = match (&spec.template, &spec.workload_ref) {
        (Some(_), Some(_)) => return Err("spec.template and spec.workloadRef cannot both be set".into()),
        (Some(t), None) => (t.clone(), spec.selector.clone()),
        (None, Some(w)) => match &observed.workload {
            Some((t, sel)) => (t.clone(), spec.selector.clone().or_else(|| sel.clone())),
            None => return Err(format!("spec.workloadRef: {} {} not found", w.kind, w.name)),
        },
        (None, None) => return Err("spec.template is required unless spec.workloadRef is set".into()),
    };
    let selector = selector.ok_or("spec.selector is required")?;
    let match_labels = selector.match_labels.clone().unwrap_or_default();
    if match_labels.is_empty() && selector.match_expressions.as_ref().is_none_or(Vec::is_empty) {
        return Err("spec.selector must not be empty".into());
    }
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    for (k, v) in &match_labels {
        if labels.get(k) != Some(v) {
            return Err(format!("spec.selector.matchLabels {k}={v} does not match spec.template.metadata.labels"));
        }
    }
    if let (Some(deadline), Some(min_ready)) = (spec.progress_deadline_seconds, spec.min_ready_seconds)
        && deadline <= min_ready
    {
        return Err("spec.progressDeadlineSeconds must be greater than spec.minReadySeconds".into());
    }
    if let Some(canary) = &spec.strategy.canary {
        let steps = canary.steps.as_deref().unwrap_or_default();
        let max_weight = canary.traffic_routing.as_ref().and_then(|t| t.max_traffic_weight).unwrap_or(100);
        for (i, step) in steps.iter().enumerate() {
            let field = format!("spec.strategy.canary.steps[{i}]");
            let kinds = [
                step.set_weight.is_some(),
                step.pause.is_some(),
                step.set_canary_scale.is_some(),
                step.analysis.is_some(),
                step.set_header_route.is_some(),
                step.set_mirror_route.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(format!(
                    "{field} must set exactly one of setWeight, pause, setCanaryScale, analysis, setHeaderRoute and setMirrorRoute"
                ));
            }
            if let Some(w) = step.set_weight
                && !(0..=max_weight).contains(&w)
            {
                return Err(format!("{field}.setWeight {w} must be between 0 and {max_weight}"));
            }
            if let Some(d) = step.pause.as_ref().and_then(|p| p.duration.as_ref())
                && let Err(e) = d.to_std()
            {
                return Err(format!("{field}.pause.duration: {e}"));
            }
            if step.analysis.as_ref().is_some_and(|a| a.templates.is_empty()) {
                return Err(format!("{field}.analysis.templates must name at least one template"));
            }
            let needs_router =
                step.set_canary_scale.is_some() || step.set_header_route.is_some() || step.set_mirror_route.is_some();
            if needs_router && canary.traffic_routing.is_none() {
                return Err(format!("{field} needs spec.strategy.canary.trafficRouting"));
            }
        }
        if let (Some(c), Some(s)) = (&canary.canary_service, &canary.stable_service)
            && c == s
        {
            return Err("spec.strategy.canary.canaryService must differ from stableService".into());
        }
        if canary.traffic_routing.is_some() && (canary.canary_service.is_none() || canary.stable_service.is_none()) {
            return Err("spec.strategy.canary.trafficRouting needs canaryService and stableService".into());
        }
        let status = rollout.status.clone().unwrap_or_default();
        if let Some(idx) = status.current_step_index
            && status.current_step_hash.as_deref() == Some(steps_hash(steps).as_str())
            && (idx < 0 || idx as usize > steps.len())
        {
            return Err(format!(
                "status.currentStepIndex {idx} is outside spec.strategy.canary.steps, which has {} steps",
                steps.len()
            ));
        }
        for (field, svc) in [("canaryService", &canary.canary_service), ("stableService", &canary.stable_service)] {
            if let Some(svc) = svc
                && !observed.services.contains_key(svc)
            {
                return Err(format!("spec.strategy.canary.{field}: Service {svc} not found"));
            }
        }
    }
    validate_fenceposts(spec)?;
    validate_routers(spec, observed)?;
    validate_analyses(rollout, observed)?;
    if let Some(bg) = &spec.strategy.blue_green {
        if bg.preview_service.as_deref() == Some(bg.active_service.as_str()) {
            return Err("spec.strategy.blueGreen.previewService must differ from activeService".into());
        }
        for (field, svc) in
            [("activeService", Some(&bg.active_service)), ("previewService", bg.preview_service.as_ref())]
        {
            if let Some(svc) = svc
                && !observed.services.contains_key(svc)
            {
                return Err(format!("spec.strategy.blueGreen.{field}: Service {svc} not found"));
            }
        }
    }
    Ok((template, selector))
}

/// maxSurge and maxUnavailable that are neither a number nor a percentage: the schema cannot
/// always tell (a string of digits is a percentage to Argo), so core refuses what it cannot read.
fn validate_fenceposts(spec: &RolloutSpec) -> Result<(), String> {
    let canary = spec.strategy.canary.as_ref();
    let bg = spec.strategy.blue_green.as_ref();
    let fields = [
        ("spec.strategy.canary.maxSurge", canary.and_then(|c| c.max_surge.as_ref())),
        ("spec.strategy.canary.maxUnavailable", canary.and_then(|c| c.max_unavailable.as_ref())),
        ("spec.strategy.blueGreen.maxUnavailable", bg.and_then(|b| b.max_unavailable.as_ref())),
    ];
    for (field, value) in fields {
        if let Some(v) = value
            && crate::replicas::scaled_value(v, 100, true).is_none_or(|n| n < 0)
        {
            let shown = match v {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n.to_string(),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => format!("{s:?}"),
            };
            return Err(format!(
                "{field} {shown} must be a non-negative number of pods or a percentage such as \"25%\""
            ));
        }
    }
    Ok(())
}

/// The routers a Rollout names, by their field under trafficRouting.
fn named_routers(spec: &RolloutSpec) -> Vec<String> {
    let Some(routing) = spec.strategy.canary.as_ref().and_then(|c| c.traffic_routing.as_ref()) else {
        return Vec::new();
    };
    let mut kinds: Vec<String> = [
        ("istio", routing.istio.is_some()),
        ("nginx", routing.nginx.is_some()),
        ("traefik", routing.traefik.is_some()),
        ("gatewayAPI", routing.gateway_api.is_some()),
    ]
    .into_iter()
    .filter(|(_, named)| *named)
    .map(|(kind, _)| kind.to_string())
    .collect();
    kinds.extend(routing.plugins.iter().flat_map(|p| p.keys()).map(|k| format!("plugins.{k}")));
    kinds
}

/// A Rollout that names a router this build cannot drive is refused before anything moves: it
/// would otherwise shift pods while no traffic follows them.
fn validate_routers(spec: &RolloutSpec, observed: &Observed) -> Result<(), String> {
    let named = named_routers(spec);
    if spec.strategy.canary.as_ref().is_some_and(|c| c.traffic_routing.is_some()) && named.is_empty() {
        return Err("spec.strategy.canary.trafficRouting must name a router".into());
    }
    for kind in named {
        if !observed.router_kinds.contains(&kind) {
            return Err(format!(
                "spec.strategy.canary.trafficRouting.{kind}: the {kind} router is not available in this build of stepwise"
            ));
        }
    }
    Ok(())
}

/// Every analysis the Rollout may start, with the field where it sits.
fn analyses(spec: &RolloutSpec) -> Vec<(String, &RolloutAnalysis)> {
    let mut all = Vec::new();
    if let Some(canary) = &spec.strategy.canary {
        if let Some(bg) = &canary.analysis {
            all.push(("spec.strategy.canary.analysis".to_string(), &bg.analysis));
        }
        for (i, step) in canary.steps.iter().flatten().enumerate() {
            if let Some(a) = &step.analysis {
                all.push((format!("spec.strategy.canary.steps[{i}].analysis"), a));
            }
        }
    }
    if let Some(bg) = &spec.strategy.blue_green {
        if let Some(a) = &bg.pre_promotion_analysis {
            all.push(("spec.strategy.blueGreen.prePromotionAnalysis".to_string(), a));
        }
        if let Some(a) = &bg.post_promotion_analysis {
            all.push(("spec.strategy.blueGreen.postPromotionAnalysis".to_string(), a));
        }
    }
    all
}

/// Each analysis can be turned into a run: its templates exist and combine, its arguments have
/// values. Checked on every plan, as Argo does, so that a missing template is reported when the
/// Rollout is applied rather than when the step is reached.
fn validate_analyses(rollout: &Rollout, observed: &Observed) -> Result<(), String> {
    for (field, analysis) in analyses(&rollout.spec) {
        if analysis.templates.is_empty() {
            return Err(format!("{field}.templates must name at least one template"));
        }
        let request = RunRequest { name: "validate", kind: AnalysisKind::Background, hash: "validate", revision: 1 };
        build_analysis_run(rollout, observed, analysis, &request).map_err(|e| format!("{field}: {e}"))?;
    }
    Ok(())
}

/// Decides what to do for one Rollout. Pure: the same inputs give the same plan.
pub fn plan(rollout: &Rollout, observed: &Observed, now: &Time) -> Plan {
    let prev = rollout.status.clone().unwrap_or_default();
    let name = rollout.metadata.name.clone().unwrap_or_default();
    let mut status = prev.clone();
    status.observed_generation = rollout.metadata.generation;
    let mut acts = Actions::default();

    let (template, selector) = match validate(rollout, observed) {
        Ok(v) => v,
        Err(message) => {
            set_condition(&mut status, condition::INVALID_SPEC, "True", "InvalidSpec", &message, now);
            status.phase = Some(RolloutPhase::Degraded);
            status.message = Some(format!("InvalidSpec: {message}"));
            if condition(&prev, condition::INVALID_SPEC).and_then(|c| c.message.as_deref()) != Some(message.as_str()) {
                acts.event(EventType::Warning, "InvalidSpec", message);
            }
            return Plan { actions: acts.into_vec(), status, requeue_after: None };
        }
    };
    if condition(&prev, condition::INVALID_SPEC).is_some() {
        remove_condition(&mut status, condition::INVALID_SPEC);
    }
    let ctx = Ctx {
        rollout,
        name: &name,
        spec: &rollout.spec,
        observed,
        now,
        replicas: rollout.spec.replicas.unwrap_or(stepwise_api::DEFAULT_REPLICAS),
        hash: version_hash(&template, observed.replica_sets.iter().map(|rs| (rs.hash.as_str(), &rs.template))),
        template,
        selector,
    };
    let mut requeue: Vec<f64> = Vec::new();

    start_new_version_if_needed(&ctx, &prev, &mut status, &mut acts);
    handle_abort_and_retry(&ctx, &mut status, &mut acts);
    count_replicas(&ctx, &mut status);
    check_progress_deadline(&ctx, &prev, &mut status, &mut acts, &mut requeue);

    if let Some(canary) = &rollout.spec.strategy.canary {
        plan_canary(&ctx, canary, &prev, &mut status, &mut acts, &mut requeue);
    } else if let Some(bg) = &rollout.spec.strategy.blue_green {
        plan_blue_green(&ctx, bg, &prev, &mut status, &mut acts, &mut requeue);
    }

    report_scale_selector(&ctx, &acts, &mut status);
    plan_restart(&ctx, &mut status, &mut acts, &mut requeue);
    trim_revision_history(&ctx, &status, &mut acts);
    summarize(&ctx, &prev, &mut status, &mut acts);

    let requeue_after = requeue
        .into_iter()
        .filter(|s| s.is_finite())
        .map(|s| s.max(0.0) + 0.5)
        .reduce(f64::min)
        .map(StdDuration::from_secs_f64);
    Plan { actions: acts.into_vec(), status, requeue_after }
}

/// A new pod template (or the first reconcile): reset the step state, skip the steps on the
/// first deploy and on a return to the stable template, and make sure the ReplicaSet exists with
/// the newest revision.
fn start_new_version_if_needed(ctx: &Ctx, prev: &RolloutStatus, status: &mut RolloutStatus, acts: &mut Actions) {
    let steps = ctx.spec.strategy.canary.as_ref().and_then(|c| c.steps.as_deref()).unwrap_or_default();
    let n = steps.len() as i32;
    let steps_h = steps_hash(steps);
    if prev.current_pod_hash.as_deref() != Some(ctx.hash.as_str()) {
        status.pause_conditions.clear();
        status.controller_pause = None;
        status.abort = None;
        status.aborted_at = None;
        status.promote_full = None;
        status.canary = status.canary.take().map(|c| CanaryStatus { weights: c.weights, ..Default::default() });
        if let Some(bg) = status.blue_green.as_mut() {
            bg.pre_promotion_analysis_run_status = None;
            bg.post_promotion_analysis_run_status = None;
            bg.scale_up_preview_check_point = None;
        }
        status.current_pod_hash = Some(ctx.hash.clone());
        status.current_step_hash = Some(steps_h);
        let first_deploy = prev.stable_rs.is_none();
        if first_deploy {
            status.stable_rs = Some(ctx.hash.clone());
        }
        let back_to_stable = status.stable_rs.as_deref() == Some(ctx.hash.as_str());
        status.current_step_index =
            if ctx.spec.strategy.canary.is_some() { Some(if back_to_stable { n } else { 0 }) } else { None };
        if first_deploy {
            acts.event(
                EventType::Normal,
                "RolloutCompleted",
                format!("Initial deploy of revision with hash {}", ctx.hash),
            );
        } else if back_to_stable {
            acts.event(EventType::Normal, "SkipSteps", "Rollback to stable ReplicaSet: steps skipped");
        } else if prev.current_pod_hash.is_some() {
            acts.event(
                EventType::Normal,
                "RolloutUpdated",
                format!("Rollout updated to pod template hash {}", ctx.hash),
            );
        }
    } else if prev.current_step_hash.as_deref() != Some(steps_h.as_str()) && ctx.spec.strategy.canary.is_some() {
        status.current_step_hash = Some(steps_h);
        let promoted = status.stable_rs.as_deref() == Some(ctx.hash.as_str());
        status.current_step_index = Some(if promoted { n } else { 0 });
        status.pause_conditions.clear();
        status.controller_pause = None;
        if !promoted {
            acts.event(EventType::Normal, "StepsChanged", "The steps changed: starting again from step 1");
        }
    }

    // The revision: the newest template always has the highest revision.
    let max_rev = ctx.max_revision();
    let revision = match ctx.new_rs() {
        Some(rs) if rs.revision == max_rev && rs.revision > 0 => rs.revision,
        _ => max_rev + 1,
    };
    status.current_revision = Some(revision);
    match ctx.new_rs() {
        Some(rs) if rs.revision != revision => {
            acts.other.push(Action::SetRevision { name: rs.name.clone(), revision });
        }
        Some(_) => {}
        None => {
            let mut template = ctx.template.clone();
            let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
            meta.labels
                .get_or_insert_with(BTreeMap::new)
                .insert(stepwise_api::POD_TEMPLATE_HASH_LABEL.into(), ctx.hash.clone());
            let mut selector = ctx.selector.clone();
            selector
                .match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(stepwise_api::POD_TEMPLATE_HASH_LABEL.into(), ctx.hash.clone());
            let name = ctx.rs_name(&ctx.hash);
            acts.scale_up.push(Action::CreateReplicaSet {
                name: name.clone(),
                hash: ctx.hash.clone(),
                revision,
                replicas: 0,
                template,
                selector,
                min_ready_seconds: ctx.spec.min_ready_seconds.unwrap_or(0),
            });
            acts.event(
                EventType::Normal,
                "NewReplicaSetCreated",
                format!("Created ReplicaSet {name} (revision {revision})"),
            );
        }
    }
}

/// Stops one run, unless it is done or already stopping (or not in the cache yet).
fn terminate_run(ctx: &Ctx, acts: &mut Actions, name: &str) {
    if ctx.run(name).is_some_and(|run| !run.phase.is_completed() && !run.terminating) {
        acts.other.push(Action::TerminateAnalysisRun { name: name.to_string() });
    }
}

fn terminate_runs(ctx: &Ctx, acts: &mut Actions) {
    for run in &ctx.observed.analysis_runs {
        if !run.phase.is_completed() && !run.terminating {
            acts.other.push(Action::TerminateAnalysisRun { name: run.name.clone() });
        }
    }
}

fn handle_abort_and_retry(ctx: &Ctx, status: &mut RolloutStatus, acts: &mut Actions) {
    let promoted = status.stable_rs.as_deref() == Some(ctx.hash.as_str());
    if status.abort == Some(true) && promoted {
        status.abort = None;
        status.aborted_at = None;
        return;
    }
    if status.abort == Some(true) {
        if status.aborted_at.is_none() {
            status.aborted_at = Some(ctx.now.clone());
            status.pause_conditions.clear();
            status.controller_pause = None;
            status.promote_full = None;
            if ctx.spec.strategy.canary.is_some() {
                status.current_step_index = Some(0);
            }
            // The machine's own aborts set abortedAt with their reason (see `abort`); this one was
            // asked for, and status.message still holds the phase message from before the request.
            let message = "Rollout aborted by request".to_string();
            set_condition(status, condition::PROGRESSING, "False", "RolloutAborted", &message, ctx.now);
            acts.event(EventType::Warning, "RolloutAborted", message);
            acts.other.push(Action::RemoveManagedRoutes);
        }
        terminate_runs(ctx, acts);
    } else if status.aborted_at.is_some() {
        // Retry: abort was cleared after an abort.
        status.aborted_at = None;
        status.abort = None;
        if let Some(c) = status.canary.as_mut() {
            c.current_step_analysis_run_status = None;
            c.current_background_analysis_run_status = None;
        }
        if let Some(bg) = status.blue_green.as_mut() {
            bg.pre_promotion_analysis_run_status = None;
            bg.post_promotion_analysis_run_status = None;
        }
        if ctx.spec.strategy.canary.is_some() {
            status.current_step_index = Some(0);
        }
        set_condition(
            status,
            condition::PROGRESSING,
            "Unknown",
            "RolloutRetry",
            "Retrying Rollout after abort",
            ctx.now,
        );
        acts.event(EventType::Normal, "RolloutRetry", "Retrying Rollout after abort");
    }
}

/// Aborts the rollout from inside the machine (failed analysis, progress deadline).
fn abort(ctx: &Ctx, status: &mut RolloutStatus, acts: &mut Actions, message: String) {
    status.abort = Some(true);
    status.aborted_at = Some(ctx.now.clone());
    status.pause_conditions.clear();
    status.controller_pause = None;
    status.promote_full = None;
    if ctx.spec.strategy.canary.is_some() {
        status.current_step_index = Some(0);
    }
    set_condition(status, condition::PROGRESSING, "False", "RolloutAborted", &message, ctx.now);
    acts.event(EventType::Warning, "RolloutAborted", message);
    acts.other.push(Action::RemoveManagedRoutes);
    terminate_runs(ctx, acts);
}

fn scale(ctx: &Ctx, acts: &mut Actions, hash: &str, target: i32) {
    let Some(rs) = ctx.rs(hash) else {
        // The new ReplicaSet is created by this plan: create it at its first target.
        for a in &mut acts.scale_up {
            if let Action::CreateReplicaSet { hash: h, replicas, .. } = a
                && h == hash
            {
                *replicas = target;
            }
        }
        return;
    };
    let target = Counts { spec: rs.spec_replicas, available: rs.available }.reachable(target);
    if rs.spec_replicas == target {
        return;
    }
    let action = Action::ScaleReplicaSet { name: rs.name.clone(), replicas: target };
    let verb = if target > rs.spec_replicas { "up" } else { "down" };
    let message = format!("Scaled {verb} ReplicaSet {} from {} to {target}", rs.name, rs.spec_replicas);
    if target > rs.spec_replicas {
        acts.scale_up.push(action);
    } else if hash != ctx.hash && ctx.spec.strategy.canary.as_ref().is_some_and(|c| c.traffic_routing.is_none()) {
        // Basic canary: stable and older pods that may go (within maxUnavailable) make room for
        // the scale-ups first; the canary itself only shrinks after its Service moved away.
        acts.make_room.push(action);
    } else {
        acts.scale_down.push(action);
    }
    acts.event(EventType::Normal, "ScalingReplicaSet", message);
}

fn point_service(ctx: &Ctx, acts: &mut Actions, service: Option<&String>, hash: &str) {
    let Some(service) = service else { return };
    if ctx.observed.services.get(service).and_then(|h| h.as_deref()) == Some(hash) {
        return;
    }
    acts.traffic.push(Action::SetServiceSelector { service: service.clone(), hash: hash.into() });
    acts.event(EventType::Normal, "SwitchService", format!("Switched selector of Service {service} to {hash}"));
}

/// What a Service will select once this plan's actions are done.
fn planned_selector(ctx: &Ctx, acts: &Actions, service: &str) -> Option<String> {
    acts.traffic
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::SetServiceSelector { service: s, hash } if s == service => Some(hash.clone()),
            _ => None,
        })
        .or_else(|| ctx.observed.services.get(service).cloned().flatten())
}

/// The spec.replicas of a ReplicaSet once this plan's actions are done.
fn planned_spec(ctx: &Ctx, acts: &Actions, hash: &str) -> i32 {
    let name = ctx.rs_name(hash);
    acts.make_room
        .iter()
        .chain(&acts.scale_up)
        .chain(&acts.scale_down)
        .filter_map(|a| match a {
            Action::ScaleReplicaSet { name: n, replicas } if *n == name => Some(*replicas),
            Action::CreateReplicaSet { hash: h, replicas, .. } if h == hash => Some(*replicas),
            _ => None,
        })
        .next_back()
        .unwrap_or_else(|| ctx.counts(hash).spec)
}

/// Available pods of a ReplicaSet that stay once this plan's actions are done: a ReplicaSet
/// keeps no more pods than its spec. What a plan decides from availability must use this, not
/// the spec observed, or planning again after a scale decides differently.
fn available_after(ctx: &Ctx, acts: &Actions, hash: &str) -> i32 {
    ctx.counts(hash).available.min(planned_spec(ctx, acts, hash))
}

/// Scales a ReplicaSet to zero after a delay: sets the deadline first, then scales once it has
/// passed. `delay` of None keeps it up.
fn scale_down_after(ctx: &Ctx, acts: &mut Actions, requeue: &mut Vec<f64>, hash: &str, delay: Option<i32>) {
    let Some(rs) = ctx.rs(hash) else { return };
    if rs.spec_replicas == 0 {
        return;
    }
    let Some(delay) = delay else { return };
    match &rs.scale_down_deadline {
        None if delay > 0 => {
            acts.other.push(Action::SetScaleDownDeadline {
                name: rs.name.clone(),
                deadline: Some(add_seconds(ctx.now, i64::from(delay))),
            });
            requeue.push(f64::from(delay));
        }
        Some(deadline) if seconds_between(ctx.now, deadline) > 0.0 => requeue.push(seconds_between(ctx.now, deadline)),
        _ => scale(ctx, acts, hash, 0),
    }
}

fn clear_deadline(ctx: &Ctx, acts: &mut Actions, hash: &str) {
    if let Some(rs) = ctx.rs(hash)
        && rs.scale_down_deadline.is_some()
    {
        acts.other.push(Action::SetScaleDownDeadline { name: rs.name.clone(), deadline: None });
    }
}

/// The status of an AnalysisRun this rollout needs: the one already recorded, or a new one.
fn ensure_run(
    ctx: &Ctx,
    acts: &mut Actions,
    recorded: Option<&RolloutAnalysisRunStatus>,
    kind: AnalysisKind,
    analysis: &RolloutAnalysis,
    revision: i64,
) -> RolloutAnalysisRunStatus {
    if let Some(rec) = recorded {
        let observed = ctx.run(&rec.name);
        return match observed {
            Some(run) => run_status(run, rec.accepted),
            // Recorded but not yet in the cache: keep the record rather than start a second run.
            None => rec.clone(),
        };
    }
    // A run this controller created but could not record (its status write lost a conflict, or
    // it crashed in between) is adopted rather than started twice.
    let unrecorded = ctx
        .observed
        .analysis_runs
        .iter()
        .find(|run| run.kind == kind && run.hash == ctx.hash && !run.phase.is_completed() && !run.terminating);
    if let Some(run) = unrecorded {
        return run_status(run, None);
    }
    let base = format!("{}-{}-{}{}", ctx.name, ctx.hash, revision, kind.name_suffix());
    let name = ctx.unique_run_name(&base);
    let request = RunRequest { name: &name, kind, hash: &ctx.hash, revision };
    match build_analysis_run(ctx.rollout, ctx.observed, analysis, &request) {
        Ok(run) => {
            acts.other.push(Action::CreateAnalysisRun { kind, run: Box::new(run) });
            acts.event(EventType::Normal, "AnalysisRunCreated", format!("Started {} analysis {name}", kind.label()));
        }
        // validate() builds every analysis first, so this is not reached; were it reached, the
        // run stays Pending and the message says why.
        Err(e) => acts.event(EventType::Warning, "AnalysisRunNotCreated", format!("{name}: {e}")),
    }
    RolloutAnalysisRunStatus { name, status: AnalysisPhase::Pending, message: None, accepted: None }
}

/// What the Rollout's status records of an observed run.
fn run_status(run: &ObservedAnalysisRun, accepted: Option<bool>) -> RolloutAnalysisRunStatus {
    RolloutAnalysisRunStatus { name: run.name.clone(), status: run.phase, message: run.message.clone(), accepted }
}

fn add_pause(ctx: &Ctx, status: &mut RolloutStatus, acts: &mut Actions, reason: PauseReason, message: String) {
    if !status.pause_conditions.iter().any(|p| p.reason == reason) {
        status.pause_conditions.push(PauseCondition { reason, start_time: ctx.now.clone() });
        status.controller_pause = Some(true);
        acts.event(EventType::Normal, "RolloutPaused", message);
    }
}

fn pause_started(status: &RolloutStatus, reason: PauseReason) -> Option<&Time> {
    status.pause_conditions.iter().find(|p| p.reason == reason).map(|p| &p.start_time)
}

/// A person promoted: every pause condition the controller set is gone while `controllerPause`
/// still says the controller paused. One promote moves past whatever held the rollout.
fn unpausing(status: &RolloutStatus) -> bool {
    status.controller_pause == Some(true) && status.pause_conditions.is_empty()
}

/// Whether the run is Inconclusive and no longer holds the rollout: accepted by an earlier
/// promote, or by this one, when the run was already Inconclusive when the person promoted (so a
/// result that arrives together with a promote meant for something else still pauses).
fn accept_inconclusive(
    run: &mut RolloutAnalysisRunStatus,
    prev: &RolloutStatus,
    seen_before: Option<&RolloutAnalysisRunStatus>,
    status: &mut RolloutStatus,
) -> bool {
    if run.status != AnalysisPhase::Inconclusive {
        return false;
    }
    if run.accepted == Some(true) {
        return true;
    }
    let seen_inconclusive = seen_before.is_some_and(|r| r.name == run.name && r.status == AnalysisPhase::Inconclusive);
    // Judged on the status as the person left it: a step completed earlier in this plan may
    // already have consumed the promote.
    if seen_inconclusive && unpausing(prev) {
        run.accepted = Some(true);
        end_pause(status, PauseReason::InconclusiveAnalysisRun);
        return true;
    }
    false
}

fn held_by_inconclusive_analysis(status: &RolloutStatus) -> bool {
    status.pause_conditions.iter().any(|p| p.reason == PauseReason::InconclusiveAnalysisRun)
}

fn end_pause(status: &mut RolloutStatus, reason: PauseReason) {
    status.pause_conditions.retain(|p| p.reason != reason);
    if status.pause_conditions.is_empty() {
        status.controller_pause = None;
    }
}

fn analysis_verdict(run: &RolloutAnalysisRunStatus, what: &str) -> String {
    match &run.message {
        Some(m) if !m.is_empty() => format!("{what} analysis {} {}: {m}", run.name, run.status),
        _ => format!("{what} analysis {} {}", run.name, run.status),
    }
}

/// How far the current canary step has got.
enum StepProgress {
    Done,
    Waiting,
}

fn plan_canary(
    ctx: &Ctx,
    canary: &stepwise_api::CanaryStrategy,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    acts: &mut Actions,
    requeue: &mut Vec<f64>,
) {
    let steps = canary.steps.as_deref().unwrap_or_default();
    let n = steps.len() as i32;
    let routed = canary.traffic_routing.is_some();
    let max_weight = canary.traffic_routing.as_ref().and_then(|t| t.max_traffic_weight).unwrap_or(100);
    let r = ctx.replicas;
    let (surge, unavailable) = resolve_fenceposts(canary.max_surge.as_ref(), canary.max_unavailable.as_ref(), r);
    let revision = status.current_revision.unwrap_or(1);
    let prev_weight = prev.canary.as_ref().and_then(|c| c.weights.as_ref()).map(|w| w.canary.weight);
    let user_paused = ctx.spec.paused == Some(true);

    // Weight and canary pods wanted by the step at `idx`.
    let weight_at = |idx: i32| -> i32 {
        if idx >= n {
            return max_weight;
        }
        steps[..=idx as usize].iter().rev().find_map(|s| s.set_weight).unwrap_or(0)
    };
    let canary_scale_at = |idx: i32| -> Option<i32> {
        if idx >= n {
            return None;
        }
        for s in steps[..=idx as usize].iter().rev() {
            if let Some(cs) = &s.set_canary_scale {
                if cs.match_traffic_weight == Some(true) {
                    return None;
                }
                return cs.replicas.or_else(|| cs.weight.map(|w| replicas_for_weight(w, r, 100)));
            }
        }
        None
    };
    let stable_hash = status.stable_rs.clone();
    let has_stable = stable_hash.as_deref().is_some_and(|h| h != ctx.hash);
    // ReplicaSets that are neither the new one nor `stable`.
    let older_than = |stable: Option<&String>| -> Vec<String> {
        ctx.observed
            .replica_sets
            .iter()
            .filter(|rs| rs.hash != ctx.hash && Some(&rs.hash) != stable)
            .map(|rs| rs.hash.clone())
            .collect()
    };
    let old_hashes = older_than(stable_hash.as_ref());

    // Desired (canary, stable) pod counts for a step, without routing.
    let basic_desired = |weight: i32| -> (i32, i32) {
        if !has_stable { (r, 0) } else { approximate_weighted_counts(r, weight, 100, surge) }
    };
    let routed_canary = |idx: i32, weight: i32| -> i32 {
        let count = canary_scale_at(idx).unwrap_or_else(|| replicas_for_weight(weight, r, max_weight));
        at_least_min_pods(count.min(r), canary.min_pods_per_replica_set, r)
    };
    // Whether the router carries weight `w`: set by an earlier plan and not reported wrong, or,
    // when the router cannot confirm weights, set by this very plan, which it may be once the
    // canary's available pods carry it. Deciding it here keeps the plan idempotent: a step never
    // waits one more reconcile for a weight nobody will confirm.
    let weight_reached = |w: i32, pods_carry_it: bool| -> bool {
        let set = prev_weight == Some(w) && ctx.observed.weight_verified != Some(false);
        set || (pods_carry_it && ctx.observed.weight_verified.is_none())
    };
    // Spec counts of (canary, stable, older) without routing, for a weight, moving from the
    // observed counts within maxSurge and maxUnavailable; frozen while the user pauses.
    let basic_targets = |desired: (i32, i32), stable: Option<&str>, old: &[String]| -> (i32, i32, Vec<i32>) {
        let old_counts: Vec<Counts> = old.iter().map(|h| ctx.counts(h)).collect();
        let stable_counts = stable.map(|h| ctx.counts(h));
        let new_counts = ctx.counts(&ctx.hash);
        if user_paused {
            (new_counts.spec, stable_counts.map(|c| c.spec).unwrap_or(0), old_counts.iter().map(|c| c.spec).collect())
        } else {
            basic_canary_targets(r, desired, surge, unavailable, new_counts, stable_counts, &old_counts)
        }
    };
    // Whether the step at `idx` has its pods, judged on the spec counts this plan gives the
    // ReplicaSets if it stays at the step (so that planning again does not find the step done)
    // and on the pods observed.
    let at_counts = |idx: i32| -> bool {
        let w = weight_at(idx);
        let available = ctx.counts(&ctx.hash).available;
        let pods = |h: &str| ctx.rs(h).map(|rs| rs.replicas);
        if routed {
            let want = routed_canary(idx, w);
            ctx.counts(&ctx.hash).available_once_scaled_to(want) >= want
        } else {
            let (dc, ds) = basic_desired(w);
            let stable = stable_hash.as_deref().filter(|_| has_stable);
            let (canary_t, stable_t, old_t) = basic_targets((dc, ds), stable, &old_hashes);
            let stable_ok = stable.is_none_or(|h| stable_t == ds && pods(h).is_none_or(|p| p == ds));
            let old_ok = old_t.iter().all(|&t| t == 0) && old_hashes.iter().all(|h| pods(h).is_none_or(|p| p == 0));
            canary_t == dc && Counts { spec: canary_t, available }.kept_available() >= dc && stable_ok && old_ok
        }
    };

    let aborted = status.abort == Some(true);
    let mut promoted = status.stable_rs.as_deref() == Some(ctx.hash.as_str());
    let promote_full = status.promote_full == Some(true) && !aborted && !promoted;
    if promoted {
        // A run that reached the cache only after the promotion stopped the others.
        terminate_runs(ctx, acts);
    }

    // Walk the steps as far as the observations allow.
    let mut idx = status.current_step_index.unwrap_or(0).clamp(0, n);
    if promoted {
        idx = n;
    }
    if promote_full {
        idx = n;
        status.pause_conditions.clear();
        status.controller_pause = None;
    }
    let mut canary_status = status.canary.clone().unwrap_or_default();
    // The weight of a setWeight step this plan completed because its pods carry it: the plan
    // must then set that weight, even if the steps went on to a weight the pods cannot carry yet.
    let mut completed_weight: Option<i32> = None;
    // An inconclusive background analysis holds the steps where they are until a person decides.
    // Its own analysis step is still judged, so that a failure there aborts.
    // So does a background verdict that arrives in this plan: it is acted on after the walk.
    let background_verdict_arrives = canary.analysis.is_some()
        && canary_status.current_background_analysis_run_status.as_ref().is_some_and(|rec| {
            let verdict = |phase: AnalysisPhase| {
                matches!(phase, AnalysisPhase::Inconclusive | AnalysisPhase::Failed | AnalysisPhase::Error)
            };
            !verdict(rec.status) && ctx.run(&rec.name).is_some_and(|run| verdict(run.phase))
        });
    let held = held_by_inconclusive_analysis(status) || background_verdict_arrives;
    while !aborted && !promoted && !promote_full && !user_paused && idx < n {
        let step = &steps[idx as usize];
        if held && step.analysis.is_none() {
            break;
        }
        let progress = if step.set_weight.is_some() || step.set_canary_scale.is_some() {
            let w = weight_at(idx);
            let counts_ok = at_counts(idx);
            let weight_ok = !routed || step.set_weight.is_none() || weight_reached(w, counts_ok);
            if counts_ok && weight_ok { StepProgress::Done } else { StepProgress::Waiting }
        } else if let Some(pause) = pause_seconds(step) {
            if unpausing(status) {
                StepProgress::Done
            } else {
                match (pause, pause_started(status, PauseReason::CanaryPauseStep).cloned()) {
                    (Some(secs), _) if secs <= 0.0 => StepProgress::Done,
                    (Some(secs), Some(start)) => {
                        let left = secs - seconds_between(&start, ctx.now);
                        if left <= 0.0 {
                            StepProgress::Done
                        } else {
                            requeue.push(left);
                            StepProgress::Waiting
                        }
                    }
                    (None, Some(_)) => StepProgress::Waiting,
                    (secs, None) => {
                        let what = format!("Paused at step {}/{n}: {}", idx + 1, describe_step(step));
                        add_pause(ctx, status, acts, PauseReason::CanaryPauseStep, what);
                        if let Some(secs) = secs {
                            requeue.push(secs);
                        }
                        StepProgress::Waiting
                    }
                }
            }
        } else if let Some(analysis) = &step.analysis {
            // A run recorded for another step (the steps were edited, or a person skipped a
            // step) does not judge this one.
            let recorded = canary_status.current_step_analysis_run_status.clone();
            let own = recorded.filter(|rec| ctx.run(&rec.name).is_none_or(|r| r.kind == AnalysisKind::Step(idx)));
            if own.is_none()
                && let Some(stale) = canary_status.current_step_analysis_run_status.take()
            {
                terminate_run(ctx, acts, &stale.name);
            }
            let mut run = ensure_run(ctx, acts, own.as_ref(), AnalysisKind::Step(idx), analysis, revision);
            let seen = prev.canary.as_ref().and_then(|c| c.current_step_analysis_run_status.as_ref());
            let accepted = accept_inconclusive(&mut run, prev, seen, status);
            canary_status.current_step_analysis_run_status = Some(run.clone());
            match run.status {
                AnalysisPhase::Successful => StepProgress::Done,
                AnalysisPhase::Failed | AnalysisPhase::Error => {
                    status.canary = Some(canary_status.clone());
                    abort(ctx, status, acts, analysis_verdict(&run, "Step"));
                    break;
                }
                AnalysisPhase::Inconclusive if accepted => StepProgress::Done,
                AnalysisPhase::Inconclusive => {
                    add_pause(ctx, status, acts, PauseReason::InconclusiveAnalysisRun, analysis_verdict(&run, "Step"));
                    StepProgress::Waiting
                }
                AnalysisPhase::Pending | AnalysisPhase::Running => StepProgress::Waiting,
            }
        } else if let Some(route) = &step.set_header_route {
            acts.traffic.push(Action::SetHeaderRoute(route.clone()));
            StepProgress::Done
        } else if let Some(route) = &step.set_mirror_route {
            acts.traffic.push(Action::SetMirrorRoute(route.clone()));
            StepProgress::Done
        } else {
            StepProgress::Done
        };
        match progress {
            StepProgress::Waiting => break,
            StepProgress::Done if held => break,
            StepProgress::Done => {
                if routed && step.set_weight.is_some() {
                    completed_weight = Some(weight_at(idx));
                }
                end_pause(status, PauseReason::CanaryPauseStep);
                canary_status.current_step_analysis_run_status = None;
                acts.event(
                    EventType::Normal,
                    "RolloutStepCompleted",
                    format!("Rollout step {}/{n} completed ({})", idx + 1, describe_step(step)),
                );
                idx += 1;
            }
        }
    }
    let aborted = status.abort == Some(true);
    if aborted {
        idx = status.current_step_index.unwrap_or(0);
    }
    status.current_step_index = Some(idx);

    // Background analysis: from startingStep until promotion.
    if let Some(bg) = &canary.analysis {
        let starting = bg.starting_step.unwrap_or(0);
        // No run is started for a canary that is promoted in this very plan: nobody would stop it.
        let full = ctx.counts(&ctx.hash);
        let promoting_now = idx >= n && full.spec >= r && full.kept_available() >= r;
        let recorded = canary_status.current_background_analysis_run_status.is_some();
        if !aborted && !promoted && has_stable && idx >= starting && !promote_full && (recorded || !promoting_now) {
            let mut run = ensure_run(
                ctx,
                acts,
                canary_status.current_background_analysis_run_status.as_ref(),
                AnalysisKind::Background,
                &bg.analysis,
                revision,
            );
            match run.status {
                AnalysisPhase::Failed | AnalysisPhase::Error => {
                    canary_status.current_background_analysis_run_status = Some(run.clone());
                    status.canary = Some(canary_status.clone());
                    abort(ctx, status, acts, analysis_verdict(&run, "Background"));
                }
                AnalysisPhase::Inconclusive => {
                    let seen = prev.canary.as_ref().and_then(|c| c.current_background_analysis_run_status.as_ref());
                    if accept_inconclusive(&mut run, prev, seen, status) {
                        // Accepted; while steps remain the canary keeps running: judge it again
                        // with a fresh run.
                        if idx < n {
                            run = ensure_run(ctx, acts, None, AnalysisKind::Background, &bg.analysis, revision);
                        }
                    } else {
                        add_pause(
                            ctx,
                            status,
                            acts,
                            PauseReason::InconclusiveAnalysisRun,
                            analysis_verdict(&run, "Background"),
                        );
                    }
                    canary_status.current_background_analysis_run_status = Some(run);
                }
                _ => canary_status.current_background_analysis_run_status = Some(run),
            }
        }
    }
    let aborted = status.abort == Some(true);
    if aborted {
        idx = status.current_step_index.unwrap_or(0);
    }

    // Promotion: all steps done (or promote full) and the new version fully available.
    let new_counts = ctx.counts(&ctx.hash);
    if !aborted && !promoted && (idx >= n || promote_full) && !user_paused && !held_by_inconclusive_analysis(status) {
        let canary_full = new_counts.spec >= r && new_counts.kept_available() >= r;
        let weight_full = !routed || !has_stable || r == 0 || weight_reached(max_weight, canary_full);
        if canary_full && weight_full {
            let reason = if promote_full {
                "Full promotion requested".to_string()
            } else {
                format!("Completed all {n} canary steps")
            };
            status.stable_rs = Some(ctx.hash.clone());
            status.promote_full = None;
            status.pause_conditions.clear();
            status.controller_pause = None;
            promoted = true;
            idx = n;
            status.current_step_index = Some(n);
            canary_status.current_background_analysis_run_status = None;
            terminate_runs(ctx, acts);
            acts.other.push(Action::RemoveManagedRoutes);
            acts.event(
                EventType::Normal,
                "RolloutCompleted",
                format!("Rollout completed update to revision {revision} ({}): {reason}", ctx.hash),
            );
        }
    }
    // A promotion in this plan makes the previous stable one of the older ReplicaSets now.
    let stable_hash = status.stable_rs.clone();
    let has_stable = stable_hash.as_deref().is_some_and(|h| h != ctx.hash);
    let old_hashes = older_than(stable_hash.as_ref());

    // The weight the canary should have now, never more than its available pods carry.
    let target_weight = if aborted || promoted || !has_stable {
        0
    } else if promote_full {
        prev_weight.unwrap_or(0).max(if idx >= n { max_weight } else { 0 })
    } else {
        weight_at(idx)
    };
    // The canary's pods with routing (without, no weight is set): the step's (setCanaryScale
    // may set fewer than the weight needs), all of them at the end, and on abort they stay until
    // traffic is back on stable.
    let canary_pods = if promoted {
        r
    } else if aborted || !routed {
        new_counts.spec
    } else if idx >= n || promote_full {
        r
    } else {
        routed_canary(idx, target_weight)
    };
    // The weight is judged on the canary pods that stay available once this plan has scaled it.
    let canary_available = new_counts.available_once_scaled_to(canary_pods);
    let needed = if routed && !aborted && !promoted && idx < n && !promote_full {
        canary_pods
    } else {
        replicas_for_weight(target_weight, r, max_weight)
    };
    let supported =
        if canary_available >= needed { target_weight } else { weight_supported_by(canary_available, r, max_weight) };
    let desired_weight = if canary_available == 0 {
        // Never send traffic to a version with no available pod.
        0
    } else if target_weight <= supported || aborted || promoted {
        target_weight
    } else {
        prev_weight.unwrap_or(0).max(completed_weight.unwrap_or(0)).min(supported).min(target_weight)
    };

    // Pod counts.
    if routed {
        let stable_pods = if canary.dynamic_stable_scale == Some(true) && !aborted && !promoted {
            // The stable keeps the pods for the largest share of traffic it may carry once this
            // plan is done: the new weight's share, and the previous weight's share while the
            // router has yet to confirm the change. A router that cannot confirm weights has the
            // new weight once it is set, so the stable shrinks in the same plan, after the
            // traffic moved (scale-downs come after traffic in the plan).
            let lowest = if weight_reached(desired_weight, true) {
                desired_weight
            } else {
                desired_weight.min(prev_weight.unwrap_or(0))
            };
            replicas_for_weight(max_weight - lowest.clamp(0, max_weight), r, max_weight)
        } else {
            r
        };
        let stable_pods = at_least_min_pods(stable_pods, canary.min_pods_per_replica_set, r);
        if !aborted {
            scale(ctx, acts, &ctx.hash, canary_pods);
            clear_deadline(ctx, acts, &ctx.hash);
        }
        if let Some(sh) = stable_hash.as_deref().filter(|_| has_stable) {
            scale(ctx, acts, sh, stable_pods);
            clear_deadline(ctx, acts, sh);
        }
        if aborted && has_stable {
            // Traffic is back on stable (weight 0 in effect: set by an earlier plan, or by this
            // one when the router cannot confirm weights) and stable can carry it: only then may
            // the canary go, after abortScaleDownDelaySeconds.
            let stable_ready = stable_hash.as_deref().is_some_and(|h| available_after(ctx, acts, h) >= r);
            if desired_weight == 0 && weight_reached(0, true) && stable_ready {
                let delay = match canary.abort_scale_down_delay_seconds {
                    Some(0) => None,
                    Some(d) => Some(d),
                    None => Some(stepwise_api::DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS),
                };
                scale_down_after(ctx, acts, requeue, &ctx.hash, delay);
            }
        }
        // Older versions are kept for scaleDownDelaySeconds, as routers need time to propagate.
        // Every older version gets the delay, not only the one that was stable: the cache may
        // not yet show the deadline written a moment ago, and guessing wrong must err on the
        // side of keeping pods, never of removing pods that may still take traffic.
        let delay = if canary.dynamic_stable_scale == Some(true) {
            Some(0)
        } else {
            Some(canary.scale_down_delay_seconds.unwrap_or(stepwise_api::DEFAULT_SCALE_DOWN_DELAY_SECONDS))
        };
        for rs in &ctx.observed.replica_sets {
            if rs.hash == ctx.hash || Some(&rs.hash) == stable_hash.as_ref() {
                continue;
            }
            scale_down_after(ctx, acts, requeue, &rs.hash, delay);
        }
    } else {
        let weight = if aborted {
            0
        } else if promoted || idx >= n || promote_full {
            100
        } else {
            target_weight
        };
        let stable = stable_hash.as_deref().filter(|_| has_stable);
        let mut desired = basic_desired(weight);
        let mut targets = basic_targets(desired, stable, &old_hashes);
        // On abort the canary keeps its pods until the canary Service selects the stable pods,
        // which it does (below) once the stable has available pods at its new spec. Holding
        // the canary leaves the stable no more room, so the answer stays the same.
        if aborted && canary.canary_service.is_some() {
            let service_on_stable = stable.is_some_and(|h| {
                ctx.observed
                    .services
                    .get(canary.canary_service.as_deref().unwrap_or_default())
                    .cloned()
                    .flatten()
                    .as_deref()
                    == Some(h)
                    || Counts { spec: targets.1, available: ctx.counts(h).available }.kept_available() > 0
            });
            if !service_on_stable {
                desired.0 = desired.0.max(new_counts.spec);
                targets = basic_targets(desired, stable, &old_hashes);
            }
        }
        let (canary_t, stable_t, old_t) = targets;
        scale(ctx, acts, &ctx.hash, canary_t);
        if let Some(sh) = stable_hash.as_deref().filter(|_| has_stable) {
            scale(ctx, acts, sh, stable_t);
        }
        for (h, t) in old_hashes.iter().zip(old_t) {
            scale(ctx, acts, h, t);
        }
    }

    // Services: stable to the stable pods, canary to the new pods (to stable on abort), each only
    // once the pods behind it are available.
    if let Some(sh) = stable_hash.as_deref()
        && available_after(ctx, acts, sh) > 0
    {
        point_service(ctx, acts, canary.stable_service.as_ref(), sh);
    }
    let canary_target = if aborted { stable_hash.clone() } else { Some(ctx.hash.clone()) };
    if let Some(ct) = canary_target
        && available_after(ctx, acts, &ct) > 0
    {
        point_service(ctx, acts, canary.canary_service.as_ref(), &ct);
    }

    // Traffic weight.
    if routed {
        if prev_weight != Some(desired_weight) {
            acts.traffic.push(Action::SetTrafficWeight {
                canary_weight: desired_weight,
                canary_hash: ctx.hash.clone(),
                stable_hash: stable_hash.clone(),
            });
            acts.event(
                EventType::Normal,
                "TrafficWeightUpdated",
                format!("Traffic weight updated from {} to {desired_weight}", prev_weight.unwrap_or(0)),
            );
        }
        canary_status.weights = Some(TrafficWeights {
            canary: WeightDestination {
                weight: desired_weight,
                pod_template_hash: Some(ctx.hash.clone()),
                service_name: canary.canary_service.clone(),
            },
            stable: WeightDestination {
                weight: max_weight - desired_weight,
                pod_template_hash: stable_hash.clone(),
                service_name: canary.stable_service.clone(),
            },
            verified: if prev_weight == Some(desired_weight) { ctx.observed.weight_verified } else { None },
        });
    }
    status.canary = if canary_status == CanaryStatus::default() { None } else { Some(canary_status) };
    if aborted {
        status.current_step_index = Some(idx);
    }
}

/// The new blue-green ReplicaSet as this plan leaves it.
struct BlueGreenNew {
    /// The size it is to have: the preview size until the switch is under way.
    target: i32,
    /// Its available pods at the spec this plan gives it (it keeps no more pods than that).
    available: i32,
    /// Whether it has all its pods at that size. Judged on the spec this plan gives it, so that
    /// planning again finds the same. With no pods wanted (previewReplicaCount 0, or no
    /// replicas) it is ready at once: waiting for pods that never come would wait for ever.
    ready: bool,
}

/// Whether the active Service selects the new version: as observed, or as this controller last
/// wrote it (the status is written only after the Service was), since the Service cache may not
/// have caught up yet and the switch must not be asked for twice.
fn active_switched(ctx: &Ctx, bg: &stepwise_api::BlueGreenStrategy, status: &RolloutStatus) -> bool {
    let observed = ctx.observed.services.get(&bg.active_service).and_then(|h| h.as_deref());
    let written = status.blue_green.as_ref().and_then(|b| b.active_selector.as_deref());
    observed == Some(ctx.hash.as_str()) || (written == Some(ctx.hash.as_str()) && status.abort != Some(true))
}

fn blue_green_new(ctx: &Ctx, bg: &stepwise_api::BlueGreenStrategy, status: &RolloutStatus) -> BlueGreenNew {
    let r = ctx.replicas;
    let aborted = status.abort == Some(true);
    let promoted = status.stable_rs.as_deref() == Some(ctx.hash.as_str());
    let has_stable = status.stable_rs.as_deref().is_some_and(|h| h != ctx.hash);
    let promote_full = status.promote_full == Some(true) && !aborted && !promoted;
    let switched = active_switched(ctx, bg, status);
    let check_point = status.blue_green.as_ref().and_then(|b| b.scale_up_preview_check_point) == Some(true);
    let counts = ctx.counts(&ctx.hash);
    let target = if aborted {
        counts.spec
    } else if promoted || switched || promote_full || check_point || !has_stable {
        r
    } else {
        bg.preview_replica_count.unwrap_or(r).min(r)
    };
    let spec = if ctx.spec.paused == Some(true) || aborted { counts.spec } else { counts.reachable(target) };
    let available = Counts { spec, available: counts.available }.kept_available();
    BlueGreenNew { target, available, ready: available >= target && spec == target }
}

fn plan_blue_green(
    ctx: &Ctx,
    bg: &stepwise_api::BlueGreenStrategy,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    acts: &mut Actions,
    requeue: &mut Vec<f64>,
) {
    let r = ctx.replicas;
    let revision = status.current_revision.unwrap_or(1);
    let mut bgs = status.blue_green.clone().unwrap_or_default();
    let aborted = status.abort == Some(true);
    let user_paused = ctx.spec.paused == Some(true);
    let stable_hash = status.stable_rs.clone();
    let promoted = stable_hash.as_deref() == Some(ctx.hash.as_str());
    let promote_full = status.promote_full == Some(true) && !aborted && !promoted;
    let switched = active_switched(ctx, bg, status);
    if promoted {
        // A run that reached the cache only after the promotion stopped the others.
        terminate_runs(ctx, acts);
    }
    let has_stable = stable_hash.as_deref().is_some_and(|h| h != ctx.hash);

    let BlueGreenNew { target: new_target, available: new_available, ready: new_ready } =
        blue_green_new(ctx, bg, status);

    // The new ReplicaSet is scaled once, below, to the preview size or, once the gate opens, to
    // full size.
    let mut new_final = new_target;
    let mut switch_now = false;
    if aborted {
        if let Some(sh) = stable_hash.as_deref().filter(|_| has_stable) {
            point_service(ctx, acts, Some(&bg.active_service), sh);
            bgs.active_selector = Some(sh.to_string());
        }
    } else if !has_stable || promoted {
        switch_now = new_available >= r.min(1).max(if promoted { 0 } else { r });
    } else if !user_paused && new_ready {
        // Pre-promotion analysis, then the pause, then scale the preview to full size.
        let mut gate_open = true;
        // A promote that accepted an inconclusive analysis also ends the pause: one promote, one "go on".
        let mut analysis_accepted = false;
        if let Some(analysis) = bg.pre_promotion_analysis.as_ref().filter(|_| !promote_full && !switched) {
            let mut run = ensure_run(
                ctx,
                acts,
                bgs.pre_promotion_analysis_run_status.as_ref(),
                AnalysisKind::PrePromotion,
                analysis,
                revision,
            );
            let seen = prev.blue_green.as_ref().and_then(|b| b.pre_promotion_analysis_run_status.as_ref());
            let accepted = accept_inconclusive(&mut run, prev, seen, status);
            analysis_accepted = accepted;
            bgs.pre_promotion_analysis_run_status = Some(run.clone());
            match run.status {
                AnalysisPhase::Successful => {}
                AnalysisPhase::Failed | AnalysisPhase::Error => {
                    status.blue_green = Some(bgs.clone());
                    abort(ctx, status, acts, analysis_verdict(&run, "Pre-promotion"));
                    return plan_blue_green(ctx, bg, prev, status, acts, requeue);
                }
                AnalysisPhase::Inconclusive => {
                    if !accepted {
                        add_pause(
                            ctx,
                            status,
                            acts,
                            PauseReason::InconclusiveAnalysisRun,
                            analysis_verdict(&run, "Pre-promotion"),
                        );
                        gate_open = false;
                    }
                }
                AnalysisPhase::Pending | AnalysisPhase::Running => gate_open = false,
            }
        }
        let auto = bg.auto_promotion_enabled.unwrap_or(true);
        let auto_secs = bg.auto_promotion_seconds.unwrap_or(0);
        if gate_open
            && !promote_full
            && !switched
            && bgs.scale_up_preview_check_point != Some(true)
            && (!auto || auto_secs > 0)
        {
            if unpausing(status) || analysis_accepted {
                end_pause(status, PauseReason::BlueGreenPause);
            } else {
                match pause_started(status, PauseReason::BlueGreenPause).cloned() {
                    None => {
                        let what = if auto {
                            format!(
                                "Paused before switching {}: promotes automatically in {auto_secs}s",
                                bg.active_service
                            )
                        } else {
                            format!("Paused before switching {}: waiting for promote", bg.active_service)
                        };
                        add_pause(ctx, status, acts, PauseReason::BlueGreenPause, what);
                        if auto {
                            requeue.push(f64::from(auto_secs));
                        }
                        gate_open = false;
                    }
                    Some(start) => {
                        let left = f64::from(auto_secs) - seconds_between(&start, ctx.now);
                        if auto && left <= 0.0 {
                            end_pause(status, PauseReason::BlueGreenPause);
                            status.controller_pause = None;
                        } else {
                            if auto {
                                requeue.push(left);
                            }
                            gate_open = false;
                        }
                    }
                }
            }
        }
        if gate_open {
            if new_target < r {
                bgs.scale_up_preview_check_point = Some(true);
                new_final = r;
            }
            // Judged at the size this plan gives the new ReplicaSet: pods left at full size (a
            // retry after an abort) let the switch happen at once.
            switch_now = ctx.counts(&ctx.hash).available_once_scaled_to(new_final) >= r;
        }
    }
    if !user_paused && !aborted {
        scale(ctx, acts, &ctx.hash, new_final);
        clear_deadline(ctx, acts, &ctx.hash);
    }

    if switch_now && !aborted {
        point_service(ctx, acts, Some(&bg.active_service), &ctx.hash);
        bgs.active_selector = Some(ctx.hash.clone());
        let switched_before = switched;
        // Post-promotion analysis after the switch has been seen; stable once it succeeds.
        let mut stable_now = !has_stable || promoted || promote_full;
        if !stable_now {
            match bg.post_promotion_analysis.as_ref() {
                None => stable_now = true,
                Some(analysis) if switched_before => {
                    let mut run = ensure_run(
                        ctx,
                        acts,
                        bgs.post_promotion_analysis_run_status.as_ref(),
                        AnalysisKind::PostPromotion,
                        analysis,
                        revision,
                    );
                    let seen = prev.blue_green.as_ref().and_then(|b| b.post_promotion_analysis_run_status.as_ref());
                    let accepted = accept_inconclusive(&mut run, prev, seen, status);
                    bgs.post_promotion_analysis_run_status = Some(run.clone());
                    match run.status {
                        AnalysisPhase::Successful => stable_now = true,
                        AnalysisPhase::Failed | AnalysisPhase::Error => {
                            status.blue_green = Some(bgs.clone());
                            abort(ctx, status, acts, analysis_verdict(&run, "Post-promotion"));
                            return plan_blue_green(ctx, bg, prev, status, acts, requeue);
                        }
                        AnalysisPhase::Inconclusive => {
                            if accepted {
                                stable_now = true;
                            } else {
                                add_pause(
                                    ctx,
                                    status,
                                    acts,
                                    PauseReason::InconclusiveAnalysisRun,
                                    analysis_verdict(&run, "Post-promotion"),
                                );
                            }
                        }
                        _ => {}
                    }
                }
                Some(_) => {}
            }
        }
        if stable_now && !promoted {
            let reason = if promote_full { "Full promotion requested" } else { "Completed blue-green update" };
            status.stable_rs = Some(ctx.hash.clone());
            status.promote_full = None;
            status.pause_conditions.clear();
            status.controller_pause = None;
            bgs.scale_up_preview_check_point = None;
            terminate_runs(ctx, acts);
            if has_stable {
                acts.event(
                    EventType::Normal,
                    "RolloutCompleted",
                    format!("Rollout completed update to revision {revision} ({}): {reason}", ctx.hash),
                );
            }
        }
    }

    // The stable version keeps all its pods while it is the stable one (a promotion in this
    // plan has made it an older version). On abort the new pods go once the active Service is
    // back on the stable pods and they are all available.
    let stable_hash = status.stable_rs.clone();
    if let Some(sh) = stable_hash.as_deref().filter(|h| *h != ctx.hash) {
        scale(ctx, acts, sh, r);
        clear_deadline(ctx, acts, sh);
        if aborted
            && planned_selector(ctx, acts, &bg.active_service).as_deref() == Some(sh)
            && available_after(ctx, acts, sh) >= r
        {
            let delay = match bg.abort_scale_down_delay_seconds {
                Some(0) => None,
                Some(d) => Some(d),
                None => Some(stepwise_api::DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS),
            };
            scale_down_after(ctx, acts, requeue, &ctx.hash, delay);
        }
    }

    // Preview Service: the new version, once it has available pods (stable on abort), or at
    // once when no pods are wanted at all, as for the active Service: it must not hold on to an
    // older version's pods for ever.
    if let Some(preview) = &bg.preview_service {
        let target = if aborted { stable_hash.clone() } else { Some(ctx.hash.clone()) };
        if let Some(t) = target
            && (available_after(ctx, acts, &t) > 0 || r == 0)
        {
            point_service(ctx, acts, Some(preview), &t);
            bgs.preview_selector = Some(t);
        }
    }

    // Older versions go after scaleDownDelaySeconds once nothing selects them. All of them get
    // the delay (see the canary case): a stale cache must not make a just-switched version look
    // like one that never served.
    let active_after = planned_selector(ctx, acts, &bg.active_service);
    let preview_after = bg.preview_service.as_deref().and_then(|p| planned_selector(ctx, acts, p));
    for rs in &ctx.observed.replica_sets {
        if rs.hash == ctx.hash || Some(&rs.hash) == stable_hash.as_ref() {
            continue;
        }
        let delay = Some(bg.scale_down_delay_seconds.unwrap_or(stepwise_api::DEFAULT_SCALE_DOWN_DELAY_SECONDS));
        let still_active =
            active_after.as_deref() == Some(rs.hash.as_str()) || preview_after.as_deref() == Some(rs.hash.as_str());
        // The deadline may be set while the switch is under way; pods go only once nothing
        // selects them.
        if !still_active || (rs.scale_down_deadline.is_none() && delay.is_some_and(|d| d > 0)) {
            scale_down_after(ctx, acts, requeue, &rs.hash, delay);
        }
    }
    status.blue_green = Some(bgs);
}

fn plan_restart(ctx: &Ctx, status: &mut RolloutStatus, acts: &mut Actions, requeue: &mut Vec<f64>) {
    let Some(restart_at) = &ctx.spec.restart_at else { return };
    if status.restarted_at.as_ref() == Some(restart_at) {
        return;
    }
    let wait = seconds_between(ctx.now, restart_at);
    if wait > 0.0 {
        requeue.push(wait);
        return;
    }
    let pending: Vec<&(String, i32)> = ctx.observed.pods_to_restart.iter().filter(|(_, n)| *n > 0).collect();
    if pending.is_empty() {
        status.restarted_at = Some(restart_at.clone());
        acts.event(EventType::Normal, "RolloutRestarted", "All pods created before spec.restartAt were replaced");
        return;
    }
    let r = ctx.replicas;
    let (_, unavailable) = match (&ctx.spec.strategy.canary, &ctx.spec.strategy.blue_green) {
        (Some(c), _) => resolve_fenceposts(c.max_surge.as_ref(), c.max_unavailable.as_ref(), r),
        (None, Some(b)) => resolve_fenceposts(
            Some(&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0)),
            b.max_unavailable.as_ref(),
            r,
        ),
        _ => (0, 1),
    };
    let budget = unavailable.max(1);
    let available: i32 = ctx.observed.replica_sets.iter().map(|rs| rs.available.min(rs.spec_replicas)).sum();
    let spec_total: i32 = ctx.observed.replica_sets.iter().map(|rs| rs.spec_replicas).sum();
    if available > r.max(spec_total) - budget {
        let (hash, _) = pending[0];
        acts.other.push(Action::RestartPods { hash: hash.clone(), before: restart_at.clone(), max: 1 });
    }
    requeue.push(5.0);
}

fn trim_revision_history(ctx: &Ctx, status: &RolloutStatus, acts: &mut Actions) {
    let limit = ctx.spec.revision_history_limit.unwrap_or(stepwise_api::DEFAULT_REVISION_HISTORY_LIMIT).max(0) as usize;
    let mut old: Vec<&ObservedReplicaSet> = ctx
        .observed
        .replica_sets
        .iter()
        .filter(|rs| rs.hash != ctx.hash && Some(&rs.hash) != status.stable_rs.as_ref())
        .filter(|rs| rs.spec_replicas == 0 && rs.replicas == 0)
        .collect();
    if old.len() <= limit {
        return;
    }
    old.sort_by_key(|rs| rs.revision);
    let excess = old.len() - limit;
    for rs in old.into_iter().take(excess) {
        acts.other.push(Action::DeleteReplicaSet { name: rs.name.clone() });
    }
}

/// Replica counts, from the observed ReplicaSets.
fn count_replicas(ctx: &Ctx, status: &mut RolloutStatus) {
    let rss = &ctx.observed.replica_sets;
    status.replicas = Some(rss.iter().map(|rs| rs.replicas).sum());
    status.updated_replicas = Some(ctx.new_rs().map(|rs| rs.replicas).unwrap_or(0));
    status.ready_replicas = Some(rss.iter().map(|rs| rs.ready).sum());
    status.available_replicas = Some(rss.iter().map(|rs| rs.available).sum());
}

/// The pods the scale subresource reports (for an HPA): all of a canary's; for blue-green, the
/// version the active Service selects once this plan's actions are done, so that a switch in
/// this plan is reported by this plan.
fn report_scale_selector(ctx: &Ctx, acts: &Actions, status: &mut RolloutStatus) {
    if let Some(bg) = &ctx.spec.strategy.blue_green {
        let active = planned_selector(ctx, acts, &bg.active_service).or(status.stable_rs.clone());
        status.hpa_replicas = Some(active.as_deref().and_then(|h| ctx.rs(h)).map(|rs| rs.replicas).unwrap_or(0));
        status.selector = Some(ctx.selector_string(active.as_deref()));
    } else {
        status.hpa_replicas = status.replicas;
        status.selector = Some(ctx.selector_string(None));
    }
}

/// Whether the ReplicaSets moved since the last status: new pods, ready pods, a new version.
fn replicas_moved(prev: &RolloutStatus, status: &RolloutStatus) -> bool {
    prev.current_pod_hash != status.current_pod_hash
        || prev.updated_replicas != status.updated_replicas
        || prev.available_replicas != status.available_replicas
        || prev.ready_replicas != status.ready_replicas
        || prev.replicas != status.replicas
}

/// A rollout that made no progress for progressDeadlineSeconds (waiting for a person, a timer or
/// an analysis does not count) is marked ProgressDeadlineExceeded, and aborted with
/// progressDeadlineAbort. Decided before the strategy so that an abort takes effect at once.
fn check_progress_deadline(
    ctx: &Ctx,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    acts: &mut Actions,
    requeue: &mut Vec<f64>,
) {
    let promoted = status.stable_rs.as_deref() == Some(ctx.hash.as_str());
    let paused = ctx.spec.paused == Some(true) || !status.pause_conditions.is_empty();
    let new_available = ctx.new_rs().map(|rs| rs.available).unwrap_or(0);
    let complete = promoted && new_available >= ctx.replicas && status.replicas == Some(ctx.replicas);
    let waiting_on_person_or_timer = paused
        || status.abort == Some(true)
        || complete
        || at_analysis(ctx, status)
        || ctx
            .observed
            .replica_sets
            .iter()
            .any(|rs| rs.scale_down_deadline.as_ref().is_some_and(|d| seconds_between(ctx.now, d) > 0.0));
    let Some(progressing) = condition(status, condition::PROGRESSING).cloned() else { return };
    if waiting_on_person_or_timer
        || replicas_moved(prev, status)
        || progressing.status != "True"
        || progressing.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return;
    }
    let deadline = ctx.spec.progress_deadline_seconds.unwrap_or(stepwise_api::DEFAULT_PROGRESS_DEADLINE_SECONDS);
    // Time spent waiting for a scale-down delay does not count either: the clock runs from the
    // last progress or from the end of the latest such wait, whichever is later.
    let last = ctx
        .observed
        .replica_sets
        .iter()
        .filter_map(|rs| rs.scale_down_deadline.clone())
        .chain(progressing.last_update_time.clone())
        .filter(|t| seconds_between(t, ctx.now) >= 0.0)
        .reduce(|a, b| if seconds_between(&a, &b) > 0.0 { b } else { a })
        .unwrap_or_else(|| ctx.now.clone());
    let left = f64::from(deadline) - seconds_between(&last, ctx.now);
    if left > 0.0 {
        requeue.push(left);
        return;
    }
    let message = format!("ReplicaSet {} has timed out progressing.", ctx.rs_name(&ctx.hash));
    set_condition(status, condition::PROGRESSING, "False", "ProgressDeadlineExceeded", &message, ctx.now);
    acts.event(EventType::Warning, "ProgressDeadlineExceeded", message.clone());
    // A promoted rollout has nothing to go back to (and an abort of it is dropped at once).
    if ctx.spec.progress_deadline_abort == Some(true) && !promoted {
        abort(ctx, status, acts, message);
    }
}

/// Conditions, phase and message.
fn summarize(ctx: &Ctx, prev: &RolloutStatus, status: &mut RolloutStatus, acts: &mut Actions) {
    let rss = &ctx.observed.replica_sets;
    let r = ctx.replicas;
    let promoted = status.stable_rs.as_deref() == Some(ctx.hash.as_str());
    let aborted = status.abort == Some(true);
    let user_paused = ctx.spec.paused == Some(true);
    let paused = user_paused || !status.pause_conditions.is_empty();
    let available_total = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    // The status reports what the ReplicaSets report, whatever this plan changes in their spec.
    let new_available = ctx.new_rs().map(|rs| rs.available).unwrap_or(0);
    let old_pods: i32 = rss.iter().filter(|rs| rs.hash != ctx.hash).map(|rs| rs.replicas).sum();
    let healthy = promoted && !paused && new_available >= r && updated == r && status.replicas == Some(r);

    // Progress: anything that moved since the last status. The end of a wait that does not
    // count against the deadline (a pause, an analysis) is progress, so the clock starts again
    // there: for blue-green an analysis result or a Service switch shows in its status.
    let moved = replicas_moved(prev, status)
        || prev.current_step_index != status.current_step_index
        || prev.stable_rs != status.stable_rs
        || prev.pause_conditions != status.pause_conditions
        || prev.controller_pause != status.controller_pause
        || prev.blue_green != status.blue_green;
    let progressing = condition(status, condition::PROGRESSING).cloned();
    let rs_name = ctx.rs_name(&ctx.hash);
    let timed_out = progressing.as_ref().is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    if aborted {
        // The abort set the condition.
    } else if healthy {
        set_condition(
            status,
            condition::PROGRESSING,
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet {rs_name} has successfully progressed."),
            ctx.now,
        );
    } else if paused {
        set_condition(status, condition::PROGRESSING, "Unknown", "RolloutPaused", "Rollout is paused", ctx.now);
    } else if moved || progressing.as_ref().is_none_or(|c| c.status != "True" && !timed_out) {
        let mut c = progressing.unwrap_or_default();
        c.r#type = condition::PROGRESSING.into();
        if c.status != "True" {
            c.last_transition_time = Some(ctx.now.clone());
        }
        c.status = "True".into();
        c.reason = Some("ReplicaSetUpdated".into());
        c.message = Some(format!("ReplicaSet {rs_name} is progressing."));
        c.last_update_time = Some(ctx.now.clone());
        remove_condition(status, condition::PROGRESSING);
        status.conditions.push(c);
    }
    let aborted = status.abort == Some(true);

    // The two-state conditions: (type, holds, reason, message when it holds, when it does not).
    let two_state = [
        (
            condition::AVAILABLE,
            available_total >= r,
            "AvailableReason",
            "Rollout has minimum availability",
            "Rollout does not have minimum availability",
        ),
        (condition::PAUSED, paused, "RolloutPaused", "Rollout is paused", "Rollout is not paused"),
        (condition::COMPLETED, promoted, "RolloutCompleted", "Rollout is completed", "Rollout is not completed"),
        (condition::HEALTHY, healthy, "RolloutHealthy", "Rollout is healthy", "Rollout is not healthy"),
    ];
    for (kind, holds, reason, yes, no) in two_state {
        let (value, message) = if holds { ("True", yes) } else { ("False", no) };
        set_condition(status, kind, value, reason, message, ctx.now);
    }

    // Phase and a message that says why.
    let progress_reason = condition(status, condition::PROGRESSING).and_then(|c| c.reason.clone()).unwrap_or_default();
    let progress_message =
        condition(status, condition::PROGRESSING).and_then(|c| c.message.clone()).unwrap_or_default();
    let (phase, message) = if aborted {
        (RolloutPhase::Degraded, format!("Aborted: {progress_message}"))
    } else if progress_reason == "ProgressDeadlineExceeded" {
        (RolloutPhase::Degraded, format!("ProgressDeadlineExceeded: {progress_message}"))
    } else if user_paused {
        (RolloutPhase::Paused, "Paused by the user (spec.paused): promote or set spec.paused to false to resume".into())
    } else if let Some(p) = status.pause_conditions.first() {
        (RolloutPhase::Paused, pause_message(ctx, status, p))
    } else if updated < r && !aborted {
        (RolloutPhase::Progressing, format!("{}: {updated} of {r} pods updated", step_label(ctx, status)))
    } else if new_available < updated {
        (
            RolloutPhase::Progressing,
            format!("{}: {new_available} of {updated} updated pods available", step_label(ctx, status)),
        )
    } else if !promoted {
        (RolloutPhase::Progressing, format!("{}: waiting for the step to complete", step_label(ctx, status)))
    } else if old_pods > 0 {
        (RolloutPhase::Progressing, format!("Promoted; {old_pods} old pods pending termination"))
    } else if !healthy {
        (RolloutPhase::Progressing, format!("Promoted; {new_available} of {r} pods available"))
    } else {
        (RolloutPhase::Healthy, format!("Healthy at revision {}", status.current_revision.unwrap_or(1)))
    };
    if prev.phase != Some(phase) && prev.phase.is_some() {
        let type_ = if phase == RolloutPhase::Degraded { EventType::Warning } else { EventType::Normal };
        acts.event(type_, &format!("Rollout{phase}"), message.clone());
    }
    status.phase = Some(phase);
    status.message = Some(message);
}

fn at_analysis(ctx: &Ctx, status: &RolloutStatus) -> bool {
    let Some(canary) = &ctx.spec.strategy.canary else {
        // Blue-green waits on its analyses only while the new pods are ready: a run recorded
        // earlier does not hold the deadline off while pods are missing.
        let Some(bg) = &ctx.spec.strategy.blue_green else { return false };
        return blue_green_new(ctx, bg, status).ready
            && status.blue_green.as_ref().is_some_and(|b| {
                [&b.pre_promotion_analysis_run_status, &b.post_promotion_analysis_run_status]
                    .iter()
                    .any(|r| r.as_ref().is_some_and(|r| !r.status.is_completed()))
            });
    };
    let steps = canary.steps.as_deref().unwrap_or_default();
    let idx = status.current_step_index.unwrap_or(0);
    steps.get(idx.max(0) as usize).is_some_and(|s| s.analysis.is_some())
}

fn step_label(ctx: &Ctx, status: &RolloutStatus) -> String {
    match &ctx.spec.strategy.canary {
        Some(canary) => {
            let steps = canary.steps.as_deref().unwrap_or_default();
            let idx = status.current_step_index.unwrap_or(0);
            match steps.get(idx.max(0) as usize) {
                Some(step) => format!("At step {}/{}: {}", idx + 1, steps.len(), describe_step(step)),
                None => format!("All {} steps done", steps.len()),
            }
        }
        None => "Blue-green".into(),
    }
}

/// A time as people read it in `kubectl get`: UTC, to the second.
fn clock(t: &Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn pause_message(ctx: &Ctx, status: &RolloutStatus, pause: &PauseCondition) -> String {
    match pause.reason {
        PauseReason::CanaryPauseStep => {
            let steps = ctx.spec.strategy.canary.as_ref().and_then(|c| c.steps.as_deref()).unwrap_or_default();
            let idx = status.current_step_index.unwrap_or(0);
            let step = steps.get(idx.max(0) as usize);
            // An absolute time, not "Ns left": the status is written only when something changes,
            // so a countdown would be stale the moment it was read.
            let resumes_at =
                step.and_then(pause_seconds).flatten().map(|secs| add_seconds(&pause.start_time, secs.ceil() as i64));
            let what = step.map(describe_step).unwrap_or_else(|| "pause".into());
            match resumes_at {
                Some(at) => format!("Paused at step {}/{}: {what}, resumes at {}", idx + 1, steps.len(), clock(&at)),
                None => format!("Paused at step {}/{}: {what}, waiting for promote", idx + 1, steps.len()),
            }
        }
        PauseReason::BlueGreenPause => {
            let bg = ctx.spec.strategy.blue_green.as_ref();
            match bg.and_then(|b| b.auto_promotion_seconds).filter(|s| *s > 0) {
                Some(secs) => format!(
                    "Paused before switching the active Service: promotes automatically at {}",
                    clock(&add_seconds(&pause.start_time, i64::from(secs)))
                ),
                None => "Paused before switching the active Service: waiting for promote".into(),
            }
        }
        PauseReason::InconclusiveAnalysisRun => {
            let run = status
                .canary
                .as_ref()
                .and_then(|c| {
                    c.current_step_analysis_run_status.clone().or(c.current_background_analysis_run_status.clone())
                })
                .or_else(|| {
                    status.blue_green.as_ref().and_then(|b| {
                        b.pre_promotion_analysis_run_status.clone().or(b.post_promotion_analysis_run_status.clone())
                    })
                });
            match run {
                Some(run) => {
                    format!("Paused: {}; promote to accept, abort to roll back", analysis_verdict(&run, "the"))
                }
                None => "Paused: an analysis was inconclusive; promote to accept, abort to roll back".into(),
            }
        }
    }
}
