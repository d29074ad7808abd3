//! One set of watches for the whole server, whatever the number of pages open: Rollouts, the
//! ReplicaSets and AnalysisRuns they own, and the Events about them, grouped by Rollout. Every
//! change gets a sequence number; a page's stream sends what changed after the last number it
//! sent, so a reconnect (with `Last-Event-ID`) resumes where it left off.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ObjectMeta};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use stepwise_api::{AnalysisRun, POD_TEMPLATE_HASH_LABEL, Rollout, RolloutPhase};
use tokio::sync::watch;

/// A Rollout's namespace and name.
pub type Key = (String, String);

/// How many deletions are remembered for streams that resume; one that resumes from before the
/// oldest gets the whole list again.
const TOMBSTONES: usize = 10_000;
/// How long a request waits for the watches to list before it is told why they have not.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How many Events are kept per Rollout (the newest).
const EVENTS_PER_ROLLOUT: usize = 100;

/// A Rollout and what the page shows beside it.
#[derive(Clone, Default)]
pub struct Entry {
    /// The Rollout, once seen (its ReplicaSets may come first).
    pub rollout: Option<Arc<Rollout>>,
    /// The sequence number of its last change, or of a change of what it owns.
    pub changed: u64,
    /// Its ReplicaSets by name.
    pub replica_sets: BTreeMap<String, Arc<ReplicaSet>>,
    /// Its AnalysisRuns by name.
    pub runs: BTreeMap<String, Arc<AnalysisRun>>,
    /// The Events about it by name.
    pub events: BTreeMap<String, Arc<Event>>,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    entries: HashMap<Key, Entry>,
    /// Deleted Rollouts by the sequence number of their deletion.
    tombstones: BTreeMap<u64, Key>,
    /// Streams resuming from before this number have lost deletions: they get the list again.
    horizon: u64,
    /// What each watch's current listing has seen, while it lists.
    listing: HashMap<&'static str, HashSet<(Key, String)>>,
}

/// What the watches hold.
pub struct Store {
    inner: RwLock<Inner>,
    /// The last error of each watch that has not listed since.
    errors: std::sync::Mutex<BTreeMap<&'static str, String>>,
    changed: watch::Sender<u64>,
    synced: watch::Sender<HashSet<&'static str>>,
}

/// The kinds watched; the store is synced once each has listed.
const KINDS: [&str; 4] = ["Rollout", "ReplicaSet", "AnalysisRun", "Event"];

/// What a row of the list is made of: a Rollout and its AnalysisRuns, shared with the store.
pub struct Listed {
    /// The Rollout.
    pub rollout: Arc<Rollout>,
    /// Its AnalysisRuns.
    pub runs: Vec<Arc<AnalysisRun>>,
}

/// What changed after a sequence number.
pub enum Since {
    /// These Rollouts changed (or appeared), these were deleted.
    Changes { upserted: Vec<Listed>, deleted: Vec<Key> },
    /// Too long ago: the whole list.
    Everything(Vec<Listed>),
}

