//! `lint -f FILE`: what the API server and the controller would say about a manifest, offline.
//!
//! Three layers, in the order they meet a manifest: the CRD's structural schema and CEL rules
//! (what `kubectl apply` refuses), decoding into the real types, then the step machine's own
//! validation (what the controller reports as `InvalidSpec` after the apply), run through
//! `stepwise_core::plan` with the world built from the same file. Facts only the cluster has
//! (Services, templates not in the file) are assumed present and listed as not checked offline.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_yaml::Value;
use stepwise_api::{AnalysisTemplateRef, AnalysisTemplateSpec, Metric, MetricProvider, Rollout, WebMetric};
use stepwise_core::Observed;

use crate::manifest::{Document, split};
use crate::schema::{check_object, schema_of};

/// The API group and version of every stepwise resource.
pub const API_VERSION: &str = "stepwise.dev/v1alpha1";

/// One thing wrong with a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The field, e.g. `spec.strategy.canary.steps[1]`; empty for the whole document.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// The line of the file, where it can be told.
    pub line: Option<usize>,
}

/// The lint of one document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocLint {
    /// 1-based number of the document in the file.
    pub number: usize,
    /// Its kind.
    pub kind: String,
    /// Its metadata.name.
    pub name: String,
    /// What is wrong with it.
    pub findings: Vec<Finding>,
    /// What could not be checked offline.
    pub unchecked: Vec<String>,
    /// Why it was not checked at all (not a stepwise resource).
    pub skipped: Option<String>,
}

/// A parsed document of the file.
struct Parsed<'a> {
    doc: &'a Document,
    value: Value,
    kind: String,
    name: String,
    stepwise: bool,
}

/// Lints every document of a multi-document YAML text.
pub fn lint(text: &str) -> Vec<DocLint> {
    let docs = split(text);
    let mut parsed = Vec::new();
    let mut out = Vec::new();
    for doc in &docs {
        match serde_yaml::from_str::<Value>(&doc.text) {
            Ok(value) => {
                let field = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                let kind = field("kind");
                let name = value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str);
                let stepwise = field("apiVersion").starts_with("stepwise.dev/");
                parsed.push(Parsed { doc, kind, name: name.unwrap_or_default().to_string(), stepwise, value });
            }
            Err(e) => {
                let line = e.location().map(|l| doc.first_line + l.line() - 1);
                out.push(DocLint {
                    number: doc.number,
                    findings: vec![Finding { field: String::new(), message: format!("not YAML: {e}"), line }],
                    ..Default::default()
                });
            }
        }
    }
    let world = World::from(&parsed);
    for p in &parsed {
        out.push(lint_one(p, &world));
    }
    out.sort_by_key(|d| d.number);
    out
}

/// What the file holds that the step machine asks the cluster for.
#[derive(Default)]
struct World {
    templates: BTreeMap<String, AnalysisTemplateSpec>,
    cluster_templates: BTreeMap<String, AnalysisTemplateSpec>,
    services: Vec<String>,
    deployments: BTreeMap<String, Deployment>,
}

