//! The `Rollout` resource: a Deployment replacement that releases each new pod template through a
//! list of steps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::schema;

/// Default number of replicas when `spec.replicas` is not set.
pub const DEFAULT_REPLICAS: i32 = 1;
/// Default number of old ReplicaSets kept for undo.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// Default seconds a rollout may go without progress before it is marked Degraded.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Default seconds the previous version is kept after a promotion with traffic routing or
/// blue-green.
pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;
/// Default seconds the canary or preview is kept after an abort.
pub const DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;

/// Desired state of a Rollout.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stepwise.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.template) != has(self.workloadRef)", "message": "exactly one of spec.template and spec.workloadRef must be set"},
    {"rule": "has(self.workloadRef) || has(self.selector)", "message": "spec.selector is required unless spec.workloadRef is set"},
    {"rule": "(has(self.strategy.canary) ? 1 : 0) + (has(self.strategy.blueGreen) ? 1 : 0) + (has(self.strategy.recreate) ? 1 : 0) == 1", "message": "spec.strategy must set exactly one of canary, blueGreen and recreate"},
    {"rule": "!has(self.progressDeadlineSeconds) || !has(self.minReadySeconds) || self.progressDeadlineSeconds > self.minReadySeconds", "message": "spec.progressDeadlineSeconds must be greater than spec.minReadySeconds"}
]))]
pub struct RolloutSpec {
    /// Number of desired pods. Defaults to 1. The scale subresource (and so an HPA) changes this.
    // Defaulted by the API server, so the scale subresource always finds a value and the
    // controller never writes the spec (which GitOps tools would show as drift).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = DEFAULT_REPLICAS))]
    pub replicas: Option<i32>,
    /// Label selector for the pods. It must match the template's labels and cannot change after
    /// creation. Not needed with workloadRef, which supplies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The pod template. Every change to it starts a new rollout. Exactly one of template and
    /// workloadRef is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub template: Option<PodTemplateSpec>,
    /// Takes the pod template and selector from an existing Deployment instead of `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,
    /// Seconds a new pod must be ready, without any container crashing, to count as available.
    /// Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: Option<i32>,
    /// Number of old ReplicaSets kept to allow undo. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub revision_history_limit: Option<i32>,
    /// Manual pause: while true the rollout neither scales nor advances steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Seconds a rollout may make no progress before it is marked Degraded
    /// (ProgressDeadlineExceeded). Not counted during pauses and analysis. Defaults to 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<i32>,
    /// When true, a rollout that exceeds its progress deadline is aborted, not only marked
    /// Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_abort: Option<bool>,
    /// Pods created before this time are replaced, a few at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<Time>,
    /// Going back to one of the last `revisions` versions before the stable one (an undo) skips
    /// the steps, pauses and analyses: the version is promoted as soon as its pods are available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_window: Option<RollbackWindow>,
    /// How many completed AnalysisRuns of this Rollout are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::analysis::AnalysisRunStrategy>,
    /// How a new version is released: canary, blue-green or recreate.
    pub strategy: RolloutStrategy,
}

/// Which returns to an older version are fast-tracked.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackWindow {
    /// A return to a version with fewer than this many versions between it and the stable one
    /// skips the steps (3: the three versions before the stable one). 0 turns the window off.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub revisions: i32,
}

/// A reference to the workload that supplies the pod template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.kind == 'Deployment' && (self.apiVersion == 'apps/v1' || self.apiVersion == 'apps')", "message": "spec.workloadRef must reference an apps/v1 Deployment"}
]))]
pub struct WorkloadRef {
    /// API version of the referenced workload: apps/v1.
    pub api_version: String,
    /// Kind of the referenced workload: Deployment.
    pub kind: String,
    /// Name of the referenced workload, in the Rollout's namespace.
    pub name: String,
    /// What happens to the referenced Deployment's own pods: never (default), onsuccess (scaled
    /// to zero once the Rollout is Healthy) or progressively (scaled down as the Rollout's pods
    /// become ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<WorkloadScaleDown>,
}

/// When the Deployment referenced by workloadRef is scaled down.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadScaleDown {
    /// Leave the Deployment alone.
    Never,
    /// Scale the Deployment to zero once the Rollout is Healthy.
    Onsuccess,
    /// Scale the Deployment down as the Rollout's pods become ready.
    Progressively,
}

/// The release strategy. Exactly one of canary, blueGreen and recreate is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// Canary: the new version gets a growing share of pods (and traffic) step by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    /// Blue-green: the new version is brought up beside the old one and the active Service is
    /// switched to it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
    /// Recreate: every pod of the older versions is gone before the new version's pods are
    /// created, so two versions never run at once (a Deployment's Recreate; not in Argo
    /// Rollouts). Written `recreate: {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreate: Option<RecreateStrategy>,
}

