//! The desired state a plan decides, and the actions that take what was observed there.
//!
//! The strategies write what they want (the spec.replicas of each ReplicaSet, the version each
//! managed Service selects, the canary's weight, the managed routes, the AnalysisRuns) and read
//! it back when a later decision depends on it. [`actions`] then compares it with what was
//! observed and lists the changes in the safe order.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use stepwise_api::AnalysisRun;

use super::action::{Action, EventType, action_event};
use super::context::Ctx;
use crate::observed::AnalysisKind;
use crate::time::{add_seconds, seconds_between};

/// The ReplicaSet of a version that has none yet.
pub(crate) struct NewReplicaSet {
    pub name: String,
    pub revision: i64,
    pub template: PodTemplateSpec,
    pub selector: LabelSelector,
}

/// The traffic the routers are to carry, and how it differs from what they were last given.
pub(crate) struct Weight {
    pub traffic: crate::traffic::Traffic,
    /// The weight the router had, as the status recorded it.
    pub previous: Option<i32>,
    /// Whether the versions, the Services or the managed routes differ from those the router
    /// was last given.
    pub changed: bool,
}

/// What the world should look like once the plan is carried out. Only what the plan decides is
/// set; everything else stays as observed.
#[derive(Default)]
pub(crate) struct Desired {
    pub new_replica_set: Option<NewReplicaSet>,
    /// spec.replicas by pod template hash.
    replicas: BTreeMap<String, i32>,
    /// The revision annotation of an existing ReplicaSet, by name.
    pub revision: Option<(String, i64)>,
    /// The scale-down deadline by pod template hash; None clears it.
    deadlines: BTreeMap<String, Option<Time>>,
    /// The ReplicaSet, by name, that records from when its version is stable, and that time.
    pub stable_since: Option<(String, Time)>,
    /// The ReplicaSet, by name, that records until when its version was stable, and that time.
    pub stable_until: Option<(String, Time)>,
    /// The version each managed Service selects.
    services: BTreeMap<String, String>,
    pub weight: Option<Weight>,
    /// AnalysisRuns to start.
    pub new_runs: Vec<(AnalysisKind, AnalysisRun)>,
    /// Names of the runs that must go on measuring; every other unfinished run is stopped.
    pub live_runs: Option<Vec<String>>,
    /// Completed runs beyond the history limits, oldest first.
    pub deleted_runs: Vec<String>,
    pub deleted: Vec<String>,
    pub restart: Option<Action>,
    /// spec.replicas of the Deployment a workloadRef names (`workloadRef.scaleDown`).
    pub workload_replicas: Option<i32>,
    /// The role metadata of each version, by pod template hash; a version missing here has none.
    pub role_metadata: BTreeMap<String, crate::observed::RoleMetadata>,
}

/// The plan being drawn up: the desired state, the events that tell people why, and when to look
/// again.
#[derive(Default)]
pub(crate) struct Draft {
    pub desired: Desired,
    pub events: Vec<Action>,
    requeue: Vec<f64>,
}

impl Draft {
    pub fn event(&mut self, type_: EventType, reason: &str, message: impl Into<String>) {
        self.events.push(Action::Event { type_, reason: reason.into(), message: message.into() });
    }

    pub fn has_event(&self, reason: &str) -> bool {
        self.events.iter().any(|e| matches!(e, Action::Event { reason: r, .. } if r == reason))
    }

    /// Plan again in `seconds` even if nothing changes.
    pub fn requeue_in(&mut self, seconds: f64) {
        self.requeue.push(seconds);
    }

    /// The nearest requeue, a little after the moment so that the time has surely passed.
    pub fn requeue_after(&self) -> Option<std::time::Duration> {
        self.requeue
            .iter()
            .copied()
            .filter(|s| s.is_finite())
            .map(|s| s.max(0.0) + 0.5)
            .reduce(f64::min)
            .map(std::time::Duration::from_secs_f64)
    }
}

