//! What the dashboard shows of a Rollout, decided from the objects as the server's watches hold
//! them and a `now`: a row of the list (and whether a person must act on it), and the whole page
//! of one Rollout, down to why it waits and which buttons a person may press.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;
use stepwise_api::analysis::AnalysisPhase;
use stepwise_api::operations::revision_of;
use stepwise_api::{AnalysisRun, CanaryStep, POD_TEMPLATE_HASH_LABEL, PauseReason, Rollout, RolloutPhase};

use super::bounds::{self, Bound, Of};
use super::diff::{self, Line};
use crate::decide;
use crate::render;

/// Annotation on the Events the dashboard records: the action a person took.
pub const ACTION_ANNOTATION: &str = "dashboard.stepwise.dev/action";
/// Annotation on the Events the dashboard records: who took it, as the API server named them.
pub const BY_ANNOTATION: &str = "dashboard.stepwise.dev/by";

/// The actions of the page, in the order of its buttons.
pub const ACTIONS: [&str; 9] =
    ["promote", "promote-full", "abort", "retry", "pause", "resume", "restart", "undo", "set-image"];

/// A Rollout with the objects the page shows beside it.
#[derive(Clone, Debug, Default)]
pub struct Related<'a> {
    /// The Rollout.
    pub rollout: Option<&'a Rollout>,
    /// Its ReplicaSets.
    pub replica_sets: Vec<&'a ReplicaSet>,
    /// Its AnalysisRuns.
    pub runs: Vec<&'a AnalysisRun>,
    /// The Events about it.
    pub events: Vec<&'a Event>,
}

/// A Rollout in the list.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Canary or BlueGreen.
    pub strategy: &'static str,
    /// Its phase, as the controller wrote it.
    pub phase: Option<RolloutPhase>,
    /// The controller's message.
    pub message: Option<String>,
    /// The step shown to people (1-based) and the number of steps.
    pub step: Option<Step>,
    /// The canary's weight.
    pub weight: Option<i32>,
    /// When it was created (RFC 3339).
    pub created: Option<String>,
    /// Its labels, to filter by.
    pub labels: BTreeMap<String, String>,
    /// Why a person must act on it; None when nothing needs them.
    pub attention: Option<Attention>,
}

/// A step as shown to people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// 1-based.
    pub current: i32,
    /// How many there are.
    pub total: i32,
}

/// Why a Rollout needs a person.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attention {
    /// The kind of reason.
    pub reason: AttentionReason,
    /// The reason in words, with what to do.
    pub text: String,
}

/// The kinds of reasons a Rollout needs a person, the most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum AttentionReason {
    /// Its update was aborted.
    Aborted,
    /// It is Degraded.
    Degraded,
    /// An analysis of it failed, or is failing measurements.
    AnalysisFailing,
    /// An analysis was inconclusive: a person decides.
    AnalysisInconclusive,
    /// Its progress deadline is near.
    DeadlineNear,
    /// It waits for promote (a pause step without a duration, blue-green waiting to switch, or
    /// paused by hand).
    PausedForPromotion,
}

/// How near the progress deadline must be (seconds, or a quarter of it if that is longer) for a
/// progressing Rollout to need attention.
const DEADLINE_NEAR_SECONDS: f64 = 60.0;

fn phase(ro: &Rollout) -> Option<RolloutPhase> {
    ro.status.as_ref().and_then(|s| s.phase)
}

fn aborted(ro: &Rollout) -> bool {
    ro.status.as_ref().and_then(|s| s.abort) == Some(true)
}

fn message(ro: &Rollout) -> String {
    ro.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default()
}

/// The list's row of `ro`; `runs` are the AnalysisRuns it owns.
pub fn row(ro: &Rollout, runs: &[&AnalysisRun], now: Timestamp) -> Row {
    Row {
        namespace: ro.namespace().unwrap_or_default(),
        name: ro.name_any(),
        strategy: if ro.spec.strategy.blue_green.is_some() { "BlueGreen" } else { "Canary" },
        phase: phase(ro),
        message: ro.status.as_ref().and_then(|s| s.message.clone()),
        step: decide::step(ro).map(|(current, total)| Step { current, total }),
        weight: render::weight(ro),
        created: ro.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        labels: ro.labels().clone(),
        attention: attention(ro, runs, now),
    }
}

