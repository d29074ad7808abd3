//! `convert -f FILE`: Argo Rollouts manifests (Rollout, AnalysisTemplate, ClusterAnalysisTemplate,
//! AnalysisRun) to stepwise. The apiVersion changes, Argo's label and annotation names become
//! stepwise's, expr-lang conditions become CEL where the rewrite is mechanical, and every field
//! stepwise does not have is removed and reported with the reason (docs/compatibility.md); other
//! documents pass through as written.

use serde_yaml::{Mapping, Value};

use crate::expr;
use crate::lint::API_VERSION;
use crate::manifest::split;
use crate::schema::{check_object, schema_of};

/// Argo's API version.
pub const ARGO_API_VERSION: &str = "argoproj.io/v1alpha1";

use stepwise_api::notifications::{ARGO_SUBSCRIBE_PREFIX, SUBSCRIBE_PREFIX};

/// The kinds `convert` turns into stepwise's.
pub const KINDS: [&str; 4] = ["Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate", "AnalysisRun"];

/// Argo's label and annotation names and stepwise's (docs/compatibility.md).
pub const RENAMES: [(&str, &str); 6] = [
    ("rollouts-pod-template-hash", stepwise_api::POD_TEMPLATE_HASH_LABEL),
    ("rollout.argoproj.io/revision", stepwise_api::REVISION_ANNOTATION),
    ("scale-down-deadline", stepwise_api::SCALE_DOWN_DEADLINE_ANNOTATION),
    ("argo-rollouts.argoproj.io/managed-by-rollouts", stepwise_api::MANAGED_BY_ANNOTATION),
    ("rollout-type", stepwise_api::ANALYSIS_KIND_LABEL),
    ("step-index", stepwise_api::STEP_INDEX_LABEL),
];

/// Something a person should know about one document's conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// 1-based number of the document.
    pub doc: usize,
    /// Its kind and name, as `Kind/name`.
    pub object: String,
    /// The field, as written in the Argo manifest.
    pub field: String,
    /// What was done and why.
    pub message: String,
}

/// A converted file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Converted {
    /// The documents, converted or as written, separated by `---`.
    pub yaml: String,
    /// What was changed, removed or kept with a different meaning.
    pub notes: Vec<Note>,
    /// How many documents were converted.
    pub converted: usize,
}

impl Converted {
    /// One line per note: `FILE:doc N (Kind/name): field: message`.
    pub fn report(&self, file: &str) -> String {
        self.notes
            .iter()
            .map(|n| {
                let field = if n.field.is_empty() { String::new() } else { format!("{}: ", n.field) };
                format!("{file}:doc {} ({}): {field}{}\n", n.doc, n.object, n.message)
            })
            .collect()
    }
}

/// Why stepwise has no field of this name (the last key of its path), as docs/compatibility.md
/// and docs/routers.md say.
fn why_missing(path: &str) -> String {
    let key = path.rsplit('.').next().unwrap_or(path);
    let key = key.split('[').next().unwrap_or(key);
    match key {
        "templates" if path == "spec.templates" => {
            "a stepwise template cannot include other templates; name them all in the Rollout's analysis".into()
        }
        "experiment" => "stepwise has no Experiments".into(),
        _ => "stepwise has no such field".into(),
    }
}

/// Converts every document of a multi-document YAML text.
pub fn convert(text: &str) -> Converted {
    let mut out = Converted::default();
    let mut docs = Vec::new();
    for doc in split(text) {
        let parsed: Option<Value> = serde_yaml::from_str(&doc.text).ok();
        let api_version = parsed.as_ref().and_then(|v| v.get("apiVersion")).and_then(Value::as_str).map(str::to_string);
        let kind = parsed.as_ref().and_then(|v| v.get("kind")).and_then(Value::as_str).unwrap_or_default().to_string();
        let kind = kind.as_str();
        let name = parsed
            .as_ref()
            .and_then(|v| v.get("metadata"))
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let object = format!("{kind}/{name}");
        let mut notes = Vec::new();
        let mut note = |field: &str, message: String| {
            notes.push(Note { doc: doc.number, object: object.clone(), field: field.into(), message })
        };
        match (parsed, api_version.as_deref()) {
            (Some(mut value), Some(ARGO_API_VERSION)) if KINDS.contains(&kind) => {
                convert_one(kind, &mut value, &mut note);
                docs.push(serde_yaml::to_string(&value).unwrap_or_default());
                out.converted += 1;
            }
            (_, Some(ARGO_API_VERSION)) => {
                note(
                    "",
                    format!("passed through unchanged: stepwise has no {kind} (it converts {})", KINDS.join(", ")),
                );
                docs.push(doc.text.clone());
            }
            (None, _) => {
                note("", "passed through unchanged: not YAML".into());
                docs.push(doc.text.clone());
            }
            _ => docs.push(doc.text.clone()),
        }
        out.notes.extend(notes);
    }
    out.yaml = docs.join("---\n");
    out
}