impl Store {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Store {
            inner: RwLock::default(),
            errors: Default::default(),
            changed: watch::channel(0).0,
            synced: watch::channel(HashSet::new()).0,
        })
    }

    /// Starts the watches; they run until the process ends, and restart by themselves after an
    /// error (kube's watcher backs off and lists again).
    pub fn watch(self: &Arc<Self>, client: &Client, namespace: Option<&str>) {
        let api = |c: &Client| -> (Api<Rollout>, Api<ReplicaSet>, Api<AnalysisRun>, Api<Event>) {
            match namespace {
                Some(ns) => (
                    Api::namespaced(c.clone(), ns),
                    Api::namespaced(c.clone(), ns),
                    Api::namespaced(c.clone(), ns),
                    Api::namespaced(c.clone(), ns),
                ),
                None => (Api::all(c.clone()), Api::all(c.clone()), Api::all(c.clone()), Api::all(c.clone())),
            }
        };
        let (rollouts, replica_sets, runs, events) = api(client);
        self.spawn("Rollout", rollouts, watcher::Config::default(), |ro: &Rollout| {
            Some((key_of(ro.meta()), ro.name_any()))
        });
        self.spawn(
            "ReplicaSet",
            replica_sets,
            watcher::Config::default().labels(POD_TEMPLATE_HASH_LABEL),
            |rs: &ReplicaSet| owner(rs.meta()),
        );
        self.spawn("AnalysisRun", runs, watcher::Config::default(), |run: &AnalysisRun| owner(run.meta()));
        self.spawn("Event", events, watcher::Config::default().fields("involvedObject.kind=Rollout"), |e: &Event| {
            let about = &e.involved_object;
            Some(((about.namespace.clone()?, about.name.clone()?), e.name_any()))
        });
    }

    fn spawn<K>(
        self: &Arc<Self>,
        kind: &'static str,
        api: Api<K>,
        config: watcher::Config,
        key: fn(&K) -> Option<(Key, String)>,
    ) where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        Arc<K>: Into<Object>,
    {
        let store = self.clone();
        tokio::spawn(async move {
            let mut stream = watcher(api, config).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init) => store.start_listing(kind),
                    Ok(watcher::Event::InitApply(object)) | Ok(watcher::Event::Apply(object)) => {
                        if let Some((k, name)) = key(&object) {
                            store.apply(kind, k, name, Some(Arc::new(slim(object)).into()));
                        }
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        if let Some((k, name)) = key(&object) {
                            store.apply(kind, k, name, None);
                        }
                    }
                    Ok(watcher::Event::InitDone) => store.listed(kind),
                    Err(e) => store.failed(kind, &e),
                }
            }
        });
    }

    fn write<T>(&self, f: impl FnOnce(&mut Inner) -> Option<T>) -> Option<T> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        f(&mut inner)
    }

    fn start_listing(&self, kind: &'static str) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).listing.insert(kind, HashSet::new());
    }

    /// Puts (or with None, deletes) one object.
    fn apply(&self, kind: &'static str, key: Key, name: String, object: Option<Object>) {
        let seq = {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            inner.seq += 1;
            let seq = inner.seq;
            if let Some(seen) = inner.listing.get_mut(kind) {
                seen.insert((key.clone(), name.clone()));
            }
            let deleted_rollout = kind == "Rollout" && object.is_none();
            let entry = inner.entries.entry(key.clone()).or_default();
            entry.changed = seq;
            match object {
                Some(Object::Rollout(ro)) => entry.rollout = Some(ro),
                Some(Object::ReplicaSet(rs)) => _ = entry.replica_sets.insert(name, rs),
                Some(Object::Run(run)) => _ = entry.runs.insert(name, run),
                Some(Object::Event(e)) => {
                    entry.events.insert(name, e);
                    trim_events(&mut entry.events);
                }
                None => match kind {
                    "Rollout" => entry.rollout = None,
                    "ReplicaSet" => _ = entry.replica_sets.remove(&name),
                    "AnalysisRun" => _ = entry.runs.remove(&name),
                    _ => _ = entry.events.remove(&name),
                },
            }
            if deleted_rollout {
                inner.tombstones.insert(seq, key.clone());
                while inner.tombstones.len() > TOMBSTONES {
                    if let Some((oldest, _)) = inner.tombstones.pop_first() {
                        inner.horizon = oldest;
                    }
                }
            }
            let empty = inner.entries.get(&key).is_some_and(|e| {
                e.rollout.is_none() && e.replica_sets.is_empty() && e.runs.is_empty() && e.events.is_empty()
            });
            if empty {
                inner.entries.remove(&key);
            }
            seq
        };
        self.changed.send_replace(seq);
    }

    /// A watch listed again (at its start, or after its watch expired): what it no longer lists
    /// was deleted meanwhile.
    fn listed(&self, kind: &'static str) {
        let gone: Vec<(Key, String)> = self
            .write(|inner| {
                let seen = inner.listing.remove(kind)?;
                let held = inner.entries.iter().flat_map(|(key, e)| {
                    let names: Vec<String> = match kind {
                        "Rollout" => e.rollout.iter().map(|r| r.name_any()).collect(),
                        "ReplicaSet" => e.replica_sets.keys().cloned().collect(),
                        "AnalysisRun" => e.runs.keys().cloned().collect(),
                        _ => e.events.keys().cloned().collect(),
                    };
                    names.into_iter().map(move |n| (key.clone(), n))
                });
                Some(held.filter(|k| !seen.contains(k)).collect())
            })
            .unwrap_or_default();
        for (key, name) in gone {
            self.apply(kind, key, name, None);
        }
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).remove(kind);
        self.synced.send_modify(|listed| _ = listed.insert(kind));
    }

    /// A watch failed; kube's watcher tries again with a backoff.
    fn failed(&self, kind: &'static str, e: &watcher::Error) {
        let mut why = e.to_string();
        if why.contains("403") {
            why.push_str(&format!(" (if you may not list {kind}s in every namespace, pass -n NAMESPACE)"));
        }
        eprintln!("dashboard: watching {kind}s: {why}; trying again");
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).insert(kind, why);
    }

    /// Waits until every watch has listed once.
    pub async fn synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|listed| listed.len() >= KINDS.len()).await;
    }

    /// Waits a while for every watch to list once; Err with the watches' errors when they have not.
    pub async fn ready(&self) -> Result<(), String> {
        if tokio::time::timeout(SYNC_WAIT, self.synced()).await.is_ok() {
            return Ok(());
        }
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let errors: Vec<String> = errors.iter().map(|(kind, why)| format!("{kind}s: {why}")).collect();
        Err(format!(
            "the dashboard has not listed every Rollout yet{}",
            if errors.is_empty() { ": try again in a moment".to_string() } else { format!(" ({})", errors.join("; ")) }
        ))
    }

    /// A receiver that wakes on every change, with the latest sequence number.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The sequence number of the latest change.
    pub fn seq(&self) -> u64 {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).seq
    }

    /// One Rollout's entry.
    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).entries.get(key).cloned()
    }

    /// How many Rollouts it holds.
    pub fn rollouts(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).entries.values().filter(|e| e.rollout.is_some()).count()
    }

    /// The Rollouts in phase Progressing: their rows change with time alone.
    pub fn progressing(&self) -> Vec<Listed> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let progressing =
            |l: &Listed| l.rollout.status.as_ref().and_then(|s| s.phase) == Some(RolloutPhase::Progressing);
        inner.entries.values().filter_map(listed).filter(progressing).collect()
    }

    /// What changed after `seq` (None: everything), and the sequence number it is as of.
    pub fn since(&self, seq: Option<u64>) -> (Since, u64) {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let since = match seq {
            Some(seq) if seq >= inner.horizon && seq <= inner.seq => Since::Changes {
                upserted: inner.entries.values().filter(|e| e.changed > seq).filter_map(listed).collect(),
                deleted: inner.tombstones.range(seq + 1..).map(|(_, k)| k.clone()).collect(),
            },
            _ => Since::Everything(inner.entries.values().filter_map(listed).collect()),
        };
        (since, inner.seq)
    }
}