impl Desired {
    /// Wants `target` pods for the ReplicaSet of `hash`, or as many as it may have now: one still
    /// reporting more available pods than its spec grows only once its status caught up.
    pub fn scale(&mut self, ctx: &Ctx, hash: &str, target: i32) {
        let target = match ctx.rs(hash) {
            Some(_) => ctx.counts(hash).reachable(target),
            None => target,
        };
        self.replicas.insert(hash.to_string(), target);
    }

    /// spec.replicas of a ReplicaSet once the plan is carried out.
    pub fn spec(&self, ctx: &Ctx, hash: &str) -> i32 {
        self.replicas.get(hash).copied().unwrap_or_else(|| ctx.counts(hash).spec)
    }

    /// Available pods of a ReplicaSet that stay once the plan is carried out: a ReplicaSet keeps
    /// no more pods than its spec. Decisions made from availability use this, not the spec
    /// observed, or planning again after a scale would decide differently.
    pub fn available(&self, ctx: &Ctx, hash: &str) -> i32 {
        ctx.counts(hash).available.min(self.spec(ctx, hash))
    }

    /// Points a managed Service at a version.
    pub fn select(&mut self, service: &str, hash: &str) {
        self.services.insert(service.to_string(), hash.to_string());
    }

    /// The version a Service selects once the plan is carried out.
    pub fn selected(&self, ctx: &Ctx, service: &str) -> Option<String> {
        self.services.get(service).cloned().or_else(|| ctx.observed.services.get(service).cloned().flatten())
    }

    pub fn clear_deadline(&mut self, hash: &str) {
        self.deadlines.insert(hash.to_string(), None);
    }

    /// Scales a ReplicaSet to zero after `delay` seconds: the deadline is written first, and the
    /// pods go once it has passed. None keeps the pods.
    pub fn scale_down_after(&mut self, ctx: &Ctx, draft_requeue: &mut Vec<f64>, hash: &str, delay: Option<i32>) {
        let Some(rs) = ctx.rs(hash) else { return };
        if rs.spec_replicas == 0 {
            return;
        }
        let Some(delay) = delay else { return };
        match &rs.scale_down_deadline {
            None if delay > 0 => {
                self.deadlines.insert(hash.to_string(), Some(add_seconds(ctx.now, i64::from(delay))));
                draft_requeue.push(f64::from(delay));
            }
            Some(deadline) if seconds_between(ctx.now, deadline) > 0.0 => {
                draft_requeue.push(seconds_between(ctx.now, deadline));
            }
            _ => self.scale(ctx, hash, 0),
        }
    }
}

impl Draft {
    /// See [`Desired::scale_down_after`].
    pub fn scale_down_after(&mut self, ctx: &Ctx, hash: &str, delay: Option<i32>) {
        self.desired.scale_down_after(ctx, &mut self.requeue, hash, delay);
    }
}

/// `scaleDownDelayRevisionLimit`: of the older versions in `candidates` that still have pods, the
/// newest `limit` (by revision) keep them for the scale-down delay; the others, returned here,
/// are scaled to zero at once, whatever deadline they have. None (unlimited) returns none.
pub(crate) fn beyond_delay_limit<'h>(
    ctx: &Ctx,
    candidates: impl IntoIterator<Item = &'h String>,
    limit: Option<i32>,
) -> Vec<String> {
    let Some(limit) = limit else { return Vec::new() };
    let mut up: Vec<_> = candidates
        .into_iter()
        .filter_map(|h| ctx.rs(h))
        .filter(|rs| rs.spec_replicas > 0)
        .map(|rs| (rs.revision, rs.hash.clone()))
        .collect();
    up.sort_by(|a, b| b.cmp(a));
    up.into_iter().skip(limit.max(0) as usize).map(|(_, h)| h).collect()
}

/// Actions grouped by when they must happen.
#[derive(Default)]
struct Ordered {
    make_room: Vec<Action>,
    scale_up: Vec<Action>,
    traffic: Vec<Action>,
    scale_down: Vec<Action>,
    other: Vec<Action>,
    /// Role metadata comes last: a version's labels follow its role, and a failure to label
    /// pods never holds up the rollout.
    metadata: Vec<Action>,
    events: Vec<Action>,
}