impl RolloutStrategy {
    /// Every analysis template reference the strategy holds: steps, background, pre- and
    /// post-promotion.
    pub fn analysis_template_refs(&self) -> Vec<&AnalysisTemplateRef> {
        let canary = self.canary.as_ref();
        let blue_green = self.blue_green.as_ref();
        let analyses = canary
            .and_then(|c| c.analysis.as_ref().map(|b| &b.analysis))
            .into_iter()
            .chain(canary.into_iter().flat_map(|c| c.steps.iter().flatten().filter_map(|s| s.analysis.as_ref())))
            .chain(blue_green.and_then(|b| b.pre_promotion_analysis.as_ref()))
            .chain(blue_green.and_then(|b| b.post_promotion_analysis.as_ref()));
        analyses.flat_map(|a| a.templates.iter()).collect()
    }

    /// The Services the strategy manages: canary and stable, or active and preview.
    pub fn service_names(&self) -> Vec<&str> {
        let canary = self.canary.as_ref();
        let blue_green = self.blue_green.as_ref();
        [
            canary.and_then(|c| c.canary_service.as_deref()),
            canary.and_then(|c| c.stable_service.as_deref()),
            canary.and_then(|c| c.ping_pong.as_ref()).map(|p| p.ping_service.as_str()),
            canary.and_then(|c| c.ping_pong.as_ref()).map(|p| p.pong_service.as_str()),
            blue_green.map(|b| b.active_service.as_str()),
            blue_green.and_then(|b| b.preview_service.as_deref()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The recreate strategy: the older versions are scaled to zero, the new version is scaled up
/// once none of their pods is left (terminating pods included), and it becomes stable once all
/// its pods are available. An abort, or a return to an older template, goes back the same way.
/// It has no settings: maxSurge and maxUnavailable do not apply (every old pod goes at once, and
/// no new pod starts before they are gone), and there are no steps, Services or analyses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecreateStrategy {}

/// The canary strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.canaryService) || !has(self.stableService) || self.canaryService != self.stableService", "message": "spec.strategy.canary.canaryService must differ from stableService"},
    {"rule": "!has(self.maxSurge) || !has(self.maxUnavailable) || !((self.maxSurge == 0 || self.maxSurge == '0' || self.maxSurge == '0%') && (self.maxUnavailable == 0 || self.maxUnavailable == '0' || self.maxUnavailable == '0%'))", "message": "spec.strategy.canary.maxSurge and maxUnavailable cannot both be zero"},
    {"rule": "has(self.trafficRouting) || !has(self.scaleDownDelaySeconds)", "message": "spec.strategy.canary.scaleDownDelaySeconds needs trafficRouting"},
    {"rule": "has(self.trafficRouting) || !has(self.dynamicStableScale) || !self.dynamicStableScale", "message": "spec.strategy.canary.dynamicStableScale needs trafficRouting"},
    {"rule": "!has(self.dynamicStableScale) || !self.dynamicStableScale || !has(self.scaleDownDelaySeconds)", "message": "spec.strategy.canary.dynamicStableScale cannot be combined with scaleDownDelaySeconds"},
    {"rule": "has(self.trafficRouting) || !has(self.minPodsPerReplicaSet)", "message": "spec.strategy.canary.minPodsPerReplicaSet needs trafficRouting"},
    {"rule": "has(self.trafficRouting) || !has(self.steps) || self.steps.all(s, !has(s.setCanaryScale) && !has(s.setHeaderRoute) && !has(s.setMirrorRoute))", "message": "spec.strategy.canary.steps: setCanaryScale, setHeaderRoute and setMirrorRoute need trafficRouting"},
    {"rule": "!has(self.trafficRouting) || (has(self.canaryService) && has(self.stableService)) || has(self.pingPong) || (has(self.trafficRouting.istio) && has(self.trafficRouting.istio.destinationRule))", "message": "spec.strategy.canary.trafficRouting needs canaryService and stableService, or pingPong (only Istio subset-level splitting, with a destinationRule, does without)"},
    {"rule": "!has(self.pingPong) || (!has(self.canaryService) && !has(self.stableService))", "message": "spec.strategy.canary.pingPong cannot be combined with canaryService or stableService: the ping and pong Services take both roles in turn"},
    {"rule": "!has(self.pingPong) || has(self.trafficRouting)", "message": "spec.strategy.canary.pingPong needs trafficRouting"},
    {"rule": "!has(self.steps) || self.steps.all(s, !has(s.setWeight) || s.setWeight <= (has(self.trafficRouting) && has(self.trafficRouting.maxTrafficWeight) ? self.trafficRouting.maxTrafficWeight : 100))", "message": "spec.strategy.canary.steps: setWeight must be at most 100, or at most trafficRouting.maxTrafficWeight when that is set"}
]))]
pub struct CanaryStrategy {
    /// Service whose selector stepwise points at the canary pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_service: Option<String>,
    /// Service whose selector stepwise points at the stable pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_service: Option<String>,
    /// Two Services that take the stable and canary roles in turn, instead of canaryService and
    /// stableService: at promotion the one that carries all the traffic becomes the stable one,
    /// so no selector changes under live traffic. Istio host-level, Gateway API and router
    /// plugins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_pong: Option<PingPongSpec>,
    /// The steps of a release, in order. With no steps, a new version goes straight to 100%
    /// subject to maxSurge and maxUnavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub steps: Option<Vec<CanaryStep>>,
    /// How traffic is split between stable and canary. Without it the split is approximated by
    /// the ratio of pods ("basic canary").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,
    /// Pods that may exist above the desired count during an update: a number or a percentage of
    /// replicas, rounded up. Defaults to 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_percent")]
    pub max_surge: Option<IntOrString>,
    /// Pods that may be unavailable during an update: a number or a percentage of replicas,
    /// rounded down. Defaults to 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_percent")]
    pub max_unavailable: Option<IntOrString>,
    /// Analysis that runs in the background from startingStep until the rollout is promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BackgroundAnalysis>,
    /// Seconds the previous stable pods are kept after a promotion, so that routers have
    /// propagated the change. Traffic routing only; defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// Seconds the canary pods are kept after an abort. 0 keeps them. Traffic routing only;
    /// defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: Option<i32>,
    /// How many older versions may keep their pods during scaleDownDelaySeconds at once, newest
    /// first; the others are scaled to zero at once. Unlimited when unset. Traffic routing only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_revision_limit: Option<i32>,
    /// Scale the stable pods down as the canary's traffic weight grows. Traffic routing only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_stable_scale: Option<bool>,
    /// Any non-zero canary or stable pod count is raised to at least this. Traffic routing only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_pods_per_replica_set: Option<i32>,
    /// Labels and annotations added to canary pods while they are the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_metadata: Option<PodMetadata>,
    /// Labels and annotations added to stable pods while they are stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_metadata: Option<PodMetadata>,
    /// Keeps the new version's pods off the nodes that run the stable version's pods, so that a
    /// bad version cannot take a node's worth of both down at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<AntiAffinity>,
    /// When a step's canary pod count counts as reached: by default when all of the canary's pods
    /// for that step are available; with this, once that many of them are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_progress_threshold: Option<ReplicaProgressThreshold>,
}

