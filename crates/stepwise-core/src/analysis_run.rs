//! The AnalysisRun for an analysis the Rollout asks for: the metrics of its templates combined,
//! the Rollout's argument values filled in, and the labels core reads back when it observes the
//! run. A pure function of the Rollout and the templates in [`Observed`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use stepwise_api::{
    ANALYSIS_KIND_LABEL, AnalysisRun, AnalysisRunSpec, AnalysisTemplateRef, AnalysisTemplateSpec, Argument, DryRun,
    MeasurementRetention, Metric, POD_TEMPLATE_HASH_LABEL, PodTemplateHashValue, REVISION_ANNOTATION, Rollout,
    RolloutAnalysis, STEP_INDEX_LABEL,
};

use crate::observed::{AnalysisKind, Observed};

/// What a run judges and where it sits in the Rollout's history.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRequest<'a> {
    /// Name of the run.
    pub name: &'a str,
    /// What it judges.
    pub kind: AnalysisKind,
    /// Pod template hash of the version judged.
    pub hash: &'a str,
    /// Revision of the version judged.
    pub revision: i64,
}

/// The owner reference that makes the garbage collector remove what a Rollout created.
pub fn owner_reference(rollout: &Rollout) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", stepwise_api::GROUP, stepwise_api::VERSION),
        kind: "Rollout".into(),
        name: rollout.metadata.name.clone().unwrap_or_default(),
        uid: rollout.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The template a reference names, or an error that names the reference.
pub fn find_template<'o>(
    observed: &'o Observed,
    name: &str,
    cluster_scope: bool,
) -> Result<&'o AnalysisTemplateSpec, String> {
    if name.is_empty() {
        return Err("templateName must not be empty".into());
    }
    let found = if cluster_scope {
        observed.cluster_analysis_templates.get(name)
    } else {
        observed.analysis_templates.get(name)
    };
    found.ok_or_else(|| format!("{} not found", template_label(cluster_scope, name)))
}

/// `AnalysisTemplate a` or `ClusterAnalysisTemplate a`, as messages name a template.
fn template_label(cluster_scope: bool, name: &str) -> String {
    let kind = if cluster_scope { "ClusterAnalysisTemplate" } else { "AnalysisTemplate" };
    format!("{kind} {name}")
}

/// The most metrics a run holds (the AnalysisRun schema's limit).
const MAX_RUN_METRICS: usize = 50;

/// What the templates of an analysis bring to its run, those they name included.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CombinedTemplates {
    /// Every metric, each template's own first, then those of the templates it names, in order.
    pub metrics: Vec<Metric>,
    /// The arguments, merged by name.
    pub args: Vec<Argument>,
    /// Every template's dryRun rules.
    pub dry_run: Vec<DryRun>,
    /// Every template's measurementRetention rules.
    pub measurement_retention: Vec<MeasurementRetention>,
}

/// Combines the templates `refs` name and, recursively, the templates those name (Argo's
/// `templates` field): metrics concatenated, arguments merged, dryRun and measurementRetention
/// concatenated. A template reached twice counts once, as in Argo. A metric name in two
/// templates, an argument given two values, a template that names itself through others, or a
/// template that is not there is an error naming them.
pub fn combine_templates(observed: &Observed, refs: &[AnalysisTemplateRef]) -> Result<CombinedTemplates, String> {
    let mut walk = Walk {
        observed,
        combined: CombinedTemplates::default(),
        metric_origin: Vec::new(),
        arg_origin: Vec::new(),
        done: BTreeSet::new(),
    };
    let mut path = Vec::new();
    for r in refs {
        walk.visit(r, &mut path, None)?;
    }
    let metrics = walk.combined.metrics.len();
    if metrics == 0 {
        return Err("the templates hold no metrics".into());
    }
    if metrics > MAX_RUN_METRICS {
        return Err(format!("the templates combine into {metrics} metrics; a run holds at most {MAX_RUN_METRICS}"));
    }
    Ok(walk.combined)
}

