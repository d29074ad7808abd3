//! Prometheus metrics of the controller.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use stepwise_api::RolloutPhase;

/// Label of a result: the weight reads'.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// What came of it.
    pub result: String,
}

/// Labels of a notification attempt: its trigger, service and what came of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// The trigger (`on-rollout-aborted`).
    pub trigger: String,
    /// The service, as the configuration names it.
    pub service: String,
    /// sent, retried (failed, to be tried again) or failed (given up on).
    pub result: &'static str,
}

/// Which of the controller's two loops reconciled.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Loop {
    /// The Rollout controller.
    Rollout,
    /// The AnalysisRun controller.
    AnalysisRun,
}

impl Loop {
    fn name(self) -> &'static str {
        match self {
            Loop::Rollout => "rollout",
            Loop::AnalysisRun => "analysisrun",
        }
    }
}

/// Labels of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// rollout or analysisrun.
    pub controller: &'static str,
    /// ok or error.
    pub result: &'static str,
}

/// Label of the reconcile duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// rollout or analysisrun.
    pub controller: &'static str,
}

/// Label of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The error's kind.
    pub kind: String,
}

/// Label of the phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// Healthy, Progressing, Paused or Degraded.
    pub phase: String,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    duration: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    errors: Family<KindLabel, Counter>,
    api_errors: Family<KindLabel, Counter>,
    writes: Counter,
    rollouts: Family<PhaseLabel, Gauge>,
    phases: Mutex<HashMap<String, RolloutPhase>>,
    leader: Gauge,
    weight_reads: Family<ResultLabel, Counter>,
    notifications: Family<NotificationLabels, Counter>,
}

fn reconcile_buckets() -> Histogram {
    Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("stepwise");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram, fn() -> Histogram>::new_with_constructor(reconcile_buckets);
        let errors = Family::<KindLabel, Counter>::default();
        let api_errors = Family::<KindLabel, Counter>::default();
        let writes = Counter::default();
        let rollouts = Family::<PhaseLabel, Gauge>::default();
        let leader = Gauge::default();
        let weight_reads = Family::<ResultLabel, Counter>::default();
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles, by controller (rollout, analysisrun) and result",
            reconciles.clone(),
        );
        registry.register("reconcile_duration_seconds", "Time one reconcile takes, by controller", duration.clone());
        registry.register("errors", "Reconcile errors, by kind", errors.clone());
        registry.register(
            "api_errors",
            "Error answers of the API server, by kind, each retry counted (throttling the client's retries absorb included)",
            api_errors.clone(),
        );
        registry.register("api_writes", "Writes to the API server (creates, patches, deletes)", writes.clone());
        registry.register("rollouts", "Rollouts by phase", rollouts.clone());
        registry.register("leader", "1 while this instance holds the leader lease", leader.clone());
        registry.register(
            "traffic_weight_reads",
            "Weights read back from the routers, by result: in_effect, not_in_effect (another weight, or routes that disagree), unknown",
            weight_reads.clone(),
        );
        registry.register(
            "notifications",
            "Notification attempts, by trigger, service and result: sent, retried, failed (given up on), skipped (no `when` of the trigger held)",
            notifications.clone(),
        );
        Metrics {
            registry,
            reconciles,
            duration,
            errors,
            api_errors,
            writes,
            rollouts,
            phases: Mutex::new(HashMap::new()),
            leader,
            weight_reads,
            notifications,
        }
    }
}

impl Metrics {
    /// Records a finished reconcile of one of the two loops.
    pub fn reconciled(&self, by: Loop, seconds: f64, error: Option<&str>, writes: usize) {
        let controller = by.name();
        self.duration.get_or_create(&ControllerLabel { controller }).observe(seconds);
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles.get_or_create(&ReconcileLabels { controller, result }).inc();
        if let Some(kind) = error {
            self.errors.get_or_create(&KindLabel { kind: kind.into() }).inc();
        }
        self.writes.inc_by(writes as u64);
    }