fn convert_one(kind: &str, value: &mut Value, note: &mut impl FnMut(&str, String)) {
    value["apiVersion"] = Value::from(API_VERSION);
    note("apiVersion", format!("{ARGO_API_VERSION} → {API_VERSION}"));
    if let Some(Value::Mapping(meta)) = value.get_mut("metadata") {
        let server_set = ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"];
        let removed: Vec<&str> = server_set.into_iter().filter(|k| meta.shift_remove(*k).is_some()).collect();
        if !removed.is_empty() {
            note("metadata", format!("removed {}: set by the API server", removed.join(", ")));
        }
        if let Some(Value::Mapping(annotations)) = meta.get_mut("annotations")
            && annotations.shift_remove("kubectl.kubernetes.io/last-applied-configuration").is_some()
        {
            note(
                "metadata.annotations.kubectl.kubernetes.io/last-applied-configuration",
                "removed: it holds the Argo object".into(),
            );
        }
    }
    if let Value::Mapping(map) = value
        && map.shift_remove("status").is_some()
    {
        note("status", "removed: the status is written by the controller".into());
    }
    rename_labels(value, "", note);
    if kind == "Rollout" {
        convert_rollout(value, note);
    } else {
        convert_metrics(value, note);
    }
    if let Some(schema) = schema_of(kind) {
        for problem in check_object(&schema, value, true).problems.into_iter().filter(|p| p.unknown) {
            let why = why_missing(&problem.path);
            note(&problem.path, format!("removed: {why}"));
        }
    }
}