/// The two Services of `pingPong`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.pingService != self.pongService", "message": "spec.strategy.canary.pingPong.pingService must differ from pongService"}
]))]
pub struct PingPongSpec {
    /// The Service that is stable first (before any promotion).
    #[schemars(length(min = 1))]
    pub ping_service: String,
    /// The Service that is the canary first.
    #[schemars(length(min = 1))]
    pub pong_service: String,
}

/// Which of the `pingPong` Services is stable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PingPong {
    /// pingService.
    Ping,
    /// pongService.
    Pong,
}

impl PingPong {
    /// The other Service's role.
    pub fn other(self) -> PingPong {
        match self {
            PingPong::Ping => PingPong::Pong,
            PingPong::Pong => PingPong::Ping,
        }
    }
}

impl CanaryStrategy {
    /// The (canary, stable) Services: canaryService and stableService, or with pingPong the
    /// Services in the roles `stable_ping_pong` gives them (ping is stable until a promotion says
    /// otherwise).
    pub fn services_in_roles(&self, stable_ping_pong: Option<PingPong>) -> (Option<&str>, Option<&str>) {
        let Some(pp) = &self.ping_pong else {
            return (self.canary_service.as_deref(), self.stable_service.as_deref());
        };
        let (ping, pong) = (pp.ping_service.as_str(), pp.pong_service.as_str());
        match stable_ping_pong.unwrap_or(PingPong::Ping) {
            PingPong::Ping => (Some(pong), Some(ping)),
            PingPong::Pong => (Some(ping), Some(pong)),
        }
    }
}

/// A pod anti-affinity between the new version's pods and the stable version's, on
/// `kubernetes.io/hostname`, added to the new ReplicaSet's pod template (never to the
/// Rollout's). Exactly one of the two fields is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.preferredDuringSchedulingIgnoredDuringExecution) != has(self.requiredDuringSchedulingIgnoredDuringExecution)", "message": "antiAffinity must set exactly one of preferredDuringSchedulingIgnoredDuringExecution and requiredDuringSchedulingIgnoredDuringExecution"}
]))]
pub struct AntiAffinity {
    /// The scheduler prefers other nodes, with this weight, but may still use a stable pod's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_during_scheduling_ignored_during_execution: Option<PreferredAntiAffinity>,
    /// The new pods never share a node with a stable pod; they stay Pending when no node is free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<RequiredAntiAffinity>,
}

/// A preferred anti-affinity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferredAntiAffinity {
    /// The weight of the preference for the scheduler, 1 to 100.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
}

/// A required anti-affinity; it has no settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RequiredAntiAffinity {}