impl Ordered {
    fn event(&mut self, reason: &str, message: String) {
        self.events.push(Action::Event { type_: EventType::Normal, reason: reason.into(), message });
    }
}

/// The actions that take the observed world to the desired state, in the safe order: room made
/// by older versions first (a canary without routing), then new pods, then traffic, then the
/// pods traffic has left, then bookkeeping, then role metadata, then the events.
pub(crate) fn actions(ctx: &Ctx, draft: Draft) -> Vec<Action> {
    let Draft { mut desired, events, .. } = draft;
    let metadata = super::metadata::actions(ctx, &desired);
    let mut ordered = Ordered { events, metadata, ..Default::default() };
    replica_set_actions(ctx, &mut desired, &mut ordered);
    traffic_actions(ctx, &mut desired, &mut ordered);
    analysis_actions(ctx, &mut desired, &mut ordered);
    workload_actions(ctx, &desired, &mut ordered);
    ordered.other.extend(desired.restart);
    ordered.other.extend(desired.deleted.into_iter().map(|name| Action::DeleteReplicaSet { name }));
    let Ordered { make_room, scale_up, traffic, scale_down, other, metadata, events } = ordered;
    [make_room, scale_up, traffic, scale_down, other, metadata, events].into_iter().flatten().collect()
}

fn replica_set_actions(ctx: &Ctx, desired: &mut Desired, out: &mut Ordered) {
    if let Some(new) = desired.new_replica_set.take() {
        let replicas = desired.replicas.get(&ctx.hash).copied().unwrap_or(0);
        out.event(
            action_event::REPLICA_SET_CREATED,
            format!("Created ReplicaSet {} (revision {})", new.name, new.revision),
        );
        out.scale_up.push(Action::CreateReplicaSet {
            name: new.name,
            hash: ctx.hash.clone(),
            revision: new.revision,
            replicas,
            template: new.template,
            selector: new.selector,
            min_ready_seconds: ctx.spec.min_ready_seconds.unwrap_or(0),
        });
    }
    if let Some((name, revision)) = desired.revision.take() {
        out.other.push(Action::SetRevision { name, revision });
    }
    for rs in &ctx.observed.replica_sets {
        let Some(&target) = desired.replicas.get(&rs.hash) else { continue };
        if target == rs.spec_replicas {
            continue;
        }
        let action = Action::ScaleReplicaSet { name: rs.name.clone(), replicas: target };
        let verb = if target > rs.spec_replicas { "up" } else { "down" };
        out.event(
            action_event::SCALED,
            format!("Scaled {verb} ReplicaSet {} from {} to {target}", rs.name, rs.spec_replicas),
        );
        if target > rs.spec_replicas {
            out.scale_up.push(action);
        } else if rs.hash != ctx.hash && ctx.basic_canary() {
            // Without a router, older pods that may go (within maxUnavailable) make room for the
            // new ones; the canary itself only shrinks after its Service moved away.
            out.make_room.push(action);
        } else {
            out.scale_down.push(action);
        }
    }
    for rs in &ctx.observed.replica_sets {
        if let Some(deadline) = desired.deadlines.get(&rs.hash)
            && *deadline != rs.scale_down_deadline
        {
            out.other.push(Action::SetScaleDownDeadline { name: rs.name.clone(), deadline: deadline.clone() });
        }
    }
    if let Some((name, until)) = desired.stable_until.take() {
        out.other.push(Action::SetStableUntil { name, until });
    }
    if let Some((name, since)) = desired.stable_since.take() {
        out.other.push(Action::SetStableSince { name, since });
    }
}