/// Why `ro` needs a person now, the most urgent reason when there are several.
pub fn attention(ro: &Rollout, runs: &[&AnalysisRun], now: Timestamp) -> Option<Attention> {
    let status = ro.status.clone().unwrap_or_default();
    let said = |fallback: String| if message(ro).is_empty() { fallback } else { message(ro) };
    if aborted(ro) {
        return Some(Attention {
            reason: AttentionReason::Aborted,
            text: said("aborted: retry or change the spec".into()),
        });
    }
    if phase(ro) == Some(RolloutPhase::Degraded) {
        return Some(Attention { reason: AttentionReason::Degraded, text: said("Degraded".into()) });
    }
    if let Some(failing) = runs.iter().find_map(|run| failing_metric(run)) {
        return Some(Attention { reason: AttentionReason::AnalysisFailing, text: failing });
    }
    if status.pause_conditions.iter().any(|c| c.reason == PauseReason::InconclusiveAnalysisRun) {
        let text = "analysis inconclusive: promote to accept the new version, or abort".to_string();
        return Some(Attention { reason: AttentionReason::AnalysisInconclusive, text });
    }
    if let Some(left) = deadline_left(ro, now).filter(|left| *left <= deadline_near(ro)) {
        let text = format!("progress deadline in {}", seconds_text(left.max(0.0)));
        return Some(Attention { reason: AttentionReason::DeadlineNear, text });
    }
    waits_for_promotion(ro).map(|text| Attention { reason: AttentionReason::PausedForPromotion, text })
}

/// A metric of a run still measuring that has failed measurements, or a run that ended Failed
/// or in Error while its Rollout still uses it, in words.
fn failing_metric(run: &AnalysisRun) -> Option<String> {
    let status = run.status.as_ref()?;
    match status.phase {
        Some(AnalysisPhase::Failed | AnalysisPhase::Error) => {
            let why = status.message.clone().unwrap_or_else(|| format!("{}", status.phase.unwrap_or_default()));
            Some(format!("analysis {}: {why}", run.name_any()))
        }
        Some(AnalysisPhase::Running) => status.metric_results.iter().find(|m| m.failed > 0).map(|m| {
            format!("analysis {}: metric {} failed {} of {} measurements", run.name_any(), m.name, m.failed, m.count)
        }),
        _ => None,
    }
}

/// What a paused Rollout waits for from a person; None when it waits for nobody.
fn waits_for_promotion(ro: &Rollout) -> Option<String> {
    if ro.spec.paused == Some(true) {
        return Some("paused by hand: resume to go on".into());
    }
    let status = ro.status.clone().unwrap_or_default();
    for condition in &status.pause_conditions {
        match condition.reason {
            PauseReason::CanaryPauseStep if current_step(ro).and_then(|s| s.pause.as_ref())?.duration.is_none() => {
                let (shown, total) = decide::step(ro).unwrap_or((1, 1));
                return Some(format!("paused at step {shown}/{total}: promote to go on"));
            }
            PauseReason::BlueGreenPause
                if ro.spec.strategy.blue_green.as_ref().and_then(|b| b.auto_promotion_seconds).is_none() =>
            {
                return Some("the new version waits in preview: promote to switch traffic to it".into());
            }
            _ => {}
        }
    }
    None
}

fn current_step(ro: &Rollout) -> Option<&CanaryStep> {
    let index = ro.status.as_ref().and_then(|s| s.current_step_index).unwrap_or(0);
    ro.spec.strategy.canary.as_ref()?.steps.as_ref()?.get(index as usize)
}

fn deadline_near(ro: &Rollout) -> f64 {
    let deadline = ro.spec.progress_deadline_seconds.unwrap_or(stepwise_api::DEFAULT_PROGRESS_DEADLINE_SECONDS);
    DEADLINE_NEAR_SECONDS.max(f64::from(deadline) / 4.0)
}

/// Seconds left before the progress deadline, while the clock runs: Progressing, and waiting
/// neither for a person nor a timer (which the deadline does not count).
fn deadline_left(ro: &Rollout, now: Timestamp) -> Option<f64> {
    let status = ro.status.as_ref()?;
    if phase(ro) != Some(RolloutPhase::Progressing)
        || !status.pause_conditions.is_empty()
        || ro.spec.paused == Some(true)
    {
        return None;
    }
    let progressing = status.conditions.iter().find(|c| c.r#type == stepwise_core::condition::PROGRESSING)?;
    if progressing.status != "True" {
        return None;
    }
    let since = progressing.last_update_time.as_ref()?;
    let deadline = ro.spec.progress_deadline_seconds.unwrap_or(stepwise_api::DEFAULT_PROGRESS_DEADLINE_SECONDS);
    Some(f64::from(deadline) - seconds_since(since, now))
}

fn seconds_since(t: &Time, now: Timestamp) -> f64 {
    now.duration_since(t.0).as_secs_f64()
}

/// `45s`, `3m 05s`, `2h 10m`.
fn seconds_text(seconds: f64) -> String {
    let s = seconds.round() as i64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

fn plus(t: &Time, seconds: f64) -> String {
    t.0.checked_add(SignedDuration::from_secs_f64(seconds)).unwrap_or(t.0).to_string()
}

/// The whole page of one Rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    /// Its row.
    pub row: Row,
    /// The resourceVersion the page shows; an action is refused when the Rollout moved on.
    pub resource_version: Option<String>,
    /// Its generation.
    pub generation: Option<i64>,
    /// The steps as a timeline.
    pub steps: Vec<TimelineStep>,
    /// Why it waits, each reason with its deadline.
    pub waiting: Vec<Waiting>,
    /// The traffic split as the router has it.
    pub traffic: Option<Traffic>,
    /// Its revisions, newest first.
    pub revisions: Vec<Value>,
    /// The pod template's change from the stable revision to the canary (or, at rest, from the
    /// previous revision to the current one: what an undo would put back).
    pub template_diff: Option<TemplateDiff>,
    /// Its AnalysisRuns, newest first.
    pub analysis_runs: Vec<RunView>,
    /// The Events about it, newest first.
    pub events: Vec<EventView>,
    /// What people did to it from the dashboard, newest first.
    pub history: Vec<HistoryEntry>,
    /// Each action with whether it may be taken now, and why not.
    pub actions: BTreeMap<&'static str, ActionState>,
    /// The revisions an undo can go back to.
    pub undo_revisions: Vec<i64>,
}

/// A step of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineStep {
    /// 0-based, as in the spec.
    pub index: usize,
    /// The step in words.
    pub text: String,
    /// `done`, `current` or `next`.
    pub state: &'static str,
}