/// How many of a step's canary pods must be available for the step's pod count to be reached.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'Percent' || self.value <= 100", "message": "replicaProgressThreshold.value is a percentage: at most 100 when type is Percent"}
]))]
pub struct ReplicaProgressThreshold {
    /// `Percent` of the step's canary pods (rounded up), or a number of `Pods`.
    #[serde(rename = "type")]
    pub threshold_type: ReplicaProgressThresholdType,
    /// The percentage or the number of pods; at least one pod is always waited for.
    #[schemars(range(min = 1))]
    pub value: i32,
}

/// The unit of a replica progress threshold.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReplicaProgressThresholdType {
    /// A percentage of the step's canary pods.
    #[default]
    Percent,
    /// A number of pods.
    Pods,
}

/// One canary step. At most one of setWeight, pause, analysis and experiment is set (as in Argo);
/// setCanaryScale and the routes may come with any of them, and are carried out first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.analysis) ? 1 : 0) + (has(self.experiment) ? 1 : 0) <= 1 && (has(self.setWeight) || has(self.pause) || has(self.analysis) || has(self.experiment) || has(self.setCanaryScale) || has(self.setHeaderRoute) || has(self.setMirrorRoute) || has(self.plugin))", "message": "each step must set one of setWeight, pause, analysis, experiment, setCanaryScale, setHeaderRoute, setMirrorRoute and plugin, and at most one of setWeight, pause, analysis and experiment"}
]))]
pub struct CanaryStep {
    /// Weight of the traffic (and, without traffic routing, of the pods) for the canary: 0 to
    /// 100, or to trafficRouting.maxTrafficWeight when that is set (checked by the strategy's
    /// rules, which see both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub set_weight: Option<i32>,
    /// Wait: with a duration for that long, without one until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStep>,
    /// Sets the canary's pod count independently of its traffic weight. Traffic routing only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_canary_scale: Option<SetCanaryScale>,
    /// Runs an analysis and waits for its verdict: Successful advances, Failed or Error aborts,
    /// Inconclusive pauses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysis>,
    /// Routes requests that match headers to the canary. Traffic routing only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<SetHeaderRoute>,
    /// Mirrors matching requests to the canary. Traffic routing only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_mirror_route: Option<SetMirrorRoute>,
    /// An Argo Rollouts experiment step, kept as written so that Argo manifests apply; stepwise
    /// runs no experiments, so a Rollout with one is refused as InvalidSpec, naming the step,
    /// before any pod moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub experiment: Option<serde_json::Value>,
    /// An Argo Rollouts step plugin, kept as written; stepwise runs no step plugins yet, so a
    /// Rollout with one is refused as InvalidSpec, naming the step, before any pod moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub plugin: Option<serde_json::Value>,
}

/// A pause step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseStep {
    /// How long to wait (`30s`, `5m`, or seconds). Without it the rollout waits for promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// The canary pod count of a setCanaryScale step. Exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.replicas) ? 1 : 0) + (has(self.weight) ? 1 : 0) + (has(self.matchTrafficWeight) && self.matchTrafficWeight ? 1 : 0) == 1", "message": "setCanaryScale must set exactly one of replicas, weight and matchTrafficWeight: true"}
]))]
pub struct SetCanaryScale {
    /// An absolute number of canary pods. It may exceed spec.replicas, as in Argo Rollouts (a
    /// larger canary, for example to load-test it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// A percentage of spec.replicas, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<i32>,
    /// When true, the canary's pod count follows its traffic weight again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_traffic_weight: Option<bool>,
}

/// A header-based route to the canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetHeaderRoute {
    /// Name of the route; it must be listed in trafficRouting.managedRoutes.
    pub name: String,
    /// Header conditions; all must match. Without any, the route is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub r#match: Option<Vec<HeaderRoutingMatch>>,
}

/// One header condition of a header route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRoutingMatch {
    /// Name of the HTTP header.
    pub header_name: String,
    /// How the header's value must match.
    pub header_value: StringMatch,
}

/// A string condition. Exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.exact) ? 1 : 0) + (has(self.prefix) ? 1 : 0) + (has(self.regex) ? 1 : 0) == 1", "message": "a string match must set exactly one of exact, prefix and regex"}
]))]
pub struct StringMatch {
    /// The value must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value must start with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A mirror route to the canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetMirrorRoute {
    /// Name of the route; it must be listed in trafficRouting.managedRoutes.
    pub name: String,
    /// Request conditions; a request matching any of them is mirrored. Without any, the route is
    /// removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub r#match: Option<Vec<RouteMatch>>,
    /// Percentage of the matching requests that are mirrored. Defaults to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percentage: Option<i32>,
}