fn traffic_actions(ctx: &Ctx, desired: &mut Desired, out: &mut Ordered) {
    for (service, hash) in &desired.services {
        if ctx.observed.services.get(service).and_then(|h| h.as_deref()) == Some(hash.as_str()) {
            continue;
        }
        out.traffic.push(Action::SetServiceSelector { service: service.clone(), hash: hash.clone() });
        out.event(action_event::SERVICE_SWITCHED, format!("Switched selector of Service {service} to {hash}"));
    }
    let Some(weight) = desired.weight.take() else { return };
    let canary = weight.traffic.canary_weight;
    let unchanged = weight.previous == Some(canary) && !weight.changed;
    // A router object that does not carry the weight last set (another writer put its own back)
    // is given it again.
    if unchanged && ctx.observed.weight_verified != Some(false) {
        return;
    }
    if weight.previous != Some(canary) {
        let message = format!("Traffic weight updated from {} to {canary}", weight.previous.unwrap_or(0));
        out.event(action_event::WEIGHT_SET, message);
    }
    out.traffic.push(Action::SetTraffic(weight.traffic));
}

/// The workloadRef's Deployment: scaled up with the new pods, down with the old ones.
fn workload_actions(ctx: &Ctx, desired: &Desired, out: &mut Ordered) {
    let (Some(target), Some(current), Some(w)) =
        (desired.workload_replicas, ctx.observed.workload_replicas, ctx.spec.workload_ref.as_ref())
    else {
        return;
    };
    if target == current {
        return;
    }
    let verb = if target > current { "up" } else { "down" };
    out.event(action_event::SCALED, format!("Scaled {verb} Deployment {} from {current} to {target}", w.name));
    let action = Action::ScaleWorkload { name: w.name.clone(), replicas: target };
    if target > current { out.scale_up.push(action) } else { out.scale_down.push(action) }
}

/// Runs the plan wants are started; unfinished runs it no longer wants are stopped.
fn analysis_actions(ctx: &Ctx, desired: &mut Desired, out: &mut Ordered) {
    if let Some(live) = &desired.live_runs {
        for run in &ctx.observed.analysis_runs {
            if !run.phase.is_completed() && !run.terminating && !live.contains(&run.name) {
                out.other.push(Action::TerminateAnalysisRun { name: run.name.clone() });
            }
        }
    }
    out.other.extend(desired.deleted_runs.drain(..).map(|name| Action::DeleteAnalysisRun { name }));
    for (kind, run) in desired.new_runs.drain(..) {
        let name = run.metadata.name.clone().unwrap_or_default();
        out.event(action_event::RUN_STARTED, format!("Started {} analysis {name}", kind.label()));
        out.other.push(Action::CreateAnalysisRun { kind, run: Box::new(run) });
    }
}

/// The pod template and selector of a new ReplicaSet: the Rollout's, with the hash label, and
/// the anti-affinity against the stable version's pods when `antiAffinity` asks for it. The hash
/// was taken before: the anti-affinity is not part of the version.
pub(crate) fn new_replica_set(ctx: &Ctx, revision: i64) -> NewReplicaSet {
    let label = (stepwise_api::POD_TEMPLATE_HASH_LABEL.to_string(), ctx.hash.clone());
    let mut template = ctx.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels.get_or_insert_with(BTreeMap::new).insert(label.0.clone(), label.1.clone());
    if let (Some(rule), Some(stable)) =
        (anti_affinity(ctx.spec), ctx.rollout.status.as_ref().and_then(|s| ctx.older_stable(s)))
    {
        stepwise_api::anti_affinity::inject(&mut template, rule, &stable);
    }
    let mut selector = ctx.selector.clone();
    selector.match_labels.get_or_insert_with(BTreeMap::new).insert(label.0, label.1);
    NewReplicaSet { name: ctx.rs_name(&ctx.hash), revision, template, selector }
}

fn anti_affinity(spec: &stepwise_api::RolloutSpec) -> Option<&stepwise_api::AntiAffinity> {
    let strategy = &spec.strategy;
    strategy
        .canary
        .as_ref()
        .and_then(|c| c.anti_affinity.as_ref())
        .or_else(|| strategy.blue_green.as_ref().and_then(|b| b.anti_affinity.as_ref()))
}
