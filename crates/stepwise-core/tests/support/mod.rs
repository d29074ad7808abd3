//! A small simulated cluster for testing the step machine: it carries out a plan's actions the
//! way the controller and Kubernetes would, and lets pods become available (or not) as time
//! passes.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use stepwise_api::{AnalysisPhase, Rollout, RolloutPhase};
use stepwise_core::{Action, AnalysisKind, Observed, ObservedAnalysisRun, ObservedReplicaSet, Plan, add_seconds, plan};

pub fn rollout(yaml: &str) -> Rollout {
    serde_yaml::from_str(yaml).expect("test rollout parses")
}

/// A Rollout with the given strategy YAML (indented under `strategy:`) and replicas.
pub fn rollout_with(replicas: i32, strategy: &str) -> Rollout {
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: app, namespace: t, generation: 1}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: demo}}}}\n  template:\n    metadata: {{labels: {{app: demo}}}}\n    spec: {{containers: [{{name: app, image: 'demo:1'}}]}}\n  strategy:\n{strategy}"
    );
    rollout(&yaml)
}

/// The analysis templates every test world has: any name a test uses.
pub fn templates() -> BTreeMap<String, stepwise_api::AnalysisTemplateSpec> {
    ["check", "smoke", "pre", "post", "bg", "a", "b", "t", "errors", "success-rate"]
        .into_iter()
        .map(|name| {
            let metric: stepwise_api::Metric =
                serde_json::from_value(serde_json::json!({"name": name, "provider": {"job": {"spec": {}}}}))
                    .expect("test metric parses");
            (name.to_string(), stepwise_api::AnalysisTemplateSpec { metrics: vec![metric], ..Default::default() })
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct World {
    pub rollout: Rollout,
    pub observed: Observed,
    pub now: Time,
    /// Pod template hashes whose pods never become ready.
    pub never_ready: BTreeSet<String>,
    /// Phase that new AnalysisRuns reach when they finish.
    pub analysis_outcome: AnalysisPhase,
    /// The traffic weight in effect at the router.
    pub router_weight: Option<i32>,
    /// The names of the header and mirror routes the router was last given.
    pub router_routes: Vec<String>,
    /// Every plan produced, for invariant checks.
    pub history: Vec<(Observed, Plan)>,
    pub events: Vec<String>,
}

impl World {
    pub fn new(rollout: Rollout) -> Self {
        let services: BTreeMap<String, Option<String>> =
            rollout.spec.strategy.service_names().into_iter().map(|s| (s.to_string(), None)).collect();
        World {
            rollout,
            observed: Observed {
                services,
                analysis_templates: templates(),
                cluster_analysis_templates: templates(),
                router_kinds: ["istio", "nginx", "traefik", "gatewayAPI", "smi", "apisix", "ambassador"]
                    .map(String::from)
                    .into(),
                header_route_kinds: ["istio", "nginx", "gatewayAPI"].map(String::from).into(),
                mirror_route_kinds: ["istio", "gatewayAPI"].map(String::from).into(),
                ping_pong_kinds: ["istio", "gatewayAPI"].map(String::from).into(),
                ..Default::default()
            },
            now: Time(Timestamp::from_second(1_800_000_000).unwrap()),
            never_ready: BTreeSet::new(),
            analysis_outcome: AnalysisPhase::Successful,
            router_weight: None,
            router_routes: Vec::new(),
            history: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn status(&self) -> stepwise_api::RolloutStatus {
        self.rollout.status.clone().unwrap_or_default()
    }

    pub fn phase(&self) -> Option<RolloutPhase> {
        self.status().phase
    }

    pub fn step(&self) -> i32 {
        self.status().current_step_index.unwrap_or(-1)
    }

    /// Plans once and carries out the plan.
    pub fn reconcile(&mut self) -> Plan {
        let p = plan(&self.rollout, &self.observed, &self.now);
        self.history.push((self.observed.clone(), p.clone()));
        self.apply(&p);
        p
    }

    pub fn apply(&mut self, p: &Plan) {
        for a in &p.actions {
            self.apply_action(a);
        }
        self.rollout.status = Some(p.status.clone());
    }

    pub fn apply_action(&mut self, a: &Action) {
        match a {
            Action::CreateReplicaSet { name, hash, revision, replicas, template, .. } => {
                self.observed.replica_sets.push(ObservedReplicaSet {
                    name: name.clone(),
                    hash: hash.clone(),
                    revision: *revision,
                    spec_replicas: *replicas,
                    // The ReplicaSet controller has not written a status yet.
                    status_stale: true,
                    template: template.clone(),
                    created: Some(self.now.clone()),
                    ..Default::default()
                });
            }
            Action::ScaleReplicaSet { name, replicas } => {
                let rs = self.observed.replica_sets.iter_mut().find(|r| &r.name == name).expect("scaled RS exists");
                // The controller writes spec only; pods come and go in pods_settle, and until
                // then the status describes the spec before.
                if rs.spec_replicas != *replicas {
                    rs.status_stale = true;
                }
                rs.spec_replicas = *replicas;
            }
            Action::SetRevision { name, revision } => {
                self.rs_mut(name).revision = *revision;
            }
            Action::SetScaleDownDeadline { name, deadline } => {
                self.rs_mut(name).scale_down_deadline = deadline.clone();
            }
            Action::SetStableSince { name, since } => {
                let rs = self.rs_mut(name);
                (rs.stable_since, rs.stable_until) = (Some(since.clone()), None);
            }
            Action::SetStableUntil { name, until } => self.rs_mut(name).stable_until = Some(until.clone()),
            Action::DeleteReplicaSet { name } => self.observed.replica_sets.retain(|r| &r.name != name),
            Action::SetServiceSelector { service, hash } => {
                self.observed.services.insert(service.clone(), Some(hash.clone()));
            }
            Action::SetTraffic(traffic) => {
                self.router_weight = Some(traffic.canary_weight);
                self.router_routes = traffic.routes.iter().map(|r| r.name().to_string()).collect();
            }
            Action::CreateAnalysisRun { kind, run } => {
                let labels = run.metadata.labels.clone().unwrap_or_default();
                self.observed.analysis_runs.push(ObservedAnalysisRun {
                    name: run.metadata.name.clone().unwrap_or_default(),
                    hash: labels.get(stepwise_api::POD_TEMPLATE_HASH_LABEL).cloned().unwrap_or_default(),
                    kind: *kind,
                    phase: AnalysisPhase::Pending,
                    message: None,
                    terminating: false,
                    created: Some(self.now.clone()),
                })
            }
            Action::TerminateAnalysisRun { name } => {
                if let Some(r) = self.observed.analysis_runs.iter_mut().find(|r| &r.name == name) {
                    r.terminating = true;
                    if !r.phase.is_completed() {
                        r.phase = AnalysisPhase::Successful;
                    }
                }
            }
            Action::DeleteAnalysisRun { name } => self.observed.analysis_runs.retain(|r| &r.name != name),
            Action::SetRoleMetadata { name, metadata, .. } => self.rs_mut(name).role_metadata = metadata.clone(),
            Action::Event { reason, message, .. } => self.events.push(format!("{reason}: {message}")),
            Action::RestartPod { .. } => {}
            Action::AddTrafficFinalizer => {
                let finalizers = self.rollout.metadata.finalizers.get_or_insert_with(Vec::new);
                finalizers.push(stepwise_core::traffic::TRAFFIC_FINALIZER.to_string());
            }
            Action::ScaleWorkload { replicas, .. } => self.observed.workload_replicas = Some(*replicas),
        }
    }

    fn rs_mut(&mut self, name: &str) -> &mut ObservedReplicaSet {
        self.observed.replica_sets.iter_mut().find(|r| r.name == name).expect("RS exists")
    }

    /// Pods are created for every ReplicaSet and become available, unless their version never
    /// becomes ready; pending analyses finish with the chosen outcome. Pods a ReplicaSet no
    /// longer wants start terminating; those that were terminating have stopped.
    pub fn pods_settle(&mut self) {
        for rs in &mut self.observed.replica_sets {
            rs.status_stale = false;
            rs.terminating = (rs.replicas - rs.spec_replicas).max(0);
            rs.replicas = rs.spec_replicas;
            if !self.never_ready.contains(&rs.hash) {
                rs.available = rs.spec_replicas;
                rs.ready = rs.spec_replicas;
            }
            rs.available = rs.available.min(rs.spec_replicas);
            rs.ready = rs.ready.min(rs.spec_replicas);
        }
    }

    /// One pod of each ReplicaSet becomes available (slow pods).
    pub fn one_pod_each(&mut self) {
        for rs in &mut self.observed.replica_sets {
            rs.status_stale = false;
            rs.terminating = (rs.replicas - rs.spec_replicas).max(0);
            rs.replicas = rs.spec_replicas;
            if !self.never_ready.contains(&rs.hash) && rs.available < rs.spec_replicas {
                rs.available += 1;
                rs.ready = rs.available;
            }
            rs.available = rs.available.min(rs.spec_replicas);
            rs.ready = rs.ready.min(rs.spec_replicas);
        }
    }

    /// Pending analyses start measuring.
    pub fn analyses_start(&mut self) {
        for r in &mut self.observed.analysis_runs {
            if r.phase == AnalysisPhase::Pending && !r.terminating {
                r.phase = AnalysisPhase::Running;
            }
        }
    }

    pub fn analyses_finish(&mut self) {
        for r in &mut self.observed.analysis_runs {
            if !r.phase.is_completed() {
                r.phase = self.analysis_outcome;
                r.message = Some(format!("metric success-rate assessed {}", self.analysis_outcome));
            }
        }
    }

    pub fn wait(&mut self, seconds: i64) {
        self.now = add_seconds(&self.now, seconds);
    }

    /// Reconcile and let pods settle until nothing changes (at most `n` rounds).
    pub fn settle(&mut self, n: usize) {
        for _ in 0..n {
            let before = (self.rollout.status.clone(), self.observed.clone());
            self.reconcile();
            self.pods_settle();
            if (self.rollout.status.clone(), self.observed.clone()) == before {
                break;
            }
        }
    }

    pub fn set_image(&mut self, image: &str) {
        let t = self.rollout.spec.template.as_mut().unwrap();
        t.spec.as_mut().unwrap().containers[0].image = Some(image.to_string());
        let g = self.rollout.metadata.generation.unwrap_or(1);
        self.rollout.metadata.generation = Some(g + 1);
    }

    pub fn hash(&self) -> String {
        self.status().current_pod_hash.unwrap()
    }

    pub fn stable(&self) -> String {
        self.status().stable_rs.unwrap()
    }

    /// (spec, available) of the ReplicaSet of a hash.
    pub fn pods(&self, hash: &str) -> (i32, i32) {
        self.observed
            .replica_sets
            .iter()
            .find(|r| r.hash == hash)
            .map(|r| (r.spec_replicas, r.available))
            .unwrap_or((0, 0))
    }

    /// The versions that have pods (terminating ones included), by pod template hash.
    pub fn versions_with_pods(&self) -> Vec<String> {
        self.observed.replica_sets.iter().filter(|r| r.replicas + r.terminating > 0).map(|r| r.hash.clone()).collect()
    }

    pub fn service(&self, name: &str) -> Option<String> {
        self.observed.services.get(name).cloned().flatten()
    }

    pub fn promote(&mut self) {
        let mut st = self.status();
        if st.pause_conditions.is_empty() {
            st.current_step_index = st.current_step_index.map(|i| i + 1);
        }
        st.pause_conditions.clear();
        self.rollout.status = Some(st);
    }

    pub fn promote_full(&mut self) {
        let mut st = self.status();
        st.promote_full = Some(true);
        self.rollout.status = Some(st);
    }

    pub fn abort(&mut self) {
        let mut st = self.status();
        st.abort = Some(true);
        self.rollout.status = Some(st);
    }

    pub fn retry(&mut self) {
        let mut st = self.status();
        st.abort = Some(false);
        self.rollout.status = Some(st);
    }

    pub fn run_of(&self, kind: AnalysisKind) -> Option<&ObservedAnalysisRun> {
        self.observed.analysis_runs.iter().rev().find(|r| r.kind == kind)
    }
}

/// The clock of the analysis tests: 2026-01-01T00:00:00Z.
pub const START: i64 = 1_767_225_600;

/// `seconds` after [`START`].
pub fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(START + seconds).unwrap())
}

/// An AnalysisRun named `run` from the YAML of its spec.
pub fn analysis_run(spec: &str) -> stepwise_api::AnalysisRun {
    let spec: stepwise_api::AnalysisRunSpec =
        serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("bad spec: {e}\n{spec}"));
    stepwise_api::AnalysisRun::new("run", spec)
}