/// A reason the Rollout waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Waiting {
    /// `pause`, `promotion`, `analysis`, `replicas`, `weight`, `deadline`, `abort`.
    pub kind: &'static str,
    /// In words.
    pub text: String,
    /// When the wait ends by itself (RFC 3339), if it does.
    pub until: Option<String>,
}

/// The traffic split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// The canary's weight.
    pub canary: i32,
    /// The stable version's weight.
    pub stable: i32,
    /// Whether the router was read back and has this weight in effect (None: not checked).
    pub verified: Option<bool>,
}

/// The pod template diff between two revisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TemplateDiff {
    /// The revision diffed from.
    pub from: i64,
    /// The revision diffed to.
    pub to: i64,
    /// The lines.
    pub lines: Vec<Line>,
}

/// An AnalysisRun as the page shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// Its name.
    pub name: String,
    /// Its phase (empty before its first status).
    pub phase: String,
    /// The controller's explanation.
    pub message: Option<String>,
    /// The revision it judges.
    pub revision: Option<i64>,
    /// Its metrics.
    pub metrics: Vec<MetricView>,
}

/// A metric of a run, with what its chart needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricView {
    /// Its name.
    pub name: String,
    /// Its phase.
    pub phase: String,
    /// The success condition.
    pub success_condition: Option<String>,
    /// The failure condition.
    pub failure_condition: Option<String>,
    /// The lines its conditions draw.
    pub bounds: Vec<Bound>,
    /// Measurements taken.
    pub count: i32,
    /// Measurements failed.
    pub failed: i32,
    /// The failure limit, in words.
    pub limit: Option<String>,
    /// The controller's message.
    pub message: Option<String>,
    /// The measurements, oldest first.
    pub measurements: Vec<MeasurementView>,
}

/// A measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeasurementView {
    /// When it was taken (RFC 3339).
    pub at: Option<String>,
    /// Its value as a number, if it is one.
    pub value: Option<f64>,
    /// Its value as the provider gave it.
    pub raw: Option<String>,
    /// Its phase.
    pub phase: String,
}

/// An Event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventView {
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: String,
    /// Its reason.
    pub reason: String,
    /// Its message.
    pub message: String,
    /// When it last happened (RFC 3339).
    pub at: Option<String>,
    /// How many times.
    pub count: i32,
}

/// An action a person took from the dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// When (RFC 3339).
    pub at: Option<String>,
    /// Which action.
    pub action: String,
    /// Who, as the API server named them.
    pub by: String,
    /// What it did.
    pub message: String,
}

/// Whether an action may be taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActionState {
    /// Whether its button is enabled.
    pub enabled: bool,
    /// Why not (or what it will do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the person looking may do, as the API server answered: the server was started without
/// actions, or whether they may patch `rollouts` and `rollouts/status` in the Rollout's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// No action is served; the reason says how to get them.
    ReadOnly(String),
    /// Actions are served, subject to RBAC.
    Acting {
        /// May patch the Rollout (spec), or why not.
        rollouts: Result<(), String>,
        /// May patch its status subresource, or why not.
        status: Result<(), String>,
    },
}

/// The page of the Rollout in `related`; None when there is no Rollout.
pub fn detail(related: &Related, access: &Access, now: Timestamp) -> Option<Detail> {
    let ro = related.rollout?;
    let mut runs: Vec<&AnalysisRun> = related.runs.clone();
    runs.sort_by_key(|r| std::cmp::Reverse(r.metadata.creation_timestamp.clone()));
    let tree = crate::RolloutTree {
        rollout: ro.clone(),
        replica_sets: related.replica_sets.iter().map(|rs| (*rs).clone()).collect(),
        pods: vec![],
        analysis_runs: vec![],
    };
    Some(Detail {
        row: row(ro, &runs, now),
        resource_version: ro.metadata.resource_version.clone(),
        generation: ro.metadata.generation,
        steps: timeline(ro),
        waiting: waiting(ro, &runs, &related.replica_sets, now),
        traffic: traffic(ro),
        revisions: revisions(&tree),
        template_diff: template_diff(ro, &related.replica_sets),
        analysis_runs: runs.iter().take(5).map(|r| run_view(r)).collect(),
        events: events(&related.events),
        history: history(&related.events),
        actions: actions(ro, &related.replica_sets, access),
        undo_revisions: undo_revisions(ro, &related.replica_sets),
    })
}

