//! Role metadata (Argo's "ephemeral metadata"): the labels and annotations the pods of a version
//! carry for the role it holds — `canaryMetadata` and `stableMetadata` for a canary,
//! `previewMetadata` and `activeMetadata` for blue-green. When a version's role changes its
//! metadata changes in place, on its ReplicaSet's pod template and on its pods, without a restart;
//! a version without a role carries none. Role metadata never counts in a pod template hash.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, PodMetadata, RolloutSpec, RolloutStatus};

use super::action::Action;
use super::context::Ctx;
use super::desired::{Desired, Draft};
use crate::observed::RoleMetadata;

/// The role metadata of each version once the decisions are made, by pod template hash:
/// - canary: the stable version (`status.stableRS`) carries `stableMetadata`, the newest version
///   while it is not stable `canaryMetadata` (also after an abort: it is still the canary);
/// - blue-green: the version the active Service selects (as this plan leaves it; the stable one
///   before any switch) carries `activeMetadata`, the newest version while it is not active
///   `previewMetadata`.
///
/// Every other version carries none.
pub(crate) fn desire(ctx: &Ctx, status: &RolloutStatus, draft: &mut Draft) {
    let strategy = &ctx.spec.strategy;
    let mut roles: Vec<(String, Option<&PodMetadata>)> = Vec::new();
    if let Some(canary) = &strategy.canary {
        if let Some(stable) = &status.stable_rs {
            roles.push((stable.clone(), canary.stable_metadata.as_ref()));
        }
        if !ctx.promoted(status) {
            roles.push((ctx.hash.clone(), canary.canary_metadata.as_ref()));
        }
    } else if let Some(bg) = &strategy.blue_green {
        // What this controller last pointed the active Service at (this plan included) is the
        // active version even while the Service cache has yet to show it.
        let active = status
            .blue_green
            .as_ref()
            .and_then(|b| b.active_selector.clone())
            .or_else(|| draft.desired.selected(ctx, &bg.active_service))
            .or_else(|| status.stable_rs.clone());
        if let Some(active) = &active {
            roles.push((active.clone(), bg.active_metadata.as_ref()));
        }
        if active.as_deref() != Some(ctx.hash.as_str()) {
            roles.push((ctx.hash.clone(), bg.preview_metadata.as_ref()));
        }
    }
    for (hash, metadata) in roles {
        draft.desired.role_metadata.insert(hash, RoleMetadata::from_spec(metadata));
    }
}

/// A [`Action::SetRoleMetadata`] for each ReplicaSet (the one this plan creates included, and none
/// this plan deletes) whose recorded role metadata differs from its role's.
pub(crate) fn actions(ctx: &Ctx, desired: &Desired) -> Vec<Action> {
    let mut hashes: BTreeSet<&str> =
        ctx.observed.replica_sets.iter().map(|rs| rs.hash.as_str()).filter(|h| !h.is_empty()).collect();
    if desired.new_replica_set.is_some() {
        hashes.insert(ctx.hash.as_str());
    }
    let mut out = Vec::new();
    for hash in hashes {
        let name = ctx.rs_name(hash);
        if desired.deleted.contains(&name) {
            continue;
        }
        let want = desired.role_metadata.get(hash).cloned().unwrap_or_default();
        let had = ctx.rs(hash).map(|rs| rs.role_metadata.clone()).unwrap_or_default();
        if want == had {
            continue;
        }
        let gone = |had: BTreeMap<String, String>, want: &BTreeMap<String, String>| {
            had.into_iter().filter(|(k, _)| !want.contains_key(k)).collect()
        };
        let remove = RoleMetadata {
            labels: gone(had.labels, &want.labels),
            annotations: gone(had.annotations, &want.annotations),
        };
        out.push(Action::SetRoleMetadata {
            name,
            hash: hash.to_string(),
            pods: ctx.selector_string(Some(hash)),
            metadata: want,
            remove,
        });
    }
    out
}

/// Role metadata must leave alone the labels that say which pods are the Rollout's and which
/// version they are (spec.selector and the pod-template-hash label), and must be labels and
/// annotations the API server takes.
pub(crate) fn validate(spec: &RolloutSpec, selector: &LabelSelector) -> Result<(), String> {
    let mut fields: Vec<(&str, Option<&PodMetadata>)> = Vec::new();
    if let Some(c) = &spec.strategy.canary {
        fields.push(("spec.strategy.canary.canaryMetadata", c.canary_metadata.as_ref()));
        fields.push(("spec.strategy.canary.stableMetadata", c.stable_metadata.as_ref()));
    }
    if let Some(b) = &spec.strategy.blue_green {
        fields.push(("spec.strategy.blueGreen.activeMetadata", b.active_metadata.as_ref()));
        fields.push(("spec.strategy.blueGreen.previewMetadata", b.preview_metadata.as_ref()));
    }
    let selected: BTreeSet<&str> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .chain(selector.match_expressions.iter().flatten().map(|e| e.key.as_str()))
        .collect();
    for (field, metadata) in fields {
        let Some(metadata) = metadata else { continue };
        for (key, value) in metadata.labels.iter().flatten() {
            let at = format!("{field}.labels[{key:?}]");
            if key == POD_TEMPLATE_HASH_LABEL {
                return Err(format!("{at}: must not set the pod template hash label, which names the version"));
            }
            if selected.contains(key.as_str()) {
                return Err(format!(
                    "{at}: must not set a label that spec.selector uses: the pods would change hands with their role"
                ));
            }
            qualified_name(key).map_err(|e| format!("{at}: {e}"))?;
            label_value(value).map_err(|e| format!("{at}: {e}"))?;
        }
        for key in metadata.annotations.iter().flatten().map(|(k, _)| k) {
            qualified_name(key).map_err(|e| format!("{field}.annotations[{key:?}]: {e}"))?;
        }
    }
    Ok(())
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters, alphanumeric at both ends, `-`, `_` and `.` within.
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let dns = |part: &str| {
            !part.is_empty()
                && part.len() <= 63
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(dns) {
            return Err("the key's prefix must be a lowercase DNS subdomain".into());
        }
    }
    if name.is_empty() || name.len() > 63 || !name_chars(name) {
        return Err(
            "the key's name must be 1 to 63 characters, alphanumeric at both ends, with -, _ and . within".into()
        );
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters as a key's name.
fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && name_chars(value)) {
        Ok(())
    } else {
        Err(format!("value {value:?} must be at most 63 characters, alphanumeric at both ends, with -, _ and . within"))
    }
}

fn name_chars(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_follow_the_api_servers_rules() {
        for ok in ["role", "a.io/role", "example.com/a_b.c-d", "x"] {
            assert_eq!(qualified_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/role", "A.io/role", "a.io/", "-role", "role-", "a b", &"x".repeat(64)] {
            assert!(qualified_name(bad).is_err(), "{bad}");
        }
        assert_eq!(label_value(""), Ok(()));
        assert_eq!(label_value("canary-1"), Ok(()));
        assert!(label_value("no spaces").is_err());
        assert!(label_value(&"v".repeat(64)).is_err());
    }
}
