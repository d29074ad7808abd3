//! Cached objects by a key, kept from the same watch events that fill the cache: ReplicaSets and
//! AnalysisRuns by the UID of the Rollout that owns them, Rollouts by the Services and Deployment
//! they name. A reconcile, or the lookup of the Rollouts a changed Service concerns, then takes
//! time that depends on how many objects match, not on how many Rollouts the controller serves.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

/// The key → objects map, and its reverse.
struct Maps<K: Resource<DynamicType = ()>> {
    objects: HashMap<String, HashSet<ObjectRef<K>>>,
    keys: HashMap<ObjectRef<K>, Vec<String>>,
}

impl<K: Resource<DynamicType = ()>> Default for Maps<K> {
    fn default() -> Self {
        Maps { objects: HashMap::new(), keys: HashMap::new() }
    }
}

impl<K> Maps<K>
where
    K: Resource<DynamicType = ()>,
{
    fn remove(&mut self, obj: &ObjectRef<K>) {
        for key in self.keys.remove(obj).unwrap_or_default() {
            if let Some(set) = self.objects.get_mut(&key) {
                set.remove(obj);
                if set.is_empty() {
                    self.objects.remove(&key);
                }
            }
        }
    }

    fn apply(&mut self, obj: &K, keys_of: fn(&K) -> Vec<String>) {
        let r = ObjectRef::from_obj(obj);
        // The keys may have changed (adopted, orphaned, another Service named): drop the old ones.
        self.remove(&r);
        let keys = keys_of(obj);
        if !keys.is_empty() {
            for key in &keys {
                self.objects.entry(key.clone()).or_default().insert(r.clone());
            }
            self.keys.insert(r, keys);
        }
    }
}

/// An object's controlling owner, if it has one.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

/// The UID of an object's controlling owner, as an index key.
pub fn controller_uid<K: Resource>(obj: &K) -> Vec<String> {
    controller_ref(obj.meta()).map(|o| o.uid.clone()).into_iter().collect()
}

/// Objects of kind `K` by the keys a function gives each.
pub struct Index<K: Resource<DynamicType = ()>> {
    keys_of: fn(&K) -> Vec<String>,
    maps: RwLock<Maps<K>>,
    /// A relist in progress: built aside and swapped in when complete, like the cache itself.
    relist: RwLock<Option<Maps<K>>>,
}

impl<K> Index<K>
where
    K: Resource<DynamicType = ()>,
{
    /// An empty index of the keys `keys_of` gives each object.
    pub fn new(keys_of: fn(&K) -> Vec<String>) -> Self {
        Index { keys_of, maps: RwLock::new(Maps::default()), relist: RwLock::new(None) }
    }

    /// Follows one watch event.
    pub fn apply(&self, event: &Event<K>) {
        match event {
            Event::Apply(obj) => write(&self.maps).apply(obj, self.keys_of),
            Event::Delete(obj) => write(&self.maps).remove(&ObjectRef::from_obj(obj)),
            Event::Init => *write(&self.relist) = Some(Maps::default()),
            Event::InitApply(obj) => {
                if let Some(maps) = write(&self.relist).as_mut() {
                    maps.apply(obj, self.keys_of);
                }
            }
            Event::InitDone => {
                if let Some(maps) = write(&self.relist).take() {
                    *write(&self.maps) = maps;
                }
            }
        }
    }

    /// The objects with this key.
    pub fn get(&self, key: &str) -> Vec<ObjectRef<K>> {
        let maps = self.maps.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        maps.objects.get(key).map(|set| set.iter().cloned().collect()).unwrap_or_default()
    }
}

/// A panic elsewhere while holding the lock leaves the maps consistent (every update is a few
/// map operations), so a poisoned lock is used as it is.
fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The index key of the object of `kind` named `name` in `namespace`, as a Rollout names it.
pub fn named_key(namespace: Option<&str>, kind: &str, name: &str) -> String {
    format!("{}/{kind}/{name}", namespace.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSet;

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

    fn names(index: &Index<ReplicaSet>, key: &str) -> Vec<String> {
        let mut names: Vec<String> = index.get(key).into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn objects_are_found_by_their_controlling_owner_only() {
        let index = Index::new(controller_uid);
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
        let index = Index::new(controller_uid);
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
        let index = Index::new(controller_uid);
        index.apply(&Event::Apply(rs("gone", Some("u1"))));
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(rs("kept", Some("u1"))));
        // Until the relist is done, readers see the last complete picture.
        assert_eq!(names(&index, "u1"), ["gone"]);
        index.apply(&Event::InitDone);
        assert_eq!(names(&index, "u1"), ["kept"]);
    }
}
