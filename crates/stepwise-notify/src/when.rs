//! A trigger condition's `when`: a CEL expression over the template's variables (`rollout`,
//! `notification`), deciding whether the condition's templates are sent.
//!
//! Argo writes these in expr-lang; the common ones (`rollout.status.phase == 'Degraded'`,
//! `rollout.spec.replicas > 1 && notification.step == 2`) read the same in CEL. Where they differ:
//! expr-lang reads a missing field as nil, CEL fails on it. A condition that reads a field the
//! Rollout does not have (a Rollout without `status.abort`, say) does not hold, as it would not
//! in Argo, and says so; any other failure to evaluate is an error for a person to fix.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};

use cel::{Context, Env, ExecutionError, Program, Value};

/// A compiled `when`, with the text it came from.
pub(crate) struct When {
    text: String,
    program: Program,
}

/// What evaluating a `when` found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It holds: the condition's templates are sent.
    Holds,
    /// It does not hold, and why in words.
    Unmet(String),
}

impl When {
    /// Compiles `text`; the error gives the line and column of each problem.
    pub(crate) fn compile(text: &str) -> Result<When, String> {
        match catch_unwind(AssertUnwindSafe(|| env().compile(text))) {
            Ok(Ok(program)) => Ok(When { text: text.to_string(), program }),
            Ok(Err(errors)) => {
                let problems: Vec<String> =
                    errors.errors.iter().map(|e| format!("line {}, column {}: {}", e.pos.0, e.pos.1, e.msg)).collect();
                Err(if problems.is_empty() { "it does not parse".into() } else { problems.join("; ") })
            }
            Err(_) => Err("it does not parse".into()),
        }
    }

    /// Evaluates the expression with each top-level key of `vars` (a JSON object) as a variable.
    /// Err is a condition that cannot be decided: a result that is not a boolean, a type mismatch.
    pub(crate) fn evaluate(&self, vars: &serde_json::Value) -> Result<Verdict, String> {
        let mut context = Context::with_env(Arc::clone(env()));
        for (name, value) in vars.as_object().into_iter().flatten() {
            context.add_variable_from_value(name.as_str(), to_cel(value));
        }
        let text = &self.text;
        match catch_unwind(AssertUnwindSafe(|| self.program.execute(&context))) {
            Ok(Ok(Value::Bool(true))) => Ok(Verdict::Holds),
            Ok(Ok(Value::Bool(false))) => Ok(Verdict::Unmet(format!("`{text}` is false"))),
            Ok(Ok(other)) => Err(format!("`{text}` gave {other:?}, not true or false")),
            Ok(Err(ExecutionError::NoSuchKey(key))) => {
                Ok(Verdict::Unmet(format!("`{text}` reads {key}, which the Rollout does not have")))
            }
            Ok(Err(e)) => Err(format!("`{text}` cannot be evaluated: {e}")),
            Err(_) => Err(format!("`{text}` cannot be evaluated: the evaluator failed")),
        }
    }
}

/// The standard CEL environment, built once.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib()))
}

/// JSON to CEL. Whole numbers become `int` so that `rollout.spec.replicas > 1` compares as
/// written; other numbers `double`.
fn to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => Value::List(Arc::new(items.iter().map(to_cel).collect())),
        serde_json::Value::Object(map) => {
            Value::from(map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect::<HashMap<String, Value>>())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn verdict(text: &str, vars: serde_json::Value) -> Result<Verdict, String> {
        When::compile(text).unwrap().evaluate(&vars)
    }

    #[test]
    fn an_argo_condition_reads_the_rollout_as_in_argo() {
        let vars = json!({"rollout": {"status": {"phase": "Degraded"}, "spec": {"replicas": 3}}});
        assert_eq!(verdict("rollout.status.phase == 'Degraded'", vars.clone()), Ok(Verdict::Holds));
        assert_eq!(verdict("rollout.spec.replicas > 1", vars.clone()), Ok(Verdict::Holds));
        assert_eq!(
            verdict("rollout.status.phase == 'Healthy'", vars),
            Ok(Verdict::Unmet("`rollout.status.phase == 'Healthy'` is false".into()))
        );
    }

    #[test]
    fn a_field_the_rollout_lacks_makes_the_condition_unmet_not_an_error() {
        let Ok(Verdict::Unmet(why)) = verdict("rollout.status.abort == true", json!({"rollout": {"status": {}}}))
        else {
            panic!("expected unmet")
        };
        assert!(why.contains("abort"), "{why}");
    }

    #[test]
    fn a_condition_that_is_not_a_boolean_or_does_not_parse_is_an_error() {
        assert!(verdict("rollout.spec.replicas", json!({"rollout": {"spec": {"replicas": 1}}})).is_err());
        assert!(verdict("rollout.spec.replicas > 'x'", json!({"rollout": {"spec": {"replicas": 1}}})).is_err());
        let err = When::compile("rollout.status.phase ==").err().unwrap();
        assert!(err.starts_with("line 1, column "), "{err}");
    }
}
