//! `crds/` (and the chart's copy) is generated from the types; these tests fail when it is stale or
//! undocumented.
//! `UPDATE_CRDS=1 cargo test -p stepwise-api --test crds` (or `just crds`) rewrites it.

use std::path::PathBuf;

use serde_json::Value;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds")
}

/// The Helm chart installs the same bytes.
fn chart_crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/stepwise/crds")
}

#[test]
fn committed_crds_match_what_the_types_generate() {
    let rendered = stepwise_api::crd::rendered().unwrap();
    let mut stale = Vec::new();
    for dir in [crds_dir(), chart_crds_dir()] {
        if std::env::var_os("UPDATE_CRDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            for (file, yaml) in &rendered {
                std::fs::write(dir.join(file), yaml).unwrap();
            }
        }
        for (file, yaml) in &rendered {
            let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            if &committed != yaml {
                stale.push(dir.join(file).display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "stale CRDs {stale:?}: run `just crds` and commit the result");
}

fn undocumented(path: &str, schema: &Value, out: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else { return };
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let here = format!("{path}.{name}");
            let described = prop.get("description").and_then(Value::as_str).is_some_and(|d| !d.trim().is_empty());
            // apiVersion, kind and metadata are Kubernetes' own and documented by it.
            let top_level_meta = path.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
            if !described && !top_level_meta {
                out.push(here.clone());
            }
            undocumented(&here, prop, out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = obj.get(key) {
            undocumented(&format!("{path}[]"), sub, out);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = obj.get(key).and_then(Value::as_array) {
            for sub in list {
                undocumented(path, sub, out);
            }
        }
    }
}

#[test]
fn every_schema_property_has_a_description() {
    for crd in stepwise_api::crd::all() {
        for version in &crd.spec.versions {
            let schema = serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
            let mut missing = Vec::new();
            undocumented("", &schema, &mut missing);
            assert!(missing.is_empty(), "{}: properties without a description: {missing:#?}", crd.spec.names.kind);
        }
    }
}

#[test]
fn rollout_crd_serves_status_and_scale_subresources_for_an_hpa() {
    let crd = stepwise_api::crd::rollout();
    let sub = crd.spec.versions[0].subresources.as_ref().unwrap();
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.HPAReplicas");
    assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
    assert_eq!(crd.spec.names.short_names, Some(vec!["ro".to_string()]));
}

#[test]
fn the_step_schema_carries_the_one_action_rule() {
    let yaml = serde_yaml::to_string(&stepwise_api::crd::rollout()).unwrap();
    assert!(yaml.contains("at most one of setWeight, pause, analysis and experiment"));
    assert!(yaml.contains("maxSurge and maxUnavailable cannot both be zero"));
    assert!(yaml.contains("canaryService must differ from stableService"));
    assert!(yaml.contains("exactly one of canary, blueGreen and recreate"));
}

/// The paths of the `int32` fields of `schema` that the API server would store out of an i32's
/// range.
fn unbounded_int32(path: &str, schema: &Value, out: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else { return };
    if obj.get("format").and_then(Value::as_str) == Some("int32") {
        let min = obj.get("minimum").and_then(Value::as_f64).unwrap_or(f64::NEG_INFINITY);
        let max = obj.get("maximum").and_then(Value::as_f64).unwrap_or(f64::INFINITY);
        if min < f64::from(i32::MIN) || max > f64::from(i32::MAX) {
            out.push(path.to_string());
        }
    }
    for (name, prop) in obj.get("properties").and_then(Value::as_object).into_iter().flatten() {
        unbounded_int32(&format!("{path}.{name}"), prop, out);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = obj.get(key) {
            unbounded_int32(&format!("{path}[]"), sub, out);
        }
    }
}

/// A chaos run found that `spec.replicas: 3000000000` was stored, after which the controller
/// could not decode the Rollout and wrote no status at all. Bounded, it is refused at apply time.
#[test]
fn every_int32_field_is_bounded_so_the_api_server_refuses_what_the_controller_could_not_read() {
    for crd in stepwise_api::crd::all() {
        for version in &crd.spec.versions {
            let schema = serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
            let mut unbounded = Vec::new();
            unbounded_int32("", &schema, &mut unbounded);
            assert!(unbounded.is_empty(), "{}: int32 fields without i32 bounds: {unbounded:#?}", crd.spec.names.kind);
            let text = serde_json::to_string(&schema).unwrap();
            assert!(text.contains("2147483647"), "{}: the bounds are there", crd.spec.names.kind);
        }
    }
}
