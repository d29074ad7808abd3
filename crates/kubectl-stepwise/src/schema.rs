//! The CRDs' structural schemas applied offline, as the API server applies them: types, unknown
//! fields (the server prunes them, or refuses them with strict field validation), required
//! fields, bounds, and the `x-kubernetes-validations` CEL rules, evaluated with the `cel` crate
//! that stepwise-core uses for metric conditions.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_yaml::Value;

/// What is wrong at a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The field, e.g. `spec.strategy.canary.steps[1]`.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
    /// Whether the field is one the schema does not know (pruned by `convert`).
    pub unknown: bool,
}

/// The outcome of checking one document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Everything the API server would refuse.
    pub problems: Vec<Problem>,
    /// Rules that could not be evaluated offline, with why.
    pub unchecked: Vec<String>,
    /// Values of the wrong type found so far: a rule above one is not evaluated.
    misshapen: usize,
}

/// The openAPIV3Schema of the stepwise CRD of `kind`, if stepwise has that kind.
pub fn schema_of(kind: &str) -> Option<JSONSchemaProps> {
    static CRDS: OnceLock<Vec<CustomResourceDefinition>> = OnceLock::new();
    let crds = CRDS.get_or_init(stepwise_api::crd::all);
    let crd = crds.iter().find(|c| c.spec.names.kind == kind)?;
    crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.clone()
}

/// Checks a whole object (apiVersion, kind, spec; metadata and status are the server's) against
/// `schema`. With `prune`, unknown fields are also removed from `object`.
pub fn check_object(schema: &JSONSchemaProps, object: &mut Value, prune: bool) -> Checked {
    let mut checked = Checked::default();
    let Value::Mapping(map) = object else {
        checked.problems.push(Problem { path: String::new(), message: "must be an object".into(), unknown: false });
        return checked;
    };
    // The API server checks apiVersion, kind and metadata itself; status is the controller's.
    let own = ["apiVersion", "kind", "metadata", "status"];
    let kept: Vec<(&str, Value)> = own.into_iter().filter_map(|k| Some((k, map.shift_remove(k)?))).collect();
    walk(schema, object, "", prune, &mut checked);
    if let Value::Mapping(map) = object {
        // Back in front, where people write them.
        let rest = std::mem::take(map);
        map.extend(kept.into_iter().map(|(k, v)| (Value::from(k), v)));
        map.extend(rest);
    }
    checked
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "an object",
        Value::Tagged(_) => "a tagged value",
    }
}

fn type_matches(type_: &str, value: &Value) -> bool {
    match type_ {
        "object" => value.is_mapping(),
        "array" => value.is_sequence(),
        "string" => value.is_string(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        "number" => value.is_number(),
        "boolean" => value.is_bool(),
        _ => true,
    }
}

fn article(type_: &str) -> String {
    match type_ {
        "object" => "an object".into(),
        "array" => "a list".into(),
        "integer" => "an integer".into(),
        other => format!("a {other}"),
    }
}

fn walk(schema: &JSONSchemaProps, value: &mut Value, path: &str, prune: bool, out: &mut Checked) {
    let misshapen_before = out.misshapen;
    let problem = |out: &mut Checked, path: &str, message: String| {
        out.problems.push(Problem { path: path.to_string(), message, unknown: false })
    };
    let misshapen = |out: &mut Checked, path: &str, message: String| {
        out.misshapen += 1;
        problem(out, path, message);
    };
    if value.is_null() {
        if schema.nullable != Some(true) && schema.x_kubernetes_preserve_unknown_fields != Some(true) {
            let expected = schema.type_.as_deref().map(article).unwrap_or_else(|| "a value".into());
            misshapen(out, path, format!("must be {expected}, not null"));
        }
        return;
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        if !(value.is_string() || value.as_i64().is_some()) {
            misshapen(out, path, format!("must be an integer or a string, not {}", describe(value)));
            return;
        }
    } else if let Some(type_) = schema.type_.as_deref()
        && !type_matches(type_, value)
    {
        misshapen(out, path, format!("must be {}, not {}", article(type_), describe(value)));
        return;
    }
    if let Some(allowed) = &schema.enum_ {
        let as_json = serde_json::to_value(&*value).unwrap_or_default();
        if !allowed.iter().any(|a| a.0 == as_json) {
            let names: Vec<String> = allowed.iter().map(|a| a.0.to_string()).collect();
            problem(out, path, format!("must be one of {}, not {as_json}", names.join(", ")));
        }
    }
    match value {
        Value::Mapping(map) => {
            let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
            let mut unknown = Vec::new();
            for (key, v) in map.iter_mut() {
                let key = match key {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
                };
                let path = child(path, &key);
                if let Some(s) = schema.properties.as_ref().and_then(|p| p.get(&key)) {
                    walk(s, v, &path, prune, out);
                } else if let Some(JSONSchemaPropsOrBool::Schema(s)) = &schema.additional_properties {
                    walk(s, v, &path, prune, out);
                } else if matches!(schema.additional_properties, Some(JSONSchemaPropsOrBool::Bool(true))) || preserve {
                } else {
                    out.problems.push(Problem { path, message: format!("unknown field {key:?}"), unknown: true });
                    unknown.push(key);
                }
            }
            if prune {
                for key in unknown {
                    map.shift_remove(key.as_str());
                }
            }
            for required in schema.required.iter().flatten() {
                if !map.contains_key(required.as_str()) {
                    problem(out, &child(path, required), "required field is missing".into());
                }
            }
            if let Some(max) = schema.max_properties
                && map.len() as i64 > max
            {
                problem(out, path, format!("must have at most {max} entries, not {}", map.len()));
            }
        }
        Value::Sequence(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(s)) = &schema.items {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(s, item, &format!("{path}[{i}]"), prune, out);
                }
            }
            if let Some(max) = schema.max_items
                && items.len() as i64 > max
            {
                problem(out, path, format!("must have at most {max} items, not {}", items.len()));
            }
            if let Some(min) = schema.min_items
                && (items.len() as i64) < min
            {
                problem(out, path, format!("must have at least {min} items, not {}", items.len()));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as i64;
            if let Some(max) = schema.max_length
                && len > max
            {
                problem(out, path, format!("must be at most {max} characters, not {len}"));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema.minimum
                && x < min
            {
                problem(out, path, format!("must be at least {min}, not {n}"));
            }
            if let Some(max) = schema.maximum
                && x > max
            {
                problem(out, path, format!("must be at most {max}, not {n}"));
            }
        }
        _ => {}
    }
    // As the API server does not judge a rule on a value of the wrong shape, rules run only
    // where everything below has the type the schema says (unknown fields, which the server
    // prunes, and bounds do not stop them).
    if out.misshapen == misshapen_before {
        for rule in schema.x_kubernetes_validations.iter().flatten() {
            match evaluate(&rule.rule, value) {
                Ok(true) => {}
                Ok(false) => {
                    let message = rule.message.clone().unwrap_or_else(|| format!("failed rule: {}", rule.rule));
                    problem(out, path, message);
                }
                Err(why) => out.unchecked.push(format!("{}: rule `{}` not checked offline: {why}", path, rule.rule)),
            }
        }
    }
}

fn env() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib()))
}

fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Sequence(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Mapping(map) => cel::Value::from(
            map.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), to_cel(v))))
                .collect::<std::collections::HashMap<String, cel::Value>>(),
        ),
        Value::Tagged(t) => to_cel(&t.value),
    }
}

/// Evaluates a CRD rule with `self` bound to `value`.
pub fn evaluate(rule: &str, value: &Value) -> Result<bool, String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let program = env().compile(rule).map_err(|e| e.to_string())?;
        let mut ctx = cel::Context::with_env(Arc::clone(env()));
        ctx.add_variable_from_value("self", to_cel(value));
        program.execute(&ctx).map_err(|e| e.to_string())
    }));
    match outcome {
        Ok(Ok(cel::Value::Bool(b))) => Ok(b),
        Ok(Ok(other)) => Err(format!("returned {other:?}, not a boolean")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the evaluator failed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("yaml")
    }

    #[test]
    fn the_crd_rules_evaluate_with_the_cel_crate() {
        let both_zero = "!has(self.maxSurge) || !has(self.maxUnavailable) || !((self.maxSurge == 0 || self.maxSurge == '0' || self.maxSurge == '0%') && (self.maxUnavailable == 0 || self.maxUnavailable == '0' || self.maxUnavailable == '0%'))";
        assert_eq!(evaluate(both_zero, &yaml("{maxSurge: 0, maxUnavailable: '0%'}")), Ok(false));
        assert_eq!(evaluate(both_zero, &yaml("{maxSurge: '25%', maxUnavailable: 0}")), Ok(true));
        let int_or_percent = "type(self) == int ? self >= 0 : self.matches('^[0-9]+%?$')";
        assert_eq!(evaluate(int_or_percent, &yaml("'25%'")), Ok(true));
        assert_eq!(evaluate(int_or_percent, &yaml("'a lot'")), Ok(false));
        assert_eq!(evaluate(int_or_percent, &yaml("-1")), Ok(false));
    }

    #[test]
    fn every_rule_of_the_generated_crds_compiles() {
        fn rules(s: &JSONSchemaProps, out: &mut Vec<String>) {
            out.extend(s.x_kubernetes_validations.iter().flatten().map(|r| r.rule.clone()));
            for p in s.properties.iter().flat_map(|p| p.values()) {
                rules(p, out);
            }
            if let Some(JSONSchemaPropsOrArray::Schema(i)) = &s.items {
                rules(i, out);
            }
            if let Some(JSONSchemaPropsOrBool::Schema(a)) = &s.additional_properties {
                rules(a, out);
            }
        }
        let mut all = Vec::new();
        for kind in ["Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate", "AnalysisRun"] {
            rules(&schema_of(kind).expect(kind), &mut all);
        }
        assert!(all.len() > 20, "{}", all.len());
        for rule in all {
            assert!(env().compile(&rule).is_ok(), "{rule}");
        }
    }

    #[test]
    fn an_unknown_field_is_named_and_pruned_on_request() {
        let schema = schema_of("Rollout").expect("Rollout");
        let mut doc = yaml(
            "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {app: a}}\n  template: {metadata: {labels: {app: a}}}\n  strategy:\n    canary:\n      antiAfinity: {}\n      steps: [{setWeight: 10}]\n",
        );
        let checked = check_object(&schema, &mut doc, true);
        assert_eq!(
            checked.problems,
            vec![Problem {
                path: "spec.strategy.canary.antiAfinity".into(),
                message: "unknown field \"antiAfinity\"".into(),
                unknown: true
            }]
        );
        assert!(doc["spec"]["strategy"]["canary"].get("antiAfinity").is_none());
        assert!(doc["metadata"]["name"].is_string(), "metadata is kept");
    }
}