/// A header or mirror route as a step asks for it: what the controller hands a router (not a
/// field of the CRD).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum RouteRequest {
    /// Requests whose headers match all conditions go to the canary.
    Header(SetHeaderRoute),
    /// Requests matching any condition are copied to the canary (its answers are discarded).
    Mirror(SetMirrorRoute),
}

impl RouteRequest {
    /// The route's name, one of `trafficRouting.managedRoutes`.
    pub fn name(&self) -> &str {
        match self {
            RouteRequest::Header(r) => &r.name,
            RouteRequest::Mirror(r) => &r.name,
        }
    }
}

/// A request condition of a mirror route; every field that is set must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// The HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<StringMatch>,
    /// Header conditions, by header name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 8))]
    pub headers: Option<BTreeMap<String, StringMatch>>,
}

/// Labels and annotations put on pods while they hold a role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    /// Labels to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// How traffic is split between the stable and canary Services. Exactly one router is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::names_a_router)]
pub struct TrafficRouting {
    /// Istio VirtualService (and optionally DestinationRule subsets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioTrafficRouting>,
    /// nginx ingress: a generated canary Ingress with canary annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<NginxTrafficRouting>,
    /// Traefik weighted TraefikService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traefik: Option<TraefikTrafficRouting>,
    /// Gateway API HTTPRoute backendRef weights.
    #[serde(default, rename = "gatewayAPI", skip_serializing_if = "Option::is_none")]
    pub gateway_api: Option<GatewayApiTrafficRouting>,
    /// SMI: a TrafficSplit between the canary and stable Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smi: Option<SmiTrafficRouting>,
    /// Apache APISIX: the backend weights of an ApisixRoute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apisix: Option<ApisixTrafficRouting>,
    /// Ambassador (Emissary-ingress): a canary Mapping beside each named Mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ambassador: Option<AmbassadorTrafficRouting>,
    /// AWS Load Balancer Controller. Accepted so that Argo manifests apply; this build cannot
    /// drive it (it needs AWS), so a Rollout naming it is InvalidSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alb: Option<AlbTrafficRouting>,
    /// AWS App Mesh. Accepted so that Argo manifests apply; this build cannot drive it (it needs
    /// AWS), so a Rollout naming it is InvalidSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_mesh: Option<AppMeshTrafficRouting>,
    /// Out-of-process router plugins, by plugin name, with their configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::plugin_configs")]
    pub plugins: Option<BTreeMap<String, serde_json::Value>>,
    /// Routes stepwise may create for setHeaderRoute and setMirrorRoute steps, in precedence
    /// order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_routes: Option<Vec<ManagedRoute>>,
    /// The weight that means "all traffic". Defaults to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_traffic_weight: Option<i32>,
}

impl TrafficRouting {
    /// The fields of `trafficRouting` that are settings, not routers: every other field is a
    /// router (or `plugins`, a map of them).
    pub const SETTINGS: [&str; 2] = ["managedRoutes", "maxTrafficWeight"];

    /// The routers it names, by their field (`istio`, `gatewayAPI`, …), a plugin as
    /// `plugins.<name>`. Read from the fields themselves, so that a router added to this type is
    /// named without another list to keep.
    pub fn named(&self) -> Vec<String> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) else { return Vec::new() };
        let mut named = Vec::new();
        for (field, value) in fields {
            match value {
                _ if Self::SETTINGS.contains(&field.as_str()) => {}
                serde_json::Value::Object(plugins) if field == "plugins" => {
                    named.extend(plugins.keys().map(|name| format!("plugins.{name}")));
                }
                _ => named.push(field),
            }
        }
        named
    }
}

/// A route stepwise may create and remove.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRoute {
    /// Name of the route.
    pub name: String,
}

/// Istio traffic routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioTrafficRouting {
    /// The VirtualService whose routes are split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<IstioVirtualService>,
    /// Several VirtualServices whose routes are split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_services: Option<Vec<IstioVirtualService>>,
    /// For subset-level splitting: the DestinationRule and its canary and stable subsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<IstioDestinationRule>,
}

/// A VirtualService and the routes in it that stepwise splits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioVirtualService {
    /// Name of the VirtualService.
    pub name: String,
    /// Names of its HTTP routes to split; may be omitted when it has exactly one HTTP route and
    /// no tlsRoutes or tcpRoutes are named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    /// Its TLS routes to split, each found by port and SNI hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_routes: Option<Vec<IstioTlsRoute>>,
    /// Its TCP routes to split, each found by port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_routes: Option<Vec<IstioTcpRoute>>,
}

/// A TLS route of a VirtualService, found by what its `match` holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioTlsRoute {
    /// The port a `match` of the route names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub port: Option<i64>,
    /// The SNI hosts a `match` of the route lists, all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni_hosts: Option<Vec<String>>,
}

/// A TCP route of a VirtualService, found by the port its `match` names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioTcpRoute {
    /// The port a `match` of the route names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub port: Option<i64>,
}

