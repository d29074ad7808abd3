//! The CustomResourceDefinitions, generated from the types: the single source of `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceSubresourceScale, JSONSchemaProps,
    JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate, Error, Rollout};

fn column(name: &str, type_: &str, json_path: &str, description: &str) -> CustomResourceColumnDefinition {
    CustomResourceColumnDefinition {
        name: name.to_string(),
        type_: type_.to_string(),
        json_path: json_path.to_string(),
        description: Some(description.to_string()),
        ..Default::default()
    }
}

fn finish(
    mut crd: CustomResourceDefinition,
    short_names: &[&str],
    columns: Vec<CustomResourceColumnDefinition>,
) -> CustomResourceDefinition {
    crd.spec.names.short_names = Some(short_names.iter().map(|s| s.to_string()).collect());
    crd.spec.names.categories = Some(vec!["stepwise".to_string()]);
    for version in &mut crd.spec.versions {
        version.additional_printer_columns = Some(columns.clone());
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            bound_int32(schema);
        }
    }
    crd
}

/// Gives every `int32` field the bounds of an i32 where the type sets none. The API server
/// otherwise stores 3000000000 in such a field, and the controller could not read the object
/// back at all, so it could not even say what is wrong: refused at `kubectl apply`, the field is
/// named.
fn bound_int32(schema: &mut JSONSchemaProps) {
    if schema.format.as_deref() == Some("int32") {
        schema.minimum.get_or_insert(f64::from(i32::MIN));
        schema.maximum.get_or_insert(f64::from(i32::MAX));
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.items.iter_mut().flat_map(|items| match items {
            JSONSchemaPropsOrArray::Schema(one) => std::slice::from_mut(one.as_mut()),
            JSONSchemaPropsOrArray::Schemas(many) => many.as_mut_slice(),
        }))
        .chain(schema.additional_properties.iter_mut().filter_map(|a| match a {
            JSONSchemaPropsOrBool::Schema(one) => Some(one.as_mut()),
            JSONSchemaPropsOrBool::Bool(_) => None,
        }))
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten());
    for child in children {
        bound_int32(child);
    }
}

/// The Rollout CRD: status and scale subresources, so that `kubectl scale` and an HPA drive it.
pub fn rollout() -> CustomResourceDefinition {
    let mut crd = finish(
        Rollout::crd(),
        &["ro"],
        vec![
            column("Desired", "integer", ".spec.replicas", "Number of desired pods"),
            column("Current", "integer", ".status.replicas", "Pods of all versions"),
            column("Up-to-date", "integer", ".status.updatedReplicas", "Pods of the newest version"),
            column("Available", "integer", ".status.availableReplicas", "Available pods"),
            column("Phase", "string", ".status.phase", "Healthy, Progressing, Paused or Degraded"),
            column("Step", "integer", ".status.currentStepIndex", "Index of the current canary step"),
            column("Age", "date", ".metadata.creationTimestamp", "Time since creation"),
        ],
    );
    for version in &mut crd.spec.versions {
        let sub = version.subresources.get_or_insert_with(Default::default);
        sub.scale = Some(CustomResourceSubresourceScale {
            spec_replicas_path: ".spec.replicas".to_string(),
            status_replicas_path: ".status.HPAReplicas".to_string(),
            label_selector_path: Some(".status.selector".to_string()),
        });
    }
    crd
}

/// The AnalysisTemplate CRD.
pub fn analysis_template() -> CustomResourceDefinition {
    finish(
        AnalysisTemplate::crd(),
        &["at"],
        vec![column("Age", "date", ".metadata.creationTimestamp", "Time since creation")],
    )
}

/// The ClusterAnalysisTemplate CRD.
pub fn cluster_analysis_template() -> CustomResourceDefinition {
    finish(
        ClusterAnalysisTemplate::crd(),
        &["cat"],
        vec![column("Age", "date", ".metadata.creationTimestamp", "Time since creation")],
    )
}

/// The AnalysisRun CRD.
pub fn analysis_run() -> CustomResourceDefinition {
    finish(
        AnalysisRun::crd(),
        &["ar"],
        vec![
            column("Phase", "string", ".status.phase", "Pending, Running, Successful, Failed, Error or Inconclusive"),
            column("Metrics", "integer", ".status.runSummary.count", "Metrics in the run (dry-run excluded)"),
            column("Successful", "integer", ".status.runSummary.successful", "Metrics that ended Successful"),
            column("Failed", "integer", ".status.runSummary.failed", "Metrics that ended Failed"),
            column("Inconclusive", "integer", ".status.runSummary.inconclusive", "Metrics that ended Inconclusive"),
            column("Error", "integer", ".status.runSummary.error", "Metrics that ended in Error"),
            column("Message", "string", ".status.message", "Why the run is in its phase"),
            column("Age", "date", ".metadata.creationTimestamp", "Time since creation"),
        ],
    )
}

/// Every CRD of stepwise.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![rollout(), analysis_template(), cluster_analysis_template(), analysis_run()]
}

/// Every CRD as `(file name, YAML)`, as committed under `crds/`.
pub fn rendered() -> Result<Vec<(String, String)>, Error> {
    all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_yaml::to_string(&crd).map_err(|source| Error::RenderCrd { name: name.clone(), source })?;
            Ok((format!("{name}.yaml"), yaml))
        })
        .collect()
}