/// Renames Argo's label and annotation keys wherever labels, annotations or selectors are.
fn rename_labels(value: &mut Value, path: &str, note: &mut impl FnMut(&str, String)) {
    match value {
        Value::Mapping(map) => {
            for (key, v) in map.iter_mut() {
                let key = key.as_str().unwrap_or_default().to_string();
                let path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match (key.as_str(), v) {
                    ("labels" | "annotations" | "matchLabels", Value::Mapping(m)) => rename_keys(m, &path, note),
                    ("matchExpressions", Value::Sequence(items)) => {
                        for (i, e) in items.iter_mut().enumerate() {
                            if let Some(k) = e.get("key").and_then(Value::as_str)
                                && let Some((_, new)) = RENAMES.iter().find(|(old, _)| *old == k)
                            {
                                note(&format!("{path}[{i}].key"), format!("{k} → {new}"));
                                e["key"] = Value::from(*new);
                            }
                        }
                    }
                    (_, v) => rename_labels(v, &path, note),
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                rename_labels(item, &format!("{path}[{i}]"), note);
            }
        }
        _ => {}
    }
}

fn rename_keys(map: &mut Mapping, path: &str, note: &mut impl FnMut(&str, String)) {
    let entries: Vec<(Value, Value)> = std::mem::take(map).into_iter().collect();
    for (key, v) in entries {
        let k = key.as_str().unwrap_or_default();
        if let Some((_, new)) = RENAMES.iter().find(|(old, _)| *old == k) {
            note(&format!("{path}.{k}"), format!("renamed to {new}"));
            map.insert(Value::from(*new), v);
        } else if let Some(subscription) = k.strip_prefix(ARGO_SUBSCRIBE_PREFIX) {
            // Both prefixes are read; stepwise's own says whose subscription it is.
            let new = format!("{SUBSCRIBE_PREFIX}{subscription}");
            note(&format!("{path}.{k}"), format!("renamed to {new}"));
            map.insert(Value::from(new), v);
        } else if k.starts_with("rollout.argoproj.io/") || k.starts_with("argo-rollouts.argoproj.io/") {
            note(&format!("{path}.{k}"), "removed: written by Argo's controller; stepwise has no such key".into());
        } else {
            map.insert(key, v);
        }
    }
}

fn convert_rollout(value: &mut Value, note: &mut impl FnMut(&str, String)) {
    let Some(strategy) = value.get_mut("spec").and_then(|s| s.get_mut("strategy")) else { return };
    if let Some(canary) = strategy.get_mut("canary") {
        if let Some(Value::Sequence(steps)) = canary.get_mut("steps") {
            let mut kept = Vec::new();
            for (i, step) in std::mem::take(steps).into_iter().enumerate() {
                let unsupported = ["experiment", "plugin"].into_iter().find(|k| step.get(*k).is_some());
                match unsupported {
                    Some(kind) => {
                        let why = if kind == "experiment" {
                            "stepwise has no Experiments"
                        } else {
                            "stepwise has no step plugins"
                        };
                        note(
                            &format!("spec.strategy.canary.steps[{i}]"),
                            format!("the {kind} step is removed: {why}; the steps after it move up by one"),
                        );
                    }
                    None => kept.push(step),
                }
            }
            *steps = kept;
        }
        let routing = canary.get("trafficRouting");
        if let Some(Value::Mapping(plugins)) = routing.and_then(|r| r.get("plugins")) {
            for (name, _) in plugins {
                let name = name.as_str().unwrap_or_default();
                let field = format!("spec.strategy.canary.trafficRouting.plugins.{name}");
                if name == stepwise_traffic::gateway_api::PLUGIN_NAME {
                    note(
                        &field,
                        "kept: stepwise's built-in Gateway API router reads this form; no plugin binary is needed"
                            .into(),
                    );
                } else {
                    note(
                        &field,
                        format!(
                            "kept, but this build of stepwise cannot drive the plugin {name}: the Rollout will be InvalidSpec"
                        ),
                    );
                }
            }
        }
    }
}

fn convert_metrics(value: &mut Value, note: &mut impl FnMut(&str, String)) {
    let Some(spec) = value.get_mut("spec") else { return };
    for list in ["dryRun", "measurementRetention"] {
        if let Some(Value::Sequence(rules)) = spec.get(list) {
            for (i, rule) in rules.iter().enumerate() {
                if rule.get("metricName").and_then(Value::as_str) == Some("*") {
                    note(
                        &format!("spec.{list}[{i}].metricName"),
                        "\"*\" means every metric in stepwise (in Argo it is an invalid regular expression)".into(),
                    );
                }
            }
        }
    }
    let Some(Value::Sequence(metrics)) = spec.get_mut("metrics") else { return };
    for (i, metric) in metrics.iter_mut().enumerate() {
        for which in ["successCondition", "failureCondition"] {
            let Some(condition) = metric.get(which).and_then(Value::as_str).map(str::to_string) else { continue };
            let field = format!("spec.metrics[{i}].{which}");
            let rewritten = expr::to_cel(&condition);
            if rewritten.text != condition {
                note(&field, format!("expr-lang `{condition}` → CEL `{}`", rewritten.text));
                metric[which] = Value::from(rewritten.text.clone());
            }
            for left in rewritten.left {
                note(&field, format!("not rewritten, rewrite it in CEL by hand: {left}"));
            }
        }
        for provider in ["kubernetes", "plugin"] {
            if metric.get("provider").and_then(|p| p.get(provider)).is_some() {
                note(
                    &format!("spec.metrics[{i}].provider.{provider}"),
                    "kept; its measurements end in Error in this build of stepwise (docs/compatibility.md)".into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARGO: &str = "apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: error-rate
spec:
  metrics:
  - name: errors
    interval: 30s
    successCondition: 'all(result, # < 0.05) and len(result) > 0'
    provider:
      prometheus:
        address: http://prometheus:9090
        query: sum(rate(errors[1m]))
---
apiVersion: v1
kind: Service
metadata:
  name: app   # kept as written
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: app
  labels:
    rollouts-pod-template-hash: abc
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec: {containers: [{name: app, image: 'example.invalid/app:1'}]}
  strategy:
    canary:
      antiAffinity:
        preferredDuringSchedulingIgnoredDuringExecution: {weight: 1}
      steps:
      - setWeight: 20
      - experiment:
          templates: [{name: baseline, specRef: stable}]
      - analysis: {templates: [{templateName: error-rate}]}
";

    fn doc(converted: &Converted, n: usize) -> Value {
        let text = &split(&converted.yaml)[n].text;
        serde_yaml::from_str(text).expect("yaml")
    }

    fn notes_of(converted: &Converted, field: &str) -> Vec<String> {
        converted.notes.iter().filter(|n| n.field == field).map(|n| n.message.clone()).collect()
    }

    #[test]
    fn the_api_version_changes_and_the_condition_becomes_cel() {
        let converted = convert(ARGO);
        let template = doc(&converted, 0);
        assert_eq!(template["apiVersion"], "stepwise.dev/v1alpha1");
        assert_eq!(template["spec"]["metrics"][0]["successCondition"], "result.all(x, x < 0.05) && size(result) > 0");
        assert_eq!(
            notes_of(&converted, "spec.metrics[0].successCondition"),
            vec![
                "expr-lang `all(result, # < 0.05) and len(result) > 0` → CEL `result.all(x, x < 0.05) && size(result) > 0`"
            ]
        );
    }

    #[test]
    fn an_argo_notification_subscription_becomes_stepwise_s_with_its_recipients() {
        let argo = "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata:\n  name: a\n  annotations:\n    notifications.argoproj.io/subscribe.on-rollout-aborted.slack: ops;dev\n    team: x\nspec: {}\n";
        let converted = convert(argo);
        let annotations = &doc(&converted, 0)["metadata"]["annotations"];
        assert_eq!(annotations["notifications.stepwise.dev/subscribe.on-rollout-aborted.slack"], "ops;dev");
        assert_eq!(annotations["team"], "x");
        assert!(annotations.get("notifications.argoproj.io/subscribe.on-rollout-aborted.slack").is_none());
        assert_eq!(
            notes_of(&converted, "metadata.annotations.notifications.argoproj.io/subscribe.on-rollout-aborted.slack"),
            ["renamed to notifications.stepwise.dev/subscribe.on-rollout-aborted.slack"]
        );
    }

    #[test]
    fn another_kind_passes_through_as_written_comments_included() {
        let converted = convert(ARGO);
        assert_eq!(
            split(&converted.yaml)[1].text,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: app   # kept as written\n"
        );
        assert_eq!(converted.converted, 2);
    }

    #[test]
    fn an_argo_field_stepwise_now_has_is_kept_without_a_note() {
        let converted = convert(ARGO);
        let rollout = doc(&converted, 2);
        assert!(rollout["spec"]["strategy"]["canary"].get("antiAffinity").is_some());
        assert!(notes_of(&converted, "spec.strategy.canary.antiAffinity").is_empty());
    }

    #[test]
    fn an_experiment_step_is_removed_and_the_others_kept_in_order() {
        let converted = convert(ARGO);
        let steps = &doc(&converted, 2)["spec"]["strategy"]["canary"]["steps"];
        assert_eq!(steps.as_sequence().map(Vec::len), Some(2));
        assert_eq!(steps[0]["setWeight"], 20);
        assert!(steps[1].get("analysis").is_some());
        assert_eq!(notes_of(&converted, "spec.strategy.canary.steps[1]").len(), 1);
    }

    #[test]
    fn the_fields_keep_the_order_they_were_written_in() {
        let converted = convert(ARGO);
        let strategy = &doc(&converted, 2)["spec"];
        let keys: Vec<&str> = strategy.as_mapping().expect("spec").keys().filter_map(Value::as_str).collect();
        assert_eq!(keys, ["selector", "template", "strategy"]);
    }

    #[test]
    fn argo_label_names_become_stepwise_names() {
        let converted = convert(ARGO);
        let labels = &doc(&converted, 2)["metadata"]["labels"];
        assert_eq!(labels["stepwise.dev/pod-template-hash"], "abc");
        assert!(labels.get("rollouts-pod-template-hash").is_none());
    }

    #[test]
    fn the_gateway_api_plugin_form_is_kept() {
        let argo = "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: a}\nspec:\n  strategy:\n    canary:\n      canaryService: c\n      stableService: s\n      trafficRouting:\n        plugins:\n          argoproj-labs/gatewayAPI: {httpRoute: r, namespace: n}\n";
        let converted = convert(argo);
        let plugin =
            &doc(&converted, 0)["spec"]["strategy"]["canary"]["trafficRouting"]["plugins"]["argoproj-labs/gatewayAPI"];
        assert_eq!(plugin["httpRoute"], "r");
        assert!(
            notes_of(&converted, "spec.strategy.canary.trafficRouting.plugins.argoproj-labs/gatewayAPI")[0]
                .starts_with("kept")
        );
    }

    #[test]
    fn the_converted_example_lints_clean() {
        let converted = convert(ARGO);
        let linted = crate::lint::lint(&converted.yaml);
        let (report, problems) = crate::lint::report("-", &linted);
        assert!(!problems, "{report}");
    }
}