/// A DestinationRule with canary and stable subsets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioDestinationRule {
    /// Name of the DestinationRule.
    pub name: String,
    /// Name of the subset for the canary.
    pub canary_subset_name: String,
    /// Name of the subset for the stable version.
    pub stable_subset_name: String,
    /// Other subsets of the DestinationRule that stepwise leaves as they are (accepted for Argo
    /// manifests: stepwise never writes a subset it does not manage anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_subset_names: Option<Vec<String>>,
}

/// nginx ingress traffic routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NginxTrafficRouting {
    /// The Ingress that routes to the stable Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_ingress: Option<String>,
    /// Several Ingresses that route to the stable Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_ingresses: Option<Vec<String>>,
    /// Prefix of the nginx annotations. Defaults to nginx.ingress.kubernetes.io.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_prefix: Option<String>,
    /// Extra annotations for the generated canary Ingress; a key without a `/` gets the
    /// annotation prefix (`canary-by-header` becomes `nginx.ingress.kubernetes.io/canary-by-header`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_ingress_annotations: Option<BTreeMap<String, String>>,
    /// Annotations for the generated canary Ingress, as written (full keys); they override
    /// additionalIngressAnnotations, but never the canary and canary-weight annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ingress_annotations: Option<BTreeMap<String, String>>,
}

/// Traefik traffic routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraefikTrafficRouting {
    /// Name of the weighted TraefikService.
    pub weighted_traefik_service_name: String,
}

/// Gateway API traffic routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiTrafficRouting {
    /// Name of the HTTPRoute whose backendRef weights are set.
    #[serde(default, rename = "httpRoute", skip_serializing_if = "Option::is_none")]
    pub http_route: Option<String>,
    /// Several HTTPRoutes whose backendRef weights are set.
    #[serde(default, rename = "httpRoutes", skip_serializing_if = "Option::is_none")]
    pub http_routes: Option<Vec<String>>,
    /// Name of a GRPCRoute whose backendRef weights are set.
    #[serde(default, rename = "grpcRoute", skip_serializing_if = "Option::is_none")]
    pub grpc_route: Option<String>,
    /// Several GRPCRoutes whose backendRef weights are set.
    #[serde(default, rename = "grpcRoutes", skip_serializing_if = "Option::is_none")]
    pub grpc_routes: Option<Vec<String>>,
    /// Name of a TCPRoute whose backendRef weights are set.
    #[serde(default, rename = "tcpRoute", skip_serializing_if = "Option::is_none")]
    pub tcp_route: Option<String>,
    /// Several TCPRoutes whose backendRef weights are set.
    #[serde(default, rename = "tcpRoutes", skip_serializing_if = "Option::is_none")]
    pub tcp_routes: Option<Vec<String>>,
    /// Namespace of the routes. Defaults to the Rollout's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// SMI traffic routing: stepwise owns a TrafficSplit (split.smi-spec.io) that divides the root
/// Service's traffic between the canary and stable Services.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmiTrafficRouting {
    /// The Service clients call, which the TrafficSplit divides. Defaults to the stableService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_service: Option<String>,
    /// Name of the TrafficSplit. Defaults to the Rollout's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_split_name: Option<String>,
}

/// Apache APISIX traffic routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixTrafficRouting {
    /// The ApisixRoute whose backend weights are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<ApisixRoute>,
}

/// An ApisixRoute and the HTTP rules in it that stepwise splits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApisixRoute {
    /// Name of the ApisixRoute.
    pub name: String,
    /// Names of its HTTP rules to split; may be omitted when it has exactly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
}

/// Ambassador (Emissary-ingress) traffic routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmbassadorTrafficRouting {
    /// Names of the Mappings to the stable Service; each gets a canary Mapping beside it.
    #[schemars(length(min = 1))]
    pub mappings: Vec<String>,
}

/// AWS Load Balancer Controller traffic routing (accepted, not driven: see
/// `TrafficRouting::alb`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlbTrafficRouting {
    /// The Ingress whose actions are split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// Several Ingresses whose actions are split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingresses: Option<Vec<String>>,
    /// The Service port the Ingresses name.
    #[schemars(range(min = 0, max = 65535))]
    pub service_port: i32,
    /// The Service the Ingress action names, when not the stableService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_service: Option<String>,
    /// Prefix of the ALB annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_prefix: Option<String>,
    /// Target group stickiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness_config: Option<AlbStickinessConfig>,
}

/// Target group stickiness of the ALB router.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlbStickinessConfig {
    /// Whether stickiness is on.
    pub enabled: bool,
    /// How long a client sticks to a target group, in seconds.
    #[schemars(range(min = 1, max = 604800))]
    pub duration_seconds: i64,
}

/// AWS App Mesh traffic routing (accepted, not driven: see `TrafficRouting::app_mesh`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppMeshTrafficRouting {
    /// The virtual service and its routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<AppMeshVirtualService>,
    /// The canary and stable virtual nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_node_group: Option<AppMeshVirtualNodeGroup>,
}