/// A template by scope and name.
type TemplateKey = (bool, String);

/// The state of [`combine_templates`]: what is combined so far and where each part came from.
struct Walk<'o> {
    observed: &'o Observed,
    combined: CombinedTemplates,
    /// The template each metric of `combined.metrics` came from.
    metric_origin: Vec<String>,
    /// The template each argument of `combined.args` came from.
    arg_origin: Vec<String>,
    /// Templates already combined.
    done: BTreeSet<TemplateKey>,
}

impl Walk<'_> {
    /// Adds the template `r` names, then the templates it names; `path` is the chain of
    /// templates that led here, `parent` the one whose `templates` holds `r`.
    fn visit(
        &mut self,
        r: &AnalysisTemplateRef,
        path: &mut Vec<TemplateKey>,
        parent: Option<&str>,
    ) -> Result<(), String> {
        let key = (r.cluster_scope == Some(true), r.template_name.clone());
        let label = template_label(key.0, &key.1);
        if let Some(at) = path.iter().position(|k| *k == key) {
            let cycle: Vec<String> = path[at..].iter().map(|(c, n)| template_label(*c, n)).chain([label]).collect();
            return Err(format!("templates form a cycle: {}", cycle.join(" → ")));
        }
        if self.done.contains(&key) {
            return Ok(());
        }
        let spec = find_template(self.observed, &key.1, key.0).map_err(|e| match parent {
            Some(parent) => format!("{e} (named in spec.templates of {parent})"),
            None => e,
        })?;
        for m in &spec.metrics {
            if let Some(i) = self.combined.metrics.iter().position(|x| x.name == m.name) {
                let first = &self.metric_origin[i];
                return Err(if *first == label {
                    format!("metric {} appears twice in {label}", m.name)
                } else {
                    format!("metric {} is in both {first} and {label}", m.name)
                });
            }
            self.combined.metrics.push(m.clone());
            self.metric_origin.push(label.clone());
        }
        for a in spec.args.iter().flatten() {
            match self.combined.args.iter().position(|x| x.name == a.name) {
                Some(i) => {
                    let existing = &mut self.combined.args[i];
                    if existing.value.is_some() && a.value.is_some() && existing.value != a.value {
                        return Err(format!(
                            "argument {} has different values in {} and {label}",
                            a.name, self.arg_origin[i]
                        ));
                    }
                    // The argument that says where its value comes from wins over one that
                    // only declares it.
                    if existing.value.is_none() && existing.value_from.is_none() {
                        *existing = a.clone();
                        self.arg_origin[i] = label.clone();
                    }
                }
                None => {
                    self.combined.args.push(a.clone());
                    self.arg_origin.push(label.clone());
                }
            }
        }
        self.combined.dry_run.extend(spec.dry_run.iter().flatten().cloned());
        self.combined.measurement_retention.extend(spec.measurement_retention.iter().flatten().cloned());
        path.push(key.clone());
        for child in spec.templates.iter().flatten() {
            self.visit(child, path, Some(&label))?;
        }
        path.pop();
        self.done.insert(key);
        Ok(())
    }
}

