//! Sharding: a fleet too large for one process splits across several controllers, each started
//! with its own `--shard` and holding its own Lease. A Rollout belongs to the shard its
//! `stepwise.dev/shard` label names, or to the controller started without `--shard` when it has no
//! such label (as Flux's shard key does). Relabelling a Rollout moves it: the API server's watch
//! tells the old shard it is gone and the new one that it arrived, and the new shard goes on from
//! the Rollout's status, which is all a controller remembers.

use std::collections::BTreeMap;

use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use stepwise_api::{AnalysisRun, Rollout, SHARD_LABEL};

use crate::index::controller_ref;

/// The Lease of the controller started without `--shard`.
pub const DEFAULT_LEASE_NAME: &str = "stepwise-controller";

/// Which Rollouts this controller acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shard {
    name: Option<String>,
}

impl Shard {
    /// The shard named by `--shard`, or the unlabelled Rollouts when `None`. A name must be usable
    /// both as a label value and inside a Lease name: a DNS label of at most 50 characters, so
    /// that `stepwise-controller-<name>` is one too.
    pub fn new(name: Option<&str>) -> Result<Self, String> {
        let Some(name) = name else { return Ok(Shard { name: None }) };
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        let ok = !name.is_empty()
            && name.len() <= 50
            && name.chars().all(valid_char)
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok {
            Ok(Shard { name: Some(name.to_string()) })
        } else {
            Err(format!(
                "--shard {name:?}: a shard is named by 1 to 50 lowercase letters, digits and '-', \
                 starting and ending with a letter or digit"
            ))
        }
    }

    /// The shard's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The label selector of the Rollouts this shard watches.
    pub fn selector(&self) -> String {
        match &self.name {
            Some(name) => format!("{SHARD_LABEL}={name}"),
            None => format!("!{SHARD_LABEL}"),
        }
    }

    /// Whether an object with these labels belongs to this shard.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.get(SHARD_LABEL) == self.name.as_ref()
    }

    /// The Lease this shard's replicas elect their leader on, unless `--lease-name` names one:
    /// one Lease per shard, so that every shard has a leader.
    pub fn lease_name(&self, flag: Option<&str>) -> String {
        match (flag, &self.name) {
            (Some(name), _) => name.to_string(),
            (None, Some(shard)) => format!("{DEFAULT_LEASE_NAME}-{shard}"),
            (None, None) => DEFAULT_LEASE_NAME.to_string(),
        }
    }

    /// Whether this shard measures `run`. A run a Rollout controls follows its Rollout, wherever
    /// the Rollout moves (this shard's cache holds exactly its own Rollouts); a standalone run
    /// follows its own label.
    pub fn measures(&self, run: &AnalysisRun, rollouts: &Store<DeserializeGuard<Rollout>>) -> bool {
        match controller_ref(run.meta()).filter(|owner| owner.kind == "Rollout") {
            Some(owner) => {
                let key = ObjectRef::new(&owner.name).within(run.namespace().as_deref().unwrap_or_default());
                rollouts.get(&key).is_some_and(|rollout| rollout.meta().uid.as_deref() == Some(owner.uid.as_str()))
            }
            None => self.matches(run.labels()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_unsharded_controller_takes_the_rollouts_without_a_shard_label_and_a_shard_takes_its_own() {
        let unsharded = Shard::new(None).unwrap();
        let a = Shard::new(Some("a")).unwrap();
        assert_eq!(unsharded.selector(), "!stepwise.dev/shard");
        assert_eq!(a.selector(), "stepwise.dev/shard=a");
        assert!(unsharded.matches(&labels(&[("app", "web")])));
        assert!(!unsharded.matches(&labels(&[(SHARD_LABEL, "a")])));
        assert!(a.matches(&labels(&[(SHARD_LABEL, "a")])));
        assert!(!a.matches(&labels(&[(SHARD_LABEL, "b")])));
        assert!(!a.matches(&labels(&[])));
    }

    #[test]
    fn each_shard_has_its_own_lease_unless_one_is_named() {
        assert_eq!(Shard::new(None).unwrap().lease_name(None), "stepwise-controller");
        assert_eq!(Shard::new(Some("eu-1")).unwrap().lease_name(None), "stepwise-controller-eu-1");
        assert_eq!(Shard::new(Some("eu-1")).unwrap().lease_name(Some("mine")), "mine");
    }

    #[test]
    fn a_shard_name_that_cannot_be_a_label_value_and_a_lease_name_is_refused_naming_the_flag() {
        for bad in ["", "A", "a_b", "-a", "a-", "a.b", &"a".repeat(51)] {
            let error = Shard::new(Some(bad)).unwrap_err();
            assert!(error.starts_with("--shard"), "{bad:?}: {error}");
        }
        for good in ["a", "shard-0", "0", &"a".repeat(50)] {
            assert!(Shard::new(Some(good)).is_ok(), "{good:?}");
        }
    }

    fn rollout(name: &str, uid: &str) -> DeserializeGuard<Rollout> {
        let rollout: Rollout = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"strategy": {"canary": {}}, "template": {}}
        }))
        .expect("a Rollout");
        DeserializeGuard(Ok(rollout))
    }

    fn run(owner: Option<(&str, &str)>, shard: Option<&str>) -> AnalysisRun {
        let owners: Vec<_> = owner
            .map(|(name, uid)| {
                serde_json::json!({"apiVersion": "stepwise.dev/v1alpha1", "kind": "Rollout", "name": name, "uid": uid, "controller": true})
            })
            .into_iter()
            .collect();
        let labels: BTreeMap<_, _> = shard.map(|s| (SHARD_LABEL.to_string(), s.to_string())).into_iter().collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "run", "namespace": "ns", "ownerReferences": owners, "labels": labels},
            "spec": {"metrics": []}
        }))
        .expect("an AnalysisRun")
    }

    fn store_of(rollouts: Vec<DeserializeGuard<Rollout>>) -> Store<DeserializeGuard<Rollout>> {
        let (reader, mut writer) = kube::runtime::reflector::store();
        for rollout in rollouts {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(rollout));
        }
        reader
    }

    #[test]
    fn a_run_a_rollout_controls_is_measured_by_the_shard_that_holds_the_rollout_whatever_the_run_says() {
        let a = Shard::new(Some("a")).unwrap();
        let holding = store_of(vec![rollout("web", "uid-1")]);
        let empty = store_of(vec![]);
        // The run still carries another shard's label: the Rollout moved, its run follows it.
        assert!(a.measures(&run(Some(("web", "uid-1")), Some("b")), &holding));
        assert!(!a.measures(&run(Some(("web", "uid-1")), Some("a")), &empty));
        // A Rollout of the same name recreated since is another Rollout.
        assert!(!a.measures(&run(Some(("web", "uid-0")), None), &holding));
    }

    #[test]
    fn a_standalone_run_is_measured_by_the_shard_its_own_label_names() {
        let empty = store_of(vec![]);
        assert!(Shard::new(Some("a")).unwrap().measures(&run(None, Some("a")), &empty));
        assert!(!Shard::new(Some("a")).unwrap().measures(&run(None, None), &empty));
        assert!(Shard::new(None).unwrap().measures(&run(None, None), &empty));
        assert!(!Shard::new(None).unwrap().measures(&run(None, Some("a")), &empty));
    }
}
