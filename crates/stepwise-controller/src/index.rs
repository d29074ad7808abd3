//! Cached objects by the UID of their controlling owner, kept from the same watch events that
//! fill the cache. A reconcile then reads its own ReplicaSets and AnalysisRuns in time that
//! depends on how many it owns, not on how many Rollouts the controller serves.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

/// The owner UID → owned objects map, and its reverse.
struct Maps<K: Resource<DynamicType = ()>> {
    children: HashMap<String, HashSet<ObjectRef<K>>>,
    owner: HashMap<ObjectRef<K>, String>,
}

impl<K: Resource<DynamicType = ()>> Default for Maps<K> {
    fn default() -> Self {
        Maps { children: HashMap::new(), owner: HashMap::new() }
    }
}

impl<K> Maps<K>
where
    K: Resource<DynamicType = ()>,
{
    fn remove(&mut self, obj: &ObjectRef<K>) {
        if let Some(uid) = self.owner.remove(obj)
            && let Some(set) = self.children.get_mut(&uid)
        {
            set.remove(obj);
            if set.is_empty() {
                self.children.remove(&uid);
            }
        }
    }

    fn apply(&mut self, obj: &K) {
        let r = ObjectRef::from_obj(obj);
        // The owner may have changed (adopted, orphaned): drop the old entry first.
        self.remove(&r);
        if let Some(uid) = controller_uid(obj) {
            self.children.entry(uid.clone()).or_default().insert(r.clone());
            self.owner.insert(r, uid);
        }
    }
}

fn controller_uid<K: Resource>(obj: &K) -> Option<String> {
    obj.meta().owner_references.as_ref()?.iter().find(|o| o.controller == Some(true)).map(|o| o.uid.clone())
}

/// Objects of kind `K` by the UID of their controlling owner.
pub struct OwnerIndex<K: Resource<DynamicType = ()>> {
    maps: RwLock<Maps<K>>,
    /// A relist in progress: built aside and swapped in when complete, like the cache itself.
    relist: RwLock<Option<Maps<K>>>,
}

impl<K: Resource<DynamicType = ()>> Default for OwnerIndex<K> {
    fn default() -> Self {
        OwnerIndex { maps: RwLock::new(Maps::default()), relist: RwLock::new(None) }
    }
}

impl<K> OwnerIndex<K>
where
    K: Resource<DynamicType = ()>,
{
    /// Follows one watch event.
    pub fn apply(&self, event: &Event<K>) {
        match event {
            Event::Apply(obj) => write(&self.maps).apply(obj),
            Event::Delete(obj) => write(&self.maps).remove(&ObjectRef::from_obj(obj)),
            Event::Init => *write(&self.relist) = Some(Maps::default()),
            Event::InitApply(obj) => {
                if let Some(maps) = write(&self.relist).as_mut() {
                    maps.apply(obj);
                }
            }
            Event::InitDone => {
                if let Some(maps) = write(&self.relist).take() {
                    *write(&self.maps) = maps;
                }
            }
        }
    }

    /// The objects whose controlling owner has this UID.
    pub fn owned_by(&self, owner_uid: &str) -> Vec<ObjectRef<K>> {
        let maps = self.maps.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        maps.children.get(owner_uid).map(|set| set.iter().cloned().collect()).unwrap_or_default()
    }
}

/// A panic elsewhere while holding the lock leaves the maps consistent (every update is a few
/// map operations), so a poisoned lock is used as it is.
fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn rs(name: &str, owner: Option<&str>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        controller: Some(true),
                        kind: "Rollout".into(),
                        name: "ro".into(),
                        api_version: "stepwise.dev/v1alpha1".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(index: &OwnerIndex<ReplicaSet>, uid: &str) -> Vec<String> {
        let mut names: Vec<String> = index.owned_by(uid).into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn objects_are_found_by_their_controlling_owner_only() {
        let index = OwnerIndex::default();
        index.apply(&Event::Apply(rs("a-1", Some("u1"))));
        index.apply(&Event::Apply(rs("a-2", Some("u1"))));
        index.apply(&Event::Apply(rs("b-1", Some("u2"))));
        index.apply(&Event::Apply(rs("orphan", None)));
        assert_eq!(names(&index, "u1"), ["a-1", "a-2"]);
        assert_eq!(names(&index, "u2"), ["b-1"]);
        assert!(names(&index, "u3").is_empty());
    }

    #[test]
    fn a_deleted_or_orphaned_object_leaves_its_owner() {
        let index = OwnerIndex::default();
        index.apply(&Event::Apply(rs("a-1", Some("u1"))));
        index.apply(&Event::Apply(rs("a-2", Some("u1"))));
        index.apply(&Event::Delete(rs("a-1", Some("u1"))));
        index.apply(&Event::Apply(rs("a-2", None)));
        assert!(names(&index, "u1").is_empty());
        index.apply(&Event::Apply(rs("a-2", Some("u9"))));
        assert_eq!(names(&index, "u9"), ["a-2"]);
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_complete_and_forgets_what_vanished() {
        let index = OwnerIndex::default();
        index.apply(&Event::Apply(rs("gone", Some("u1"))));
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(rs("kept", Some("u1"))));
        // Until the relist is done, readers see the last complete picture.
        assert_eq!(names(&index, "u1"), ["gone"]);
        index.apply(&Event::InitDone);
        assert_eq!(names(&index, "u1"), ["kept"]);
    }
}