    /// Records a weight read back from the routers.
    pub fn weight_read(&self, verified: Option<bool>) {
        let result = match verified {
            Some(true) => "in_effect",
            Some(false) => "not_in_effect",
            None => "unknown",
        };
        self.weight_reads.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    /// Records an attempt to send a notification.
    pub fn notification(&self, trigger: &str, service: &str, result: &'static str) {
        let labels = NotificationLabels { trigger: trigger.into(), service: service.into(), result };
        self.notifications.get_or_create(&labels).inc();
    }

    /// Records an answer of the API server: an error one (4xx, 5xx) is counted by kind.
    pub fn api_answer(&self, code: u16) {
        if code >= 400 {
            self.api_errors.get_or_create(&KindLabel { kind: crate::error::status_kind(code).into() }).inc();
        }
    }

    /// The key of a Rollout in the phase gauge: `namespace/name`.
    pub fn rollout_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
        format!("{}/{}", meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
    }

    /// Records the phase of a Rollout (None once it is deleted).
    pub fn set_phase(&self, key: &str, phase: Option<RolloutPhase>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        match phase {
            Some(p) => phases.insert(key.to_string(), p),
            None => phases.remove(key),
        };
    }

    /// Forgets the phase of every Rollout whose key (`namespace/name`) `keep` refuses: Rollouts
    /// deleted without the controller reconciling them again (gone from the cache at once, or
    /// while the watch was down, so that only a relist tells).
    pub fn retain_phases(&self, keep: impl Fn(&str) -> bool) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        phases.retain(|key, _| keep(key));
    }

    /// Whether this instance leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        {
            let phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
            for p in [RolloutPhase::Healthy, RolloutPhase::Progressing, RolloutPhase::Paused, RolloutPhase::Degraded] {
                let n = phases.values().filter(|v| **v == p).count();
                self.rollouts.get_or_create(&PhaseLabel { phase: p.to_string() }).set(n as i64);
            }
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_of_the_api_server_are_counted_by_kind_and_others_not_at_all() {
        let metrics = Metrics::default();
        for code in [200, 201, 429, 429, 409, 500, 503, 404, 403] {
            metrics.api_answer(code);
        }
        let text = metrics.encode();
        for (kind, n) in [("throttled", 2), ("conflict", 1), ("server_error", 2), ("not_found", 1), ("refused", 1)] {
            assert!(text.contains(&format!("stepwise_api_errors_total{{kind=\"{kind}\"}} {n}\n")), "{kind}: {text}");
        }
        assert_eq!(text.matches("stepwise_api_errors_total{").count(), 5, "{text}");
    }

    #[test]
    fn reconciles_are_counted_by_the_loop_that_made_them() {
        let metrics = Metrics::default();
        metrics.reconciled(Loop::Rollout, 0.002, None, 2);
        metrics.reconciled(Loop::Rollout, 0.002, Some("conflict"), 0);
        metrics.reconciled(Loop::AnalysisRun, 0.003, None, 1);
        let text = metrics.encode();
        for line in [
            "stepwise_reconciles_total{controller=\"rollout\",result=\"ok\"} 1\n",
            "stepwise_reconciles_total{controller=\"rollout\",result=\"error\"} 1\n",
            "stepwise_reconciles_total{controller=\"analysisrun\",result=\"ok\"} 1\n",
            "stepwise_reconcile_duration_seconds_count{controller=\"analysisrun\"} 1\n",
            "stepwise_reconcile_duration_seconds_count{controller=\"rollout\"} 2\n",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }

    #[test]
    fn a_forgotten_rollout_is_no_longer_counted_in_its_phase() {
        let metrics = Metrics::default();
        metrics.set_phase("ns/kept", Some(RolloutPhase::Healthy));
        metrics.set_phase("ns/deleted", Some(RolloutPhase::Healthy));
        metrics.set_phase("ns/paused", Some(RolloutPhase::Paused));
        assert!(metrics.encode().contains("stepwise_rollouts{phase=\"Healthy\"} 2"));
        metrics.retain_phases(|key| key != "ns/deleted");
        let text = metrics.encode();
        assert!(text.contains("stepwise_rollouts{phase=\"Healthy\"} 1"), "{text}");
        assert!(text.contains("stepwise_rollouts{phase=\"Paused\"} 1"), "{text}");
    }
}