/// An object of one of the kinds watched.
pub enum Object {
    /// A Rollout.
    Rollout(Arc<Rollout>),
    /// A ReplicaSet.
    ReplicaSet(Arc<ReplicaSet>),
    /// An AnalysisRun.
    Run(Arc<AnalysisRun>),
    /// An Event.
    Event(Arc<Event>),
}

impl From<Arc<Rollout>> for Object {
    fn from(o: Arc<Rollout>) -> Self {
        Object::Rollout(o)
    }
}
impl From<Arc<ReplicaSet>> for Object {
    fn from(o: Arc<ReplicaSet>) -> Self {
        Object::ReplicaSet(o)
    }
}
impl From<Arc<AnalysisRun>> for Object {
    fn from(o: Arc<AnalysisRun>) -> Self {
        Object::Run(o)
    }
}
impl From<Arc<Event>> for Object {
    fn from(o: Arc<Event>) -> Self {
        Object::Event(o)
    }
}

/// An entry's row material, when its Rollout has been seen.
fn listed(e: &Entry) -> Option<Listed> {
    Some(Listed { rollout: e.rollout.clone()?, runs: e.runs.values().cloned().collect() })
}

fn key_of(meta: &ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// The Rollout that owns an object, and the object's name.
fn owner(meta: &ObjectMeta) -> Option<(Key, String)> {
    let owner = meta
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "Rollout" && o.api_version.starts_with(stepwise_api::GROUP))?;
    Some(((meta.namespace.clone()?, owner.name.clone()), meta.name.clone()?))
}

