//! Hashes that name versions: the pod template hash (ReplicaSet names, selector labels) and the
//! step-list hash (a changed step list restarts the steps).

use k8s_openapi::api::core::v1::PodTemplateSpec;
use stepwise_api::CanaryStep;

use crate::observed::RoleMetadata;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |h, b| (h ^ u32::from(*b)).wrapping_mul(FNV_PRIME))
}

/// Letters without vowels and look-alikes, as Kubernetes' `rand.SafeEncodeString`, so that a
/// hash never spells a word.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_encode(value: u32) -> String {
    value.to_string().bytes().map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char).collect()
}

/// The hash of a pod template, as used in ReplicaSet names and the pod-template-hash label.
/// The hash label itself is ignored so that a ReplicaSet's template hashes to its own name.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut template = template.clone();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(stepwise_api::POD_TEMPLATE_HASH_LABEL);
    }
    let mut bytes = serde_json::to_vec(&template).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(fnv32a(&bytes))
}

/// The hash of a step list.
pub fn steps_hash(steps: &[CanaryStep]) -> String {
    safe_encode(fnv32a(&serde_json::to_vec(steps).unwrap_or_default()))
}

/// The hash that names the version of `template`: its own hash, or the hash of an existing
/// ReplicaSet with an equal template. An undo copies a ReplicaSet's template, which the API
/// server has filled with defaults, so its hash differs while it is the same version.
///
/// A ReplicaSet's template is given without the role metadata stepwise put on it (its
/// `role_metadata`, which never counts in a hash): the keys of that metadata are left out of
/// `template` too for the comparison, since an undo may have copied them. So is the
/// anti-affinity stepwise adds to a new ReplicaSet (`antiAffinity`).
pub fn version_hash<'a>(
    template: &PodTemplateSpec,
    replica_sets: impl IntoIterator<Item = (&'a str, &'a PodTemplateSpec, &'a RoleMetadata)>,
) -> String {
    let own = pod_template_hash(template, None);
    let strip = |t: &PodTemplateSpec, role: &RoleMetadata| {
        let mut t = t.clone();
        stepwise_api::anti_affinity::strip(&mut t);
        if let Some(meta) = t.metadata.as_mut() {
            if let Some(labels) = meta.labels.as_mut() {
                labels.remove(stepwise_api::POD_TEMPLATE_HASH_LABEL);
                labels.retain(|k, _| !role.labels.contains_key(k));
            }
            if let Some(annotations) = meta.annotations.as_mut() {
                annotations.retain(|k, _| !role.annotations.contains_key(k));
            }
            // An emptied map and a missing one are the same template.
            meta.labels = meta.labels.take().filter(|l| !l.is_empty());
            meta.annotations = meta.annotations.take().filter(|a| !a.is_empty());
        }
        t
    };
    let mut same = None;
    for (hash, rs_template, role) in replica_sets {
        if hash == own {
            return own;
        }
        if same.is_none() && strip(rs_template, role) == strip(template, role) {
            same = Some(hash.to_string());
        }
    }
    same.unwrap_or(own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "demo"}},
            "spec": {"containers": [{"name": "app", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn fnv32a_matches_the_published_test_vectors() {
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn a_different_image_gives_a_different_hash_and_the_same_image_the_same() {
        assert_eq!(pod_template_hash(&template("a:1"), None), pod_template_hash(&template("a:1"), None));
        assert_ne!(pod_template_hash(&template("a:1"), None), pod_template_hash(&template("a:2"), None));
        assert_ne!(pod_template_hash(&template("a:1"), None), pod_template_hash(&template("a:1"), Some(1)));
    }

    #[test]
    fn the_hash_label_does_not_change_the_hash() {
        let plain = template("a:1");
        let mut labelled = plain.clone();
        let meta = labelled.metadata.get_or_insert_with(ObjectMeta::default);
        meta.labels.get_or_insert_with(BTreeMap::new).insert(stepwise_api::POD_TEMPLATE_HASH_LABEL.into(), "x".into());
        assert_eq!(pod_template_hash(&plain, None), pod_template_hash(&labelled, None));
    }

    #[test]
    fn hashes_use_only_safe_characters() {
        let h = pod_template_hash(&template("a:1"), None);
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)), "{h}");
    }
}