/// An App Mesh virtual service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppMeshVirtualService {
    /// Name of the virtual service.
    pub name: String,
    /// Names of its routes to split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
}

/// The App Mesh virtual nodes of the canary and stable versions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppMeshVirtualNodeGroup {
    /// The canary's virtual node.
    pub canary_virtual_node_ref: AppMeshVirtualNodeRef,
    /// The stable version's virtual node.
    pub stable_virtual_node_ref: AppMeshVirtualNodeRef,
}

/// A reference to an App Mesh virtual node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppMeshVirtualNodeRef {
    /// Name of the virtual node.
    pub name: String,
}

/// Analysis that runs in the background during a canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundAnalysis {
    /// The templates, arguments and options of the analysis.
    #[serde(flatten)]
    pub analysis: RolloutAnalysis,
    /// Index of the step from which the analysis runs. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_step: Option<i32>,
}

/// An analysis started by a Rollout: which templates, with which arguments.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysis {
    /// The AnalysisTemplates or ClusterAnalysisTemplates whose metrics are combined.
    #[schemars(length(min = 1, max = 20))]
    pub templates: Vec<AnalysisTemplateRef>,
    /// Values for the templates' arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<AnalysisRunArgument>>,
    /// Metrics whose results are recorded but never fail the analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Vec<crate::analysis::DryRun>>,
    /// How many measurements are kept per metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement_retention: Option<Vec<crate::analysis::MeasurementRetention>>,
    /// Labels and annotations for the AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<PodMetadata>,
}

/// A reference to an analysis template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateRef {
    /// Name of the template.
    pub template_name: String,
    /// True for a ClusterAnalysisTemplate, false (default) for an AnalysisTemplate in the
    /// Rollout's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_scope: Option<bool>,
}

/// An argument given by the Rollout to an analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.value) != has(self.valueFrom)", "message": "an argument sets exactly one of value and valueFrom"}
]))]
pub struct AnalysisRunArgument {
    /// Name of the argument.
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where the value comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ArgumentValueFrom>,
}

/// The source of a Rollout-side argument value. Exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgumentValueFrom {
    /// The pod template hash of the stable or the latest (canary) version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash_value: Option<PodTemplateHashValue>,
    /// A field of the Rollout, such as metadata.name or metadata.labels['app'].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldRef>,
}

/// Which pod template hash an argument takes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PodTemplateHashValue {
    /// The stable version's hash.
    Stable,
    /// The newest version's hash.
    Latest,
}

/// A reference to a field of an object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    /// The path of the field, such as metadata.name.
    pub field_path: String,
}

/// The blue-green strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.previewService) || self.previewService != self.activeService", "message": "spec.strategy.blueGreen.previewService must differ from activeService"},
    {"rule": "!has(self.autoPromotionSeconds) || !has(self.autoPromotionEnabled) || self.autoPromotionEnabled", "message": "spec.strategy.blueGreen.autoPromotionSeconds has no effect when autoPromotionEnabled is false"}
]))]
pub struct BlueGreenStrategy {
    /// Service that receives production traffic; switched to the new version on promotion.
    pub active_service: String,
    /// Service that points at the new version as soon as it exists, for testing before
    /// promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// Pods of the new version before promotion. Defaults to spec.replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub preview_replica_count: Option<i32>,
    /// Promote automatically once the new version is available. Defaults to true; false waits
    /// for promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_enabled: Option<bool>,
    /// Promote automatically this many seconds after the new version became available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub auto_promotion_seconds: Option<i32>,
    /// Seconds the previous version is kept after the switch. Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// How many older versions may keep their pods during scaleDownDelaySeconds at once, newest
    /// first; the others are scaled to zero at once (as soon as no Service selects them).
    /// Unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_revision_limit: Option<i32>,
    /// Seconds the new version is kept after an abort. 0 keeps it. Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: Option<i32>,
    /// Analysis that must succeed before the active Service is switched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<RolloutAnalysis>,
    /// Analysis that must succeed after the switch before the new version counts as stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<RolloutAnalysis>,
    /// Pods that may be unavailable while the rollout restarts pods. Defaults to 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_percent")]
    pub max_unavailable: Option<IntOrString>,
    /// Labels and annotations added to the pods the active Service selects, while it selects
    /// them; changed in place (no restart) when the version stops being active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_metadata: Option<PodMetadata>,
    /// Labels and annotations added to the pods of the new version while it is not yet active;
    /// changed in place (no restart) when it becomes active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_metadata: Option<PodMetadata>,
    /// Keeps the new version's pods off the nodes that run the active version's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<AntiAffinity>,
}