/// Each step in words, with where the Rollout is.
pub fn timeline(ro: &Rollout) -> Vec<TimelineStep> {
    let Some(steps) = ro.spec.strategy.canary.as_ref().and_then(|c| c.steps.as_ref()) else { return vec![] };
    let current = ro.status.as_ref().and_then(|s| s.current_step_index).unwrap_or(0).max(0) as usize;
    steps
        .iter()
        .enumerate()
        .map(|(index, step)| TimelineStep {
            index,
            text: step_text(step),
            state: match index.cmp(&current) {
                std::cmp::Ordering::Less => "done",
                std::cmp::Ordering::Equal => "current",
                std::cmp::Ordering::Greater => "next",
            },
        })
        .collect()
}

fn step_text(step: &CanaryStep) -> String {
    if let Some(w) = step.set_weight {
        return format!("setWeight {w}");
    }
    if let Some(pause) = &step.pause {
        return match &pause.duration {
            Some(d) => format!("pause {}", serde_json::to_value(d).ok().map(|v| plain(&v)).unwrap_or_default()),
            None => "pause until promoted".into(),
        };
    }
    if let Some(analysis) = &step.analysis {
        let names: Vec<&str> = analysis.templates.iter().map(|t| t.template_name.as_str()).collect();
        return format!("analysis {}", names.join(", "));
    }
    if let Some(scale) = &step.set_canary_scale {
        return match (scale.replicas, scale.weight) {
            (Some(r), _) => format!("setCanaryScale {r} replicas"),
            (None, Some(w)) => format!("setCanaryScale {w}%"),
            _ => "setCanaryScale matchTrafficWeight".into(),
        };
    }
    if let Some(route) = &step.set_header_route {
        return format!("setHeaderRoute {}", route.name);
    }
    if let Some(route) = &step.set_mirror_route {
        return format!("setMirrorRoute {}", route.name);
    }
    if step.experiment.is_some() {
        return "experiment".into();
    }
    "plugin".into()
}

/// A JSON scalar without quotes.
fn plain(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
}