/// Builds the run, or says what in the analysis (`field` is where it sits in the Rollout) cannot
/// be turned into one.
pub fn build_analysis_run(
    rollout: &Rollout,
    observed: &Observed,
    analysis: &RolloutAnalysis,
    request: &RunRequest,
) -> Result<AnalysisRun, String> {
    let combined = combine_templates(observed, &analysis.templates)?;
    let metrics = combined.metrics;
    let mut args = combined.args;
    let mut dry_run = analysis.dry_run.clone().unwrap_or_default();
    dry_run.extend(combined.dry_run);
    let mut retention = analysis.measurement_retention.clone().unwrap_or_default();
    retention.extend(combined.measurement_retention);
    for given in analysis.args.clone().unwrap_or_default() {
        let value = argument_value(rollout, &given, request.hash)?;
        match args.iter_mut().find(|a| a.name == given.name) {
            Some(a) => {
                a.value = Some(value);
                a.value_from = None;
            }
            None => args.push(Argument { name: given.name.clone(), value: Some(value), value_from: None }),
        }
    }
    // A template's fieldRef reads the Rollout, which only this side has; a secretKeyRef stays
    // for the AnalysisRun controller, which reads the Secret when it measures.
    for a in args.iter_mut().filter(|a| a.value.is_none()) {
        if let Some(path) = a.value_from.as_ref().and_then(|f| f.field_ref.as_ref()).map(|f| f.field_path.clone()) {
            let value = field_of(rollout, &path)
                .ok_or_else(|| format!("args.{}: field {path} not found on the Rollout", a.name))?;
            a.value = Some(value);
            a.value_from = None;
        }
    }
    if let Some(missing) = args.iter().find(|a| a.value.is_none() && a.value_from.is_none()) {
        return Err(format!("args.{} is not given a value", missing.name));
    }
    let meta = analysis.analysis_run_metadata.clone().unwrap_or_default();
    let mut labels = rollout.spec.selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default();
    labels.extend(meta.labels.unwrap_or_default());
    labels.extend(run_labels(request.kind, request.hash));
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(REVISION_ANNOTATION.into(), request.revision.to_string());
    Ok(AnalysisRun {
        metadata: ObjectMeta {
            name: Some(request.name.into()),
            namespace: rollout.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(rollout)]),
            ..Default::default()
        },
        spec: AnalysisRunSpec {
            metrics,
            args: if args.is_empty() { None } else { Some(args) },
            terminate: None,
            dry_run: if dry_run.is_empty() { None } else { Some(dry_run) },
            measurement_retention: if retention.is_empty() { None } else { Some(retention) },
            // Templates have no TTL (as in Argo): a Rollout's runs go by its history limits.
            ttl_strategy: None,
        },
        status: None,
    })
}

/// The labels by which core recognises a run it started: [`AnalysisKind::from_labels`] reads
/// them back.
pub fn run_labels(kind: AnalysisKind, hash: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (POD_TEMPLATE_HASH_LABEL.to_string(), hash.to_string()),
        (ANALYSIS_KIND_LABEL.to_string(), kind.label().to_string()),
    ]);
    if let AnalysisKind::Step(i) = kind {
        labels.insert(STEP_INDEX_LABEL.into(), i.to_string());
    }
    labels
}

fn argument_value(
    rollout: &Rollout,
    given: &stepwise_api::AnalysisRunArgument,
    latest: &str,
) -> Result<String, String> {
    let stable = rollout.status.as_ref().and_then(|s| s.stable_rs.clone()).unwrap_or_default();
    match (&given.value, &given.value_from) {
        (Some(v), _) => Ok(v.clone()),
        (None, Some(from)) => match (&from.pod_template_hash_value, &from.field_ref) {
            (Some(PodTemplateHashValue::Stable), _) => Ok(stable),
            (Some(PodTemplateHashValue::Latest), _) => Ok(latest.to_string()),
            (None, Some(f)) => field_of(rollout, &f.field_path)
                .ok_or_else(|| format!("args.{}: field {} not found on the Rollout", given.name, f.field_path)),
            (None, None) => Err(format!("args.{} has no value", given.name)),
        },
        (None, None) => Err(format!("args.{} has no value", given.name)),
    }
}

/// `metadata.name`, `metadata.namespace`, `metadata.uid`, `metadata.labels['k']`,
/// `metadata.annotations['k']`.
fn field_of(rollout: &Rollout, path: &str) -> Option<String> {
    let key = |p: &str| p.split_once("['").and_then(|(_, rest)| rest.strip_suffix("']")).map(str::to_string);
    let meta = &rollout.metadata;
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        p if p.starts_with("metadata.labels[") => meta.labels.as_ref()?.get(&key(p)?).cloned(),
        p if p.starts_with("metadata.annotations[") => meta.annotations.as_ref()?.get(&key(p)?).cloned(),
        _ => None,
    }
}