/// Observed state of a Rollout, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Healthy, Progressing, Paused or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,
    /// Why the rollout is in its phase, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The latest observations of the rollout's state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RolloutCondition>,
    /// The metadata.generation that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Index of the current canary step; equal to the number of steps when all are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_index: Option<i32>,
    /// Hash of the step list that currentStepIndex refers to; a change of steps restarts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_hash: Option<String>,
    /// Why the rollout is paused by the controller, and since when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pause_conditions: Vec<PauseCondition>,
    /// True once the controller paused the rollout; stays true until it processes a promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_pause: Option<bool>,
    /// Set to true (by the user or the controller) to abort the update and return to stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<bool>,
    /// When the update was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_at: Option<Time>,
    /// Set to true to skip all remaining steps, pauses and analyses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_full: Option<bool>,
    /// Pod template hash of the stable version.
    #[serde(default, rename = "stableRS", skip_serializing_if = "Option::is_none")]
    pub stable_rs: Option<String>,
    /// Pod template hash of the newest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_pod_hash: Option<String>,
    /// Revision number of the newest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<i64>,
    /// Pods of all versions, as their ReplicaSets report them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods of the newest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// Ready pods of all versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Available pods of all versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Pods counted by the scale subresource: all versions for a canary, the active version for
    /// blue-green.
    #[serde(default, rename = "HPAReplicas", skip_serializing_if = "Option::is_none")]
    pub hpa_replicas: Option<i32>,
    /// Label selector (as a string) that the scale subresource reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The spec.restartAt that has been carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<Time>,
    /// Canary-specific status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// Blue-green-specific status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStatus>,
    /// The generation of the Deployment referenced by workloadRef that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_observed_generation: Option<i64>,
    /// The notifications due and the last ones delivered (docs/notifications.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<crate::notifications::NotificationsStatus>,
}

/// The phase of a Rollout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutPhase {
    /// The newest version is fully promoted and available.
    Healthy,
    /// An update is under way.
    Progressing,
    /// The update waits for a user or for a timer.
    Paused,
    /// The update was aborted, timed out or the spec is invalid.
    Degraded,
}

impl std::fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RolloutPhase::Healthy => "Healthy",
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Paused => "Paused",
            RolloutPhase::Degraded => "Degraded",
        })
    }
}

/// A condition of a Rollout.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCondition {
    /// Type of the condition: Available, Progressing, Paused, Completed, Healthy or InvalidSpec.
    pub r#type: String,
    /// True, False or Unknown.
    pub status: String,
    /// A one-word CamelCase reason for the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the condition last changed status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// When the condition was last updated; for Progressing, the last progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
}

/// Why and since when the controller paused a rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseCondition {
    /// CanaryPauseStep, BlueGreenPause or InconclusiveAnalysisRun.
    pub reason: PauseReason,
    /// When the pause began.
    pub start_time: Time,
}

/// Why the controller paused a rollout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PauseReason {
    /// A pause step.
    CanaryPauseStep,
    /// Blue-green waits before switching the active Service.
    BlueGreenPause,
    /// An analysis was inconclusive; a person decides.
    InconclusiveAnalysisRun,
}

/// Canary-specific status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The AnalysisRun of the current analysis step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    /// The background AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_background_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    /// The traffic weights last set through the router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<TrafficWeights>,
    /// The header and mirror routes last made through the router, in precedence order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_routes: Option<Vec<ManagedRouteStatus>>,
    /// With pingPong: which of the two Services is stable, `ping` or `pong`. They swap at each
    /// promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_ping_pong: Option<PingPong>,
}

/// A header or mirror route made through the router.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRouteStatus {
    /// Name of the route, one of trafficRouting.managedRoutes.
    pub name: String,
    /// Index of the step that asked for it (a setHeaderRoute or setMirrorRoute step).
    pub step: i32,
}

/// Traffic weights as set through the router.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficWeights {
    /// The canary's weight and destination.
    pub canary: WeightDestination,
    /// The stable version's weight and destination.
    pub stable: WeightDestination,
    /// Whether the router confirmed that the weights are in effect; absent when it cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

/// A weight and the pods that receive it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeightDestination {
    /// Traffic weight.
    pub weight: i32,
    /// Pod template hash of the receiving pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash: Option<String>,
    /// Service of the receiving pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

/// An AnalysisRun started by the rollout and its phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysisRunStatus {
    /// Name of the AnalysisRun.
    pub name: String,
    /// Its phase as last seen.
    pub status: crate::analysis::AnalysisPhase,
    /// Its message as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A person promoted past this run's Inconclusive result, so it no longer holds the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<bool>,
}

/// Blue-green-specific status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStatus {
    /// Pod template hash the preview Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_selector: Option<String>,
    /// Pod template hash the active Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_selector: Option<String>,
    /// True once promotion began and the preview is being scaled to full size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_preview_check_point: Option<bool>,
    /// The pre-promotion AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    /// The post-promotion AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis_run_status: Option<RolloutAnalysisRunStatus>,
}