/// Without what the dashboard never reads and costs the most memory: managed fields and the
/// last-applied copy of the whole object.
fn slim<K: Resource>(mut object: K) -> K {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    object
}

fn trim_events(events: &mut BTreeMap<String, Arc<Event>>) {
    while events.len() > EVENTS_PER_ROLLOUT {
        let oldest = events
            .iter()
            .min_by_key(|(_, e)| e.last_timestamp.clone().or(e.metadata.creation_timestamp.clone()))
            .map(|(name, _)| name.clone());
        match oldest {
            Some(name) => _ = events.remove(&name),
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(name: &str) -> Object {
        let ro: Rollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "stepwise.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": name}}, "strategy": {"canary": {}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
        }))
        .unwrap();
        Object::Rollout(Arc::new(ro))
    }

    fn with_phase(name: &str, phase: &str) -> Object {
        let Object::Rollout(ro) = rollout(name) else { unreachable!() };
        let mut ro = (*ro).clone();
        ro.status = serde_json::from_value(serde_json::json!({"phase": phase})).unwrap();
        Object::Rollout(Arc::new(ro))
    }

    fn key(name: &str) -> Key {
        ("shop".into(), name.into())
    }

    fn names(listed: &[Listed]) -> Vec<String> {
        let mut names: Vec<String> = listed.iter().map(|l| l.rollout.name_any()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_stream_that_resumes_gets_only_what_changed_after_its_id_deletions_included() {
        let store = Store::new();
        store.apply("Rollout", key("a"), "a".into(), Some(rollout("a")));
        store.apply("Rollout", key("b"), "b".into(), Some(rollout("b")));
        let seen = store.seq();
        store.apply("Rollout", key("c"), "c".into(), Some(rollout("c")));
        store.apply("Rollout", key("a"), "a".into(), None);
        let (Since::Changes { upserted, deleted }, _) = store.since(Some(seen)) else {
            panic!("a resume within memory")
        };
        assert_eq!(names(&upserted), vec!["c"]);
        assert_eq!(deleted, vec![key("a")]);
    }

    #[test]
    fn a_stream_from_another_run_of_the_server_gets_everything() {
        let store = Store::new();
        store.apply("Rollout", key("a"), "a".into(), Some(rollout("a")));
        // The page's last id came from a server that had seen more changes before it stopped.
        let (since, seq) = store.since(Some(1_000));
        assert!(matches!(since, Since::Everything(ref all) if names(all) == vec!["a"]));
        assert_eq!(seq, 1);
    }

    #[test]
    fn a_stream_from_before_the_deletions_remembered_gets_everything() {
        let store = Store::new();
        let seen = store.seq();
        for i in 0..=TOMBSTONES {
            let name = format!("r{i}");
            store.apply("Rollout", key(&name), name.clone(), Some(rollout(&name)));
            store.apply("Rollout", key(&name), name, None);
        }
        assert!(matches!(store.since(Some(seen)).0, Since::Everything(_)));
    }

    #[test]
    fn a_listing_deletes_what_it_no_longer_lists() {
        let store = Store::new();
        store.apply("Rollout", key("a"), "a".into(), Some(rollout("a")));
        store.apply("Rollout", key("b"), "b".into(), Some(rollout("b")));
        // The watch expired and lists again: only b is left.
        store.start_listing("Rollout");
        store.apply("Rollout", key("b"), "b".into(), Some(rollout("b")));
        store.listed("Rollout");
        assert_eq!(store.rollouts(), 1);
        assert!(store.get(&key("a")).is_none());
    }

    #[test]
    fn only_progressing_rollouts_are_made_again_as_time_passes() {
        let store = Store::new();
        store.apply("Rollout", key("moving"), "moving".into(), Some(with_phase("moving", "Progressing")));
        store.apply("Rollout", key("done"), "done".into(), Some(with_phase("done", "Healthy")));
        assert_eq!(names(&store.progressing()), vec!["moving"]);
    }
}