/// Why the Rollout is not further along, each reason with when it ends by itself.
pub fn waiting(ro: &Rollout, runs: &[&AnalysisRun], replica_sets: &[&ReplicaSet], now: Timestamp) -> Vec<Waiting> {
    let status = ro.status.clone().unwrap_or_default();
    let mut out = vec![];
    let mut wait = |kind, text: String, until: Option<String>| out.push(Waiting { kind, text, until });
    if aborted(ro) {
        let why = message(ro);
        wait("abort", if why.is_empty() { "aborted: retry starts the update again".into() } else { why }, None);
    }
    if let Some(text) = waits_for_promotion(ro) {
        wait("promotion", text, None);
    }
    for condition in &status.pause_conditions {
        let seconds = match condition.reason {
            PauseReason::CanaryPauseStep => current_step(ro)
                .and_then(|s| s.pause.as_ref())
                .and_then(|p| p.duration.as_ref())
                .and_then(|d| d.to_std().ok())
                .map(|d| d.as_secs_f64()),
            PauseReason::BlueGreenPause => {
                ro.spec.strategy.blue_green.as_ref().and_then(|b| b.auto_promotion_seconds).map(f64::from)
            }
            PauseReason::InconclusiveAnalysisRun => {
                wait("promotion", "analysis inconclusive: promote to accept, or abort".into(), None);
                continue;
            }
        };
        // What is left is counted down on the page, from `until`: a text saying it would be
        // stale a second later.
        if let Some(seconds) = seconds {
            wait("pause", format!("a pause of {}", seconds_text(seconds)), Some(plus(&condition.start_time, seconds)));
        }
    }
    for run in runs.iter().filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(AnalysisPhase::Running)) {
        wait("analysis", analysis_progress(run), None);
    }
    if let Some(text) = replicas_not_ready(ro, replica_sets) {
        wait("replicas", text, None);
    }
    if let Some(weights) = status.canary.as_ref().and_then(|c| c.weights.as_ref()).filter(|w| w.verified == Some(false))
    {
        wait("weight", format!("weight {} set at the router, not yet in effect there", weights.canary.weight), None);
    }
    if let (Some(left), Some(progressing)) =
        (deadline_left(ro, now), status.conditions.iter().find(|c| c.r#type == stepwise_core::condition::PROGRESSING))
    {
        let deadline = ro.spec.progress_deadline_seconds.unwrap_or(stepwise_api::DEFAULT_PROGRESS_DEADLINE_SECONDS);
        let until = progressing.last_update_time.as_ref().map(|t| plus(t, f64::from(deadline)));
        wait("deadline", format!("progress deadline in {}", seconds_text(left.max(0.0))), until);
    }
    out
}

/// `analysis NAME: metric error-rate 3 of 5 measured, last 0.01; ...`
fn analysis_progress(run: &AnalysisRun) -> String {
    let status = run.status.clone().unwrap_or_default();
    let spec_count =
        |name: &str| run.spec.metrics.iter().find(|m| m.name == name).and_then(|m| m.count.as_ref()).map(text);
    let metrics: Vec<String> = run
        .spec
        .metrics
        .iter()
        .map(|metric| {
            let result = status.metric_results.iter().find(|r| r.name == metric.name);
            let count = result.map(|r| r.count).unwrap_or(0);
            let of = spec_count(&metric.name).map(|n| format!(" of {n}")).unwrap_or_default();
            let last = result
                .and_then(|r| r.measurements.last())
                .and_then(|m| m.value.clone())
                .map(|v| format!(", last {v}"))
                .unwrap_or_default();
            format!("{} {count}{of} measured{last}", metric.name)
        })
        .collect();
    format!("analysis {}: {}", run.name_any(), metrics.join("; "))
}

/// A count or limit as written (`5`, or a still unresolved `{{args.count}}`).
fn text(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

fn hash_of(rs: &ReplicaSet) -> Option<&str> {
    rs.labels().get(POD_TEMPLATE_HASH_LABEL).map(String::as_str)
}

/// The new version's ReplicaSet while it has fewer available pods than it wants.
fn replicas_not_ready(ro: &Rollout, replica_sets: &[&ReplicaSet]) -> Option<String> {
    let hash = ro.status.as_ref()?.current_pod_hash.as_deref()?;
    let rs = replica_sets.iter().find(|rs| hash_of(rs) == Some(hash))?;
    let desired = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let available = rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    (available < desired).then(|| format!("ReplicaSet {}: {available} of {desired} pods available", rs.name_any()))
}

fn traffic(ro: &Rollout) -> Option<Traffic> {
    if let Some(w) = ro.status.as_ref().and_then(|s| s.canary.as_ref()).and_then(|c| c.weights.as_ref()) {
        return Some(Traffic { canary: w.canary.weight, stable: w.stable.weight, verified: w.verified });
    }
    render::weight(ro).map(|canary| Traffic { canary, stable: 100 - canary, verified: None })
}

fn revisions(tree: &crate::RolloutTree) -> Vec<Value> {
    let causes: BTreeMap<i64, Option<String>> =
        render::revisions(tree).into_iter().map(|r| (r.revision, r.change_cause)).collect();
    let summary = render::summary(tree);
    let mut out: Vec<Value> = summary["revisions"].as_array().cloned().unwrap_or_default();
    for revision in &mut out {
        let number = revision["revision"].as_i64().unwrap_or_default();
        revision["changeCause"] = causes.get(&number).cloned().flatten().into();
        if let Some(o) = revision.as_object_mut() {
            o.remove("pods");
            o.remove("analysisRuns");
        }
    }
    out
}

/// A ReplicaSet's pod template as YAML, without what stepwise adds to it.
fn template_yaml(rs: &ReplicaSet) -> String {
    let mut template = serde_json::to_value(rs.spec.as_ref().and_then(|s| s.template.clone())).unwrap_or(Value::Null);
    if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    stepwise_api::anti_affinity::strip_json(&mut template);
    serde_yaml::to_string(&template).unwrap_or_default()
}

fn template_diff(ro: &Rollout, replica_sets: &[&ReplicaSet]) -> Option<TemplateDiff> {
    let status = ro.status.as_ref()?;
    let by_hash = |h: &str| replica_sets.iter().find(|rs| hash_of(rs) == Some(h)).copied();
    let current = by_hash(status.current_pod_hash.as_deref()?)?;
    let from = match status.stable_rs.as_deref().and_then(by_hash) {
        Some(stable) if stable.uid() != current.uid() => stable,
        _ => {
            let revision = revision_of(current.annotations());
            replica_sets
                .iter()
                .filter(|rs| revision_of(rs.annotations()) < revision)
                .max_by_key(|rs| revision_of(rs.annotations()))?
        }
    };
    Some(TemplateDiff {
        from: revision_of(from.annotations()),
        to: revision_of(current.annotations()),
        lines: diff::diff(&template_yaml(from), &template_yaml(current)),
    })
}

/// What an undo to `revision` would change in the pod template: from the current revision's
/// template to that revision's (both ReplicaSets', so both carry the API server's defaults).
pub fn undo_diff(ro: &Rollout, replica_sets: &[&ReplicaSet], revision: i64) -> Result<TemplateDiff, String> {
    let current_hash = ro.status.as_ref().and_then(|s| s.current_pod_hash.as_deref());
    let current = replica_sets
        .iter()
        .find(|rs| hash_of(rs).is_some() && hash_of(rs) == current_hash)
        .ok_or_else(|| format!("rollout {:?} has no ReplicaSet of its current revision yet", ro.name_any()))?;
    let Some(target) = replica_sets.iter().find(|rs| revision_of(rs.annotations()) == revision) else {
        let mut known: Vec<i64> = replica_sets.iter().map(|rs| revision_of(rs.annotations())).collect();
        known.sort_unstable();
        let known: Vec<String> = known.iter().map(i64::to_string).collect();
        return Err(format!(
            "rollout {:?} has no revision {revision} (its revisions: {})",
            ro.name_any(),
            known.join(", ")
        ));
    };
    Ok(TemplateDiff {
        from: revision_of(current.annotations()),
        to: revision,
        lines: diff::diff(&template_yaml(current), &template_yaml(target)),
    })
}

fn run_view(run: &AnalysisRun) -> RunView {
    let status = run.status.clone().unwrap_or_default();
    let metrics = run
        .spec
        .metrics
        .iter()
        .map(|metric| {
            let result = status.metric_results.iter().find(|r| r.name == metric.name).cloned().unwrap_or_default();
            let mut lines = vec![];
            lines.extend(
                metric.success_condition.as_deref().map(|c| bounds::bounds(c, Of::Success)).unwrap_or_default(),
            );
            lines.extend(
                metric.failure_condition.as_deref().map(|c| bounds::bounds(c, Of::Failure)).unwrap_or_default(),
            );
            MetricView {
                name: metric.name.clone(),
                phase: result.phase.to_string(),
                success_condition: metric.success_condition.clone(),
                failure_condition: metric.failure_condition.clone(),
                bounds: lines,
                count: result.count,
                failed: result.failed,
                limit: metric.failure_limit.as_ref().map(|l| format!("fails after more than {} failed", text(l))),
                message: result.message.clone(),
                measurements: result
                    .measurements
                    .iter()
                    .map(|m| MeasurementView {
                        at: m.finished_at.as_ref().or(m.started_at.as_ref()).map(|t| t.0.to_string()),
                        value: m.value.as_deref().and_then(bounds::measured_number),
                        raw: m.value.clone(),
                        phase: m.phase.to_string(),
                    })
                    .collect(),
            }
        })
        .collect();
    RunView {
        name: run.name_any(),
        phase: status.phase.map(|p| p.to_string()).unwrap_or_default(),
        message: status.message.clone(),
        revision: run.annotations().get(stepwise_api::REVISION_ANNOTATION).and_then(|r| r.parse().ok()),
        metrics,
    }
}

fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.first_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn newest_first<'a>(events: &[&'a Event]) -> Vec<&'a Event> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| std::cmp::Reverse(event_time(e)));
    sorted
}