impl World {
    fn from(parsed: &[Parsed<'_>]) -> World {
        let mut world = World::default();
        for p in parsed {
            let spec = || p.value.get("spec").and_then(|s| serde_yaml::from_value(s.clone()).ok());
            match (p.stepwise, p.kind.as_str()) {
                (true, "AnalysisTemplate") => {
                    if let Some(s) = spec() {
                        world.templates.insert(p.name.clone(), s);
                    }
                }
                (true, "ClusterAnalysisTemplate") => {
                    if let Some(s) = spec() {
                        world.cluster_templates.insert(p.name.clone(), s);
                    }
                }
                (false, "Service") => world.services.push(p.name.clone()),
                (false, "Deployment") => {
                    if let Ok(d) = serde_yaml::from_value(p.value.clone()) {
                        world.deployments.insert(p.name.clone(), d);
                    }
                }
                _ => {}
            }
        }
        world
    }
}

/// Splits `spec.x.y: message` or `spec.x.y must …` into the field and the rest.
fn field_and_message(at: &str, message: &str) -> (String, String) {
    if let Some((first, rest)) = message.split_once(' ')
        && (first.starts_with("spec.") || first.starts_with("status."))
        && !rest.starts_with("and ")
    {
        return (first.trim_end_matches(':').to_string(), rest.to_string());
    }
    (at.to_string(), message.to_string())
}

fn finding(doc: &Document, at: &str, message: &str) -> Finding {
    let (field, message) = field_and_message(at, message);
    let line = if field.is_empty() { None } else { doc.line_of(&field) };
    Finding { field, message, line }
}

fn lint_one(p: &Parsed<'_>, world: &World) -> DocLint {
    let mut lint = DocLint { number: p.doc.number, kind: p.kind.clone(), name: p.name.clone(), ..Default::default() };
    let api_version = p.value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    if api_version.starts_with("argoproj.io/") {
        lint.skipped =
            Some(format!("{api_version} is Argo Rollouts' API: `kubectl stepwise convert` turns it into stepwise's"));
        return lint;
    }
    if !p.stepwise {
        lint.skipped = Some("not a stepwise resource".into());
        return lint;
    }
    if api_version != API_VERSION {
        lint.findings.push(finding(p.doc, "apiVersion", &format!("must be {API_VERSION}, not {api_version}")));
        return lint;
    }
    let Some(schema) = schema_of(&p.kind) else {
        lint.findings.push(finding(p.doc, "kind", &format!("stepwise has no kind {:?}", p.kind)));
        return lint;
    };
    if p.name.is_empty() && p.value.get("metadata").and_then(|m| m.get("generateName")).is_none() {
        lint.findings.push(finding(p.doc, "metadata.name", "required field is missing"));
    }
    let mut value = p.value.clone();
    let checked = check_object(&schema, &mut value, false);
    lint.unchecked.extend(checked.unchecked);
    for problem in &checked.problems {
        lint.findings.push(finding(p.doc, &problem.path, &problem.message));
    }
    if !checked.problems.is_empty() {
        // What follows is what the controller says of a manifest the API server accepted.
        return lint;
    }
    match p.kind.as_str() {
        "Rollout" => match serde_yaml::from_value::<Rollout>(value) {
            Ok(rollout) => check_rollout(p.doc, &rollout, world, &mut lint),
            Err(e) => lint.findings.push(finding(p.doc, "", &format!("cannot be read as a Rollout: {e}"))),
        },
        "AnalysisTemplate" | "ClusterAnalysisTemplate" | "AnalysisRun" => {
            let metrics = value.get("spec").and_then(|s| s.get("metrics")).cloned();
            match metrics.map(serde_yaml::from_value::<Vec<Metric>>) {
                Some(Ok(metrics)) => {
                    check_conditions(p.doc, &metrics, &mut lint);
                    check_providers(p.doc, &metrics, &mut lint);
                }
                Some(Err(e)) => lint.findings.push(finding(p.doc, "spec.metrics", &format!("cannot be read: {e}"))),
                None => {}
            }
        }
        _ => {}
    }
    lint
}

fn check_conditions(doc: &Document, metrics: &[Metric], lint: &mut DocLint) {
    for (i, metric) in metrics.iter().enumerate() {
        for (which, condition) in
            [("successCondition", &metric.success_condition), ("failureCondition", &metric.failure_condition)]
        {
            let Some(expression) = condition.as_deref().filter(|c| !c.trim().is_empty()) else { continue };
            if let Err(e) = stepwise_core::measure::check_condition(expression) {
                let field = format!("spec.metrics[{i}].{which}");
                lint.findings.push(Finding {
                    line: doc.line_of(&field),
                    field,
                    message: format!("`{expression}` is not valid CEL: {e}"),
                });
            }
        }
    }
}

/// What the controller would end the run with at once: an authentication it does not support, a
/// range it cannot read.
fn check_providers(doc: &Document, metrics: &[Metric], lint: &mut DocLint) {
    for (i, metric) in metrics.iter().enumerate() {
        if let Err(message) = stepwise_core::measure::check_provider(metric) {
            let field = format!("spec.metrics[{i}].provider");
            lint.findings.push(Finding { line: doc.line_of(&field), field, message });
        }
    }
}

/// A template that stands for one the file does not hold: a metric without conditions.
fn placeholder_template(name: &str) -> AnalysisTemplateSpec {
    AnalysisTemplateSpec {
        metrics: vec![Metric {
            name: format!("not-checked-offline-{name}"),
            provider: MetricProvider {
                web: Some(WebMetric { url: "http://not-checked.invalid".into(), ..Default::default() }),
                ..Default::default()
            },
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The step machine's validation, with the world of the file.
fn check_rollout(doc: &Document, rollout: &Rollout, world: &World, lint: &mut DocLint) {
    let kinds_with =
        |ability: fn(&stepwise_traffic::RouterEntry) -> bool| stepwise_traffic::Routers::default().kinds(ability);
    let mut observed = Observed {
        router_kinds: kinds_with(|_| true),
        header_route_kinds: kinds_with(|r| r.header_routes),
        mirror_route_kinds: kinds_with(|r| r.mirror_routes),
        ping_pong_kinds: kinds_with(|r| r.ping_pong),
        ..Default::default()
    };
    // Which router plugins the controller was started with, only the controller knows.
    let routing = rollout.spec.strategy.canary.as_ref().and_then(|c| c.traffic_routing.as_ref());
    for plugin in routing.iter().flat_map(|t| t.plugins.iter().flat_map(|p| p.keys())) {
        let kind = format!("plugins.{plugin}");
        if !observed.router_kinds.contains(&kind) {
            lint.unchecked
                .push(format!("the router plugin {plugin} is registered with the controller (--router-plugin)"));
            for kinds in [
                &mut observed.router_kinds,
                &mut observed.header_route_kinds,
                &mut observed.mirror_route_kinds,
                &mut observed.ping_pong_kinds,
            ] {
                kinds.insert(kind.clone());
            }
        }
    }
    for service in rollout.spec.strategy.service_names() {
        observed.services.insert(service.to_string(), None);
        if !world.services.iter().any(|s| s == service) {
            lint.unchecked.push(format!("Service {service} exists (not in this file; only the cluster knows)"));
        }
    }
    // The templates the Rollout names, and those they name in turn.
    let mut pending: Vec<AnalysisTemplateRef> =
        rollout.spec.strategy.analysis_template_refs().into_iter().cloned().collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(reference) = pending.pop() {
        if !seen.insert((reference.cluster_scope == Some(true), reference.template_name.clone())) {
            continue;
        }
        let name = &reference.template_name;
        let (found, map, what) = if reference.cluster_scope == Some(true) {
            (world.cluster_templates.get(name), &mut observed.cluster_analysis_templates, "ClusterAnalysisTemplate")
        } else {
            (world.templates.get(name), &mut observed.analysis_templates, "AnalysisTemplate")
        };
        match found {
            Some(spec) => {
                pending.extend(spec.templates.iter().flatten().cloned());
                map.insert(name.clone(), spec.clone());
            }
            None => {
                if !map.contains_key(name) {
                    lint.unchecked
                        .push(format!("{what} {name} exists and fits the arguments given (not in this file)"));
                }
                map.insert(name.clone(), placeholder_template(name));
            }
        }
    }
    if let Some(workload) = &rollout.spec.workload_ref {
        match world.deployments.get(&workload.name).and_then(|d| d.spec.clone()) {
            Some(spec) => observed.workload = Some((spec.template, Some(spec.selector))),
            None => {
                lint.unchecked.push(format!("{} {} exists (not in this file)", workload.kind, workload.name));
                let labels = rollout.spec.selector.as_ref().and_then(|s| s.match_labels.clone());
                let template = PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: labels.clone(), ..Default::default() }),
                    ..Default::default()
                };
                let selector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some(labels.unwrap_or_else(|| [("app".into(), "placeholder".into())].into())),
                    ..Default::default()
                };
                observed.workload = Some((template, Some(selector)));
            }
        }
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let plan = stepwise_core::plan(rollout, &observed, &now);
    let invalid = plan.status.conditions.iter().find(|c| c.r#type == stepwise_core::condition::INVALID_SPEC);
    if let Some(condition) = invalid.filter(|c| c.status == "True") {
        let message = condition.message.clone().unwrap_or_default();
        lint.findings.push(finding(doc, "spec", &message));
    }
}

/// The report: one line per finding (`FILE:doc N (Kind/name): field: message (line L)`), else
/// one `ok` line per document; and whether anything was found.
pub fn report(file: &str, docs: &[DocLint]) -> (String, bool) {
    let mut out = String::new();
    let mut problems = false;
    for d in docs {
        let what = if d.kind.is_empty() { String::new() } else { format!(" ({}/{})", d.kind, d.name) };
        let prefix = format!("{file}:doc {}{what}", d.number);
        if let Some(why) = &d.skipped {
            out.push_str(&format!("{prefix}: skipped: {why}\n"));
            continue;
        }
        for f in &d.findings {
            problems = true;
            let field = if f.field.is_empty() { String::new() } else { format!("{}: ", f.field) };
            let line = f.line.map(|l| format!(" (line {l})")).unwrap_or_default();
            out.push_str(&format!("{prefix}: {field}{}{line}\n", f.message));
        }
        if d.findings.is_empty() {
            out.push_str(&format!("{prefix}: ok\n"));
            for u in &d.unchecked {
                out.push_str(&format!("{prefix}: not checked offline: {u}\n"));
            }
        }
    }
    if docs.is_empty() {
        out.push_str(&format!("{file}: no documents\n"));
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLUGIN_ROLLOUT: &str = "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: app}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: demo}}\n  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}\n  strategy:\n    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        plugins: {example.com/file: {path: /tmp/split.json}}\n        managedRoutes: [{name: beta}]\n      steps:\n      - setWeight: 20\n      - setHeaderRoute: {name: beta, match: [{headerName: x-beta, headerValue: {exact: 'yes'}}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: app-canary}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: app-stable}\n";

    #[test]
    fn a_router_plugin_is_left_unchecked_offline_rather_than_refused() {
        let linted = lint(PLUGIN_ROLLOUT);
        let rollout = &linted[0];
        assert!(rollout.findings.is_empty(), "{:?}", rollout.findings);
        assert!(
            rollout.unchecked.iter().any(|u| u.contains("router plugin example.com/file is registered")),
            "{:?}",
            rollout.unchecked
        );
    }

    const ARGO_TEMPLATES: &str = "apiVersion: stepwise.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: dd}\nspec:\n  metrics:\n  - name: errors\n    successCondition: result < 0.05\n    provider:\n      graphite: {address: 'http://graphite', query: 'errors'}\n---\napiVersion: stepwise.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: amp}\nspec:\n  metrics:\n  - name: rate\n    provider:\n      prometheus:\n        address: https://aps-workspaces.example.invalid/workspaces/ws\n        query: up\n        authentication: {sigv4: {region: eu-west-1}}\n---\napiVersion: stepwise.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: composed}\nspec:\n  templates: [{templateName: amp}]\n";

    #[test]
    fn an_argo_provider_passes_and_unsupported_authentication_is_found_offline_naming_the_field() {
        let linted = lint(ARGO_TEMPLATES);
        let messages =
            |d: &DocLint| d.findings.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>();
        assert!(messages(&linted[0]).is_empty(), "{:?}", messages(&linted[0]));
        let amp = messages(&linted[1]);
        assert_eq!(amp.len(), 1, "{amp:?}");
        assert!(amp[0].starts_with("spec.metrics[0].provider: provider.prometheus.authentication.sigv4 is not supported; use headers with a secretKeyRef argument"), "{amp:?}");
        // A template made only of other templates passes the schema and has nothing of its own.
        assert!(linted[2].findings.is_empty(), "{:?}", linted[2].findings);
    }
}
