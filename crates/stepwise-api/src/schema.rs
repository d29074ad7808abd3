//! Hand-written schemas for fields whose derived schema would be wrong or enormous.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A pod template is validated by the API server when stepwise creates the ReplicaSet from it;
/// repeating the whole PodSpec schema here would make the CRD several hundred kilobytes
/// (Argo Rollouts does the same).
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// An integer or a string, as Kubernetes' IntOrString.
pub fn int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
    })
}

/// An optional integer or percentage string such as `25%`.
pub fn int_or_percent(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "maxLength": 8,
        "x-kubernetes-validations": [
            {"rule": "type(self) == int ? self >= 0 : self.matches('^[0-9]+%?$')", "message": "must be a number of pods or a percentage such as 25%"}
        ],
    })
}

/// Router and metric plugins by name, each with a configuration of its own shape: kept as written (a plain
/// `additionalProperties: true` would let the API server prune every field inside).
pub fn plugin_configs(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "additionalProperties": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// trafficRouting's rule that it names a router, made from its properties: every one but its
/// settings is a router, so that a router field added is in the rule without another edit.
pub fn names_a_router(schema: &mut Schema) {
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else { return };
    let routers: Vec<&str> = properties
        .keys()
        .map(String::as_str)
        .filter(|field| !crate::TrafficRouting::SETTINGS.contains(field))
        .collect();
    let rule = routers.iter().map(|r| format!("(has(self.{r}) ? 1 : 0)")).collect::<Vec<_>>().join(" + ") + " >= 1";
    let (last, others) = routers.split_last().unwrap_or((&"", &[]));
    let message = format!("trafficRouting must set at least one of {} and {last}", others.join(", "));
    schema.insert("x-kubernetes-validations".into(), serde_json::json!([{"rule": rule, "message": message}]));
}