/// How many Events the page lists.
const EVENTS_SHOWN: usize = 50;

fn events(events: &[&Event]) -> Vec<EventView> {
    newest_first(events)
        .into_iter()
        .take(EVENTS_SHOWN)
        .map(|e| EventView {
            type_: e.type_.clone().unwrap_or_else(|| "Normal".into()),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            at: event_time(e).map(|t| t.to_string()),
            count: e.count.unwrap_or(1),
        })
        .collect()
}

fn history(events: &[&Event]) -> Vec<HistoryEntry> {
    newest_first(events)
        .into_iter()
        .filter_map(|e| {
            let annotations = e.annotations();
            Some(HistoryEntry {
                at: event_time(e).map(|t| t.to_string()),
                action: annotations.get(ACTION_ANNOTATION)?.clone(),
                by: annotations.get(BY_ANNOTATION)?.clone(),
                message: e.message.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// The revisions an undo can go back to: every one but the current.
fn undo_revisions(ro: &Rollout, replica_sets: &[&ReplicaSet]) -> Vec<i64> {
    let current = ro.status.as_ref().and_then(|s| s.current_pod_hash.as_deref());
    let mut revisions: Vec<i64> = replica_sets
        .iter()
        .filter(|rs| hash_of(rs) != current)
        .map(|rs| revision_of(rs.annotations()))
        .filter(|r| *r > 0)
        .collect();
    revisions.sort_unstable_by(|a, b| b.cmp(a));
    revisions
}

/// The decision of an action made of merge patches (all but restart, undo and set-image, which
/// need more than the Rollout), as the plugin's commands decide it.
pub fn merge_decision(ro: &Rollout, action: &str) -> Option<Result<decide::Decision, String>> {
    Some(match action {
        "promote" => decide::promote(ro, false),
        "promote-full" => decide::promote(ro, true),
        "abort" => decide::abort(ro),
        "retry" => decide::retry(ro),
        "pause" => decide::set_paused(ro, true),
        "resume" => decide::set_paused(ro, false),
        _ => return None,
    })
}

/// Which subresources an action patches: (the Rollout, its status).
fn patches_needed(ro: &Rollout, action: &str) -> Result<(bool, bool), String> {
    match merge_decision(ro, action) {
        Some(decision) => decision.map(|d| (d.patches.spec.is_some(), d.patches.status.is_some())),
        None => Ok((true, false)),
    }
}

/// Each action with whether it may be taken now: the Rollout's state first (the same refusals
/// as the plugin), then what the person may do.
pub fn actions(ro: &Rollout, replica_sets: &[&ReplicaSet], access: &Access) -> BTreeMap<&'static str, ActionState> {
    ACTIONS
        .iter()
        .map(|&action| {
            let state = match (patches_needed(ro, action), access) {
                (Err(reason), _) => Err(reason),
                (Ok(_), _) if action == "undo" && undo_revisions(ro, replica_sets).is_empty() => {
                    Err("there is no other revision to go back to".to_string())
                }
                (Ok(_), Access::ReadOnly(why)) => Err(why.clone()),
                (Ok((spec, status)), Access::Acting { rollouts, status: status_access }) => {
                    let spec_ok = if spec { rollouts.clone() } else { Ok(()) };
                    let status_ok = if status { status_access.clone() } else { Ok(()) };
                    spec_ok.and(status_ok)
                }
            };
            let state = match state {
                Ok(()) => ActionState { enabled: true, reason: None },
                Err(reason) => ActionState { enabled: false, reason: Some(reason) },
            };
            (action, state)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: &str = "2026-12-07T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    /// A canary with steps setWeight 20, pause (until promoted), setWeight 50, pause 60s, at
    /// `index`, with `status` merged over a Progressing status that has observed the spec.
    fn canary(index: i32, status: Value) -> Rollout {
        let mut ro = json!({
            "apiVersion": "stepwise.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "checkout", "namespace": "shop", "generation": 2, "uid": "u1",
                         "resourceVersion": "7", "creationTimestamp": "2026-12-07T11:00:00Z"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "checkout"}},
                     "template": {"metadata": {"labels": {"app": "checkout"}}, "spec": {"containers": [{"name": "app", "image": "app:2"}]}},
                     "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "60s"}}]}}},
            "status": {"phase": "Progressing", "observedGeneration": 2, "currentStepIndex": index,
                       "stableRS": "s1", "currentPodHash": "c1"},
        });
        if let (Some(base), Some(extra)) = (ro["status"].as_object_mut(), status.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(ro).unwrap()
    }

    fn paused_at_promotion() -> Rollout {
        canary(
            1,
            json!({"phase": "Paused", "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-12-07T11:59:00Z"}]}),
        )
    }

    fn run(phase: &str, failed: i32) -> AnalysisRun {
        serde_json::from_value(json!({
            "apiVersion": "stepwise.dev/v1alpha1", "kind": "AnalysisRun",
            "metadata": {"name": "checkout-c1-2", "namespace": "shop", "creationTimestamp": "2026-12-07T11:58:00Z"},
            "spec": {"metrics": [{"name": "error-rate", "count": 5, "successCondition": "result[0] < 0.05", "failureLimit": 1,
                                  "provider": {"prometheus": {"address": "http://prometheus:9090", "query": "q"}}}]},
            "status": {"phase": phase, "metricResults": [{"name": "error-rate", "phase": phase, "count": 3, "failed": failed,
                "measurements": [{"phase": "Successful", "value": "[0.01]"}, {"phase": "Failed", "value": "[0.2]", "finishedAt": "2026-12-07T11:59:30Z"}]}]}
        }))
        .unwrap()
    }

    fn acting() -> Access {
        Access::Acting { rollouts: Ok(()), status: Ok(()) }
    }

    #[test]
    fn a_canary_paused_without_a_duration_needs_a_person_to_promote_it() {
        let attention = attention(&paused_at_promotion(), &[], now()).unwrap();
        assert_eq!(attention.reason, AttentionReason::PausedForPromotion);
        assert_eq!(attention.text, "paused at step 2/4: promote to go on");
    }

    #[test]
    fn a_timed_pause_needs_nobody_and_counts_down_to_its_end() {
        let ro = canary(
            3,
            json!({"phase": "Paused", "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-12-07T11:59:30Z"}]}),
        );
        assert_eq!(attention(&ro, &[], now()), None);
        let waiting = waiting(&ro, &[], &[], now());
        assert_eq!(
            waiting,
            vec![Waiting {
                kind: "pause",
                text: "a pause of 1m 00s".into(),
                until: Some("2026-12-07T12:00:30Z".into())
            }]
        );
    }

    #[test]
    fn an_abort_comes_before_every_other_reason() {
        let ro = canary(
            1,
            json!({"abort": true, "phase": "Degraded", "message": "Aborted: metric error-rate failed",
                                  "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-12-07T11:59:00Z"}]}),
        );
        let run = run("Failed", 2);
        let attention = attention(&ro, &[&run], now()).unwrap();
        assert_eq!(
            (attention.reason, attention.text.as_str()),
            (AttentionReason::Aborted, "Aborted: metric error-rate failed")
        );
    }

    #[test]
    fn a_running_analysis_with_a_failed_measurement_is_failing_before_it_ends() {
        let run = run("Running", 1);
        let attention = attention(&canary(2, json!({})), &[&run], now()).unwrap();
        assert_eq!(attention.reason, AttentionReason::AnalysisFailing);
        assert_eq!(attention.text, "analysis checkout-c1-2: metric error-rate failed 1 of 3 measurements");
    }

    #[test]
    fn the_progress_deadline_is_near_when_less_than_a_quarter_of_it_is_left() {
        let progressing = |since: &str| {
            canary(
                2,
                json!({"conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "lastUpdateTime": since}]}),
            )
        };
        // The default deadline is 600 s: 150 s is a quarter.
        assert_eq!(attention(&progressing("2026-12-07T11:55:00Z"), &[], now()), None);
        let near = attention(&progressing("2026-12-07T11:50:30Z"), &[], now()).unwrap();
        assert_eq!((near.reason, near.text.as_str()), (AttentionReason::DeadlineNear, "progress deadline in 30s"));
    }

    #[test]
    fn the_timeline_marks_the_steps_done_the_current_one_and_those_to_come() {
        let states: Vec<(String, &str)> =
            timeline(&paused_at_promotion()).into_iter().map(|s| (s.text, s.state)).collect();
        assert_eq!(
            states,
            vec![
                ("setWeight 20".to_string(), "done"),
                ("pause until promoted".to_string(), "current"),
                ("setWeight 50".to_string(), "next"),
                ("pause 60s".to_string(), "next"),
            ]
        );
    }

    #[test]
    fn read_only_disables_every_action_with_the_reason_why() {
        let actions = actions(&paused_at_promotion(), &[], &Access::ReadOnly("read-only".into()));
        let promote = &actions["promote"];
        assert!(!promote.enabled);
        assert_eq!(promote.reason.as_deref(), Some("read-only"));
        assert!(actions.values().all(|a| !a.enabled));
    }

    #[test]
    fn who_may_not_patch_the_status_cannot_promote_but_may_pause() {
        let access = Access::Acting { rollouts: Ok(()), status: Err("bob may not patch rollouts/status".into()) };
        let actions = actions(&paused_at_promotion(), &[], &access);
        assert_eq!(
            actions["promote"],
            ActionState { enabled: false, reason: Some("bob may not patch rollouts/status".into()) }
        );
        assert!(actions["pause"].enabled);
        assert!(!actions["undo"].enabled, "no other revision to go back to");
    }

    #[test]
    fn what_the_rollout_cannot_do_now_is_refused_with_the_plugins_reason() {
        let actions = actions(&paused_at_promotion(), &[], &acting());
        assert!(actions["promote"].enabled);
        assert!(!actions["retry"].enabled);
        assert!(actions["retry"].reason.as_deref().unwrap_or_default().contains("not aborted"));
    }

    #[test]
    fn a_metric_shows_its_measurements_and_the_threshold_of_its_condition() {
        let view = run_view(&run("Running", 1));
        let metric = &view.metrics[0];
        assert_eq!(metric.bounds, vec![Bound { value: 0.05, kind: bounds::Side::Upper, of: Of::Success }]);
        let values: Vec<Option<f64>> = metric.measurements.iter().map(|m| m.value).collect();
        assert_eq!(values, vec![Some(0.01), Some(0.2)]);
        assert_eq!(metric.limit.as_deref(), Some("fails after more than 1 failed"));
        assert_eq!(
            analysis_progress(&run("Running", 1)),
            "analysis checkout-c1-2: error-rate 3 of 5 measured, last [0.2]"
        );
    }

    fn replica_set(hash: &str, revision: i64, image: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("checkout-{hash}"), "namespace": "shop",
                         "labels": {POD_TEMPLATE_HASH_LABEL: hash}, "annotations": {stepwise_api::REVISION_ANNOTATION: revision.to_string()}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "checkout"}},
                     "template": {"metadata": {"labels": {"app": "checkout", POD_TEMPLATE_HASH_LABEL: hash}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn an_undo_shows_what_it_would_put_back_before_it_is_made() {
        let (old, new) = (replica_set("s1", 1, "app:1"), replica_set("c1", 2, "app:2"));
        let diff = undo_diff(&canary(2, json!({})), &[&old, &new], 1).unwrap();
        assert_eq!((diff.from, diff.to), (2, 1));
        let changed: Vec<String> = diff
            .lines
            .iter()
            .filter(|l| l.op == "+" || l.op == "-")
            .map(|l| format!("{}{}", l.op, l.text.trim()))
            .collect();
        assert_eq!(changed, vec!["-- image: app:2", "+- image: app:1"]);
        let unknown = undo_diff(&canary(2, json!({})), &[&old, &new], 7).unwrap_err();
        assert_eq!(unknown, "rollout \"checkout\" has no revision 7 (its revisions: 1, 2)");
    }
}
