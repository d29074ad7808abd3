//! The inputs of one plan and what follows from them directly: the new version's hash, template
//! and selector, the replica count, and look-ups into what was observed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use stepwise_api::{Rollout, RolloutSpec, RolloutStatus};

use crate::hash::version_hash;
use crate::objects::label_selector_string;
use crate::observed::{Observed, ObservedAnalysisRun, ObservedReplicaSet};
use crate::replicas::Counts;

/// Everything derived from the inputs that does not change during planning.
pub(crate) struct Ctx<'a> {
    pub rollout: &'a Rollout,
    pub name: &'a str,
    pub spec: &'a RolloutSpec,
    pub observed: &'a Observed,
    pub now: &'a Time,
    /// spec.replicas, defaulted.
    pub replicas: i32,
    /// The pod template hash of the newest version.
    pub hash: String,
    /// The pod template: the Rollout's, or the referenced workload's.
    pub template: PodTemplateSpec,
    /// The selector of the Rollout's pods.
    pub selector: LabelSelector,
}

impl<'a> Ctx<'a> {
    pub fn new(
        rollout: &'a Rollout,
        observed: &'a Observed,
        now: &'a Time,
        template: PodTemplateSpec,
        selector: LabelSelector,
    ) -> Self {
        let hash = version_hash(
            &template,
            observed.replica_sets.iter().map(|rs| (rs.hash.as_str(), &rs.template, &rs.role_metadata)),
        );
        Ctx {
            rollout,
            name: rollout.metadata.name.as_deref().unwrap_or_default(),
            spec: &rollout.spec,
            observed,
            now,
            replicas: rollout.spec.replicas.unwrap_or(stepwise_api::DEFAULT_REPLICAS),
            hash,
            template,
            selector,
        }
    }

    pub fn rs(&self, hash: &str) -> Option<&'a ObservedReplicaSet> {
        self.observed.replica_sets.iter().find(|rs| rs.hash == hash)
    }

    pub fn new_rs(&self) -> Option<&'a ObservedReplicaSet> {
        self.rs(&self.hash)
    }

    pub fn rs_name(&self, hash: &str) -> String {
        self.rs(hash).map(|rs| rs.name.clone()).unwrap_or_else(|| format!("{}-{}", self.name, hash))
    }

    pub fn counts(&self, hash: &str) -> Counts {
        self.rs(hash).map(|rs| Counts { spec: rs.spec_replicas, available: rs.available }).unwrap_or_default()
    }

    pub fn max_revision(&self) -> i64 {
        self.observed.replica_sets.iter().map(|rs| rs.revision).max().unwrap_or(0)
    }

    pub fn run(&self, name: &str) -> Option<&'a ObservedAnalysisRun> {
        self.observed.analysis_runs.iter().find(|r| r.name == name)
    }

    /// `base`, or `base.2`, `base.3`, … when a run of that name exists (a retry judges the same
    /// version again).
    pub fn unique_run_name(&self, base: &str) -> String {
        let mut candidate = base.to_string();
        let mut n = 2;
        while self.run(&candidate).is_some() {
            candidate = format!("{base}.{n}");
            n += 1;
        }
        candidate
    }

    /// The selector in the API server's syntax, for the scale subresource (an HPA selects the
    /// pods with it). A selector whose expressions cannot be written falls back to its labels.
    pub fn selector_string(&self, with_hash: Option<&str>) -> String {
        let mut selector = self.selector.clone();
        if let Some(h) = with_hash {
            selector
                .match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(stepwise_api::POD_TEMPLATE_HASH_LABEL.into(), h.into());
        }
        label_selector_string(&selector).unwrap_or_else(|_| {
            label_selector_string(&LabelSelector { match_labels: selector.match_labels, match_expressions: None })
                .unwrap_or_default()
        })
    }

    /// Whether the newest version is the stable one.
    pub fn promoted(&self, status: &RolloutStatus) -> bool {
        status.stable_rs.as_deref() == Some(self.hash.as_str())
    }

    /// The stable version, when it is not the newest.
    pub fn older_stable(&self, status: &RolloutStatus) -> Option<String> {
        status.stable_rs.clone().filter(|h| *h != self.hash)
    }

    /// Whether the user paused the rollout (spec.paused).
    pub fn user_paused(&self) -> bool {
        self.spec.paused == Some(true)
    }

    /// Whether this is a canary without traffic routing.
    pub fn basic_canary(&self) -> bool {
        self.spec.strategy.canary.as_ref().is_some_and(|c| c.traffic_routing.is_none())
    }
}
