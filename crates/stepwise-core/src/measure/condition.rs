//! Success and failure conditions: CEL expressions over the measured value, bound to `result`.
//!
//! The `cel` crate does the parsing and evaluation; this module binds the value, adds the helper
//! functions Argo users know (`isNaN`, `isInf`, `default`, `asInt`, `asFloat`, `isNil`), and turns
//! every failure into a sentence a person can act on. Nothing here panics on user input: the
//! evaluator runs under `catch_unwind`, because a condition is text from a user.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};

use cel::{Context, Env, ExecutionError, ParseErrors, Program, Value};
use stepwise_api::{AnalysisPhase, Metric};

/// Compiles a CEL condition; `Err` is a human message with the line and column of the problem.
/// Used to refuse a Rollout whose template has a broken condition before any run starts.
///
/// A template's condition may hold `{{args.NAME}}` placeholders whose values are not known yet:
/// each is read as an identifier of the same length, so `result[0] >= {{args.threshold}}` checks
/// and the columns of a problem stay where the user wrote them.
pub fn check_condition(expression: &str) -> Result<(), String> {
    compile(&placeholders_as_identifiers(expression)).map(|_| ())
}

fn placeholders_as_identifiers(expression: &str) -> String {
    let mut out = String::with_capacity(expression.len());
    let mut rest = expression;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else { break };
        out.push_str(&rest[..open]);
        out.push_str(&"_".repeat(rest[open..open + close + 2].chars().count()));
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

/// The standard CEL environment, built once: it holds only the standard library.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib()))
}

fn compile(expression: &str) -> Result<Program, String> {
    match catch_unwind(AssertUnwindSafe(|| env().compile(expression))) {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(errors)) => Err(describe_parse_errors(&errors)),
        Err(_) => Err("the expression could not be parsed".into()),
    }
}

/// `line 1, column 11: Syntax error: ...`, one clause per problem. The parser counts lines and
/// columns from 1.
fn describe_parse_errors(errors: &ParseErrors) -> String {
    let described: Vec<String> =
        errors.errors.iter().map(|e| format!("line {}, column {}: {}", e.pos.0, e.pos.1, e.msg)).collect();
    if described.is_empty() { "the expression could not be parsed".into() } else { described.join("; ") }
}

/// One compiled condition and the text it came from.
#[derive(Clone, Debug)]
struct Condition {
    /// `successCondition` or `failureCondition`, for messages.
    field: &'static str,
    text: String,
    program: Arc<Program>,
}

/// A metric's compiled conditions, compiled once per `due()` and reused for every measurement.
#[derive(Clone, Debug, Default)]
pub(crate) struct Conditions {
    success: Option<Condition>,
    failure: Option<Condition>,
}

impl Conditions {
    /// Compiles the metric's conditions. An empty condition is no condition, as in Argo. The error
    /// names the field: `metrics[0].successCondition: line 1, column 4: ...`.
    pub(crate) fn compile(metric: &Metric, index: usize) -> Result<Conditions, String> {
        let one = |field: &'static str, text: &Option<String>| -> Result<Option<Condition>, String> {
            let Some(text) = text.as_deref().map(str::trim).filter(|t| !t.is_empty()) else {
                return Ok(None);
            };
            let program = compile(text).map_err(|e| format!("metrics[{index}].{field} `{text}`: {e}"))?;
            Ok(Some(Condition { field, text: text.to_string(), program: Arc::new(program) }))
        };
        Ok(Conditions {
            success: one("successCondition", &metric.success_condition)?,
            failure: one("failureCondition", &metric.failure_condition)?,
        })
    }

    /// The phase of a measurement that returned `value`, and why when it is not Successful.
    ///
    /// Neither condition ⇒ Successful; only success ⇒ Failed when false; only failure ⇒ Failed
    /// when true; both ⇒ Failed when failure is true, Inconclusive when both are false.
    pub(crate) fn judge(&self, value: &serde_json::Value) -> (AnalysisPhase, Option<String>) {
        if self.success.is_none() && self.failure.is_none() {
            return (AnalysisPhase::Successful, None);
        }
        let mut ctx = Context::with_env(Arc::clone(env()));
        ctx.add_variable_from_value("result", to_cel(value));
        add_helpers(&mut ctx);
        let evaluate = |c: &Option<Condition>| c.as_ref().map(|c| c.evaluate(&ctx)).transpose();
        let (success, failure) = match (evaluate(&self.success), evaluate(&self.failure)) {
            (Ok(s), Ok(f)) => (s, f),
            (Err(e), _) | (_, Err(e)) => return (AnalysisPhase::Error, Some(no_data_or(value, e))),
        };
        let text = |c: &Option<Condition>| c.as_ref().map(|c| c.text.clone()).unwrap_or_default();
        match (success, failure) {
            (_, Some(true)) => (AnalysisPhase::Failed, Some(format!("{} was true", text(&self.failure)))),
            (Some(false), Some(false)) => (
                AnalysisPhase::Inconclusive,
                Some(format!("{} was false and {} was false", text(&self.success), text(&self.failure))),
            ),
            (Some(false), None) => (AnalysisPhase::Failed, Some(format!("{} was false", text(&self.success)))),
            _ => (AnalysisPhase::Successful, None),
        }
    }
}

impl Condition {
    fn evaluate(&self, ctx: &Context) -> Result<bool, String> {
        let (field, text) = (self.field, &self.text);
        match catch_unwind(AssertUnwindSafe(|| self.program.execute(ctx))) {
            Ok(Ok(Value::Bool(b))) => Ok(b),
            Ok(Ok(other)) => Err(format!("{field} `{text}` returned {}, not a boolean", type_name(&other))),
            Ok(Err(e)) => Err(format!("could not evaluate {field} `{text}`: {}", explain(&e))),
            Err(_) => Err(format!("could not evaluate {field} `{text}`: the evaluator failed")),
        }
    }
}

/// An evaluation error on an empty answer is about the missing data, not the expression.
fn no_data_or(value: &serde_json::Value, error: String) -> String {
    let empty = match value {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if empty {
        format!("no data: the query returned an empty result ({error})")
    } else if holds_nan(value) {
        format!(
            "the result holds NaN (a query dividing by zero, e.g. no requests in its window), which no \
             comparison orders; say what it means with isNaN, e.g. `isNaN(result[0]) || result[0] >= 0.95` ({error})"
        )
    } else {
        error
    }
}

fn holds_nan(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s == "NaN",
        serde_json::Value::Array(a) => a.iter().any(holds_nan),
        _ => false,
    }
}

/// The evaluator's error in words, with a hint where CEL surprises users coming from Argo.
fn explain(e: &ExecutionError) -> String {
    match e {
        ExecutionError::UnsupportedBinaryOperator(op, a, b) if is_number(a) && is_number(b) => format!(
            "cannot {op} {} and {}: CEL arithmetic does not mix int and double; write 100.0 rather than 100, \
             or convert with double(x)",
            type_name(a),
            type_name(b)
        ),
        ExecutionError::IndexOutOfBounds(i) => format!("index {} is out of range", show(i)),
        ExecutionError::NoSuchKey(k) => format!("no key {k} in the result"),
        _ => e.to_string(),
    }
}

fn is_number(v: &Value) -> bool {
    matches!(v, Value::Int(_) | Value::UInt(_) | Value::Float(_))
}

/// CEL's name for the type of a value.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        _ => "a value of another type",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        other => type_name(other).to_string(),
    }
}

/// JSON to CEL. Integers become `int` (not `uint`, as serde would make them) so that `result + 1`
/// works; other numbers become `double`.
fn to_cel(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        // JSON cannot hold NaN or the infinities, so providers spell them as Prometheus does;
        // as numbers again they compare as Argo users expect (`NaN >= 0.95` is false).
        serde_json::Value::String(s) if matches!(s.as_str(), "NaN" | "+Inf" | "-Inf") => {
            Value::Float(s.parse().unwrap_or(f64::NAN))
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(a) => Value::List(Arc::new(a.iter().map(to_cel).collect())),
        serde_json::Value::Object(o) => {
            Value::from(o.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect::<HashMap<String, Value>>())
        }
    }
}

fn add_helpers(ctx: &mut Context) {
    // None of these names is a standard overload, so adding them cannot fail; a failure would
    // only leave the helper undeclared, which evaluation reports.
    let _ = ctx.add_function("isNaN", is_nan);
    let _ = ctx.add_function("isInf", is_inf);
    let _ = ctx.add_function("default", default);
    let _ = ctx.add_function("isNil", is_nil);
    let _ = ctx.add_function("asInt", as_int);
    let _ = ctx.add_function("asFloat", as_float);
}

/// A number, or a string holding one (providers may spell NaN and Inf as text).
fn number(function: &str, v: &Value) -> Result<f64, ExecutionError> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::UInt(u) => Ok(*u as f64),
        Value::Float(f) => Ok(*f),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| ExecutionError::function_error(function, format!("{s:?} is not a number"))),
        other => Err(ExecutionError::function_error(function, format!("expects a number, got {}", type_name(other)))),
    }
}

fn is_nan(v: Value) -> Result<Value, ExecutionError> {
    number("isNaN", &v).map(|f| Value::Bool(f.is_nan()))
}

fn is_inf(v: Value) -> Result<Value, ExecutionError> {
    number("isInf", &v).map(|f| Value::Bool(f.is_infinite()))
}

fn default(v: Value, fallback: Value) -> Value {
    if matches!(v, Value::Null) { fallback } else { v }
}

fn is_nil(v: Value) -> Value {
    Value::Bool(matches!(v, Value::Null))
}

fn as_float(v: Value) -> Result<Value, ExecutionError> {
    number("asFloat", &v).map(Value::Float)
}

/// Like Argo's asInt: integers, doubles (truncated) and strings of whole numbers.
fn as_int(v: Value) -> Result<Value, ExecutionError> {
    let fail = |why: String| ExecutionError::function_error("asInt", why);
    match &v {
        Value::Int(i) => Ok(Value::Int(*i)),
        Value::UInt(u) => i64::try_from(*u).map(Value::Int).map_err(|_| fail(format!("{u} is too large"))),
        Value::Float(f) if f.is_finite() => Ok(Value::Int(f.trunc() as i64)),
        Value::String(s) => {
            s.trim().parse::<i64>().map(Value::Int).map_err(|_| fail(format!("{s:?} is not a whole number")))
        }
        other => Err(fail(format!("expects a number, got {}", show(other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn judge(
        success: Option<&str>,
        failure: Option<&str>,
        value: serde_json::Value,
    ) -> (AnalysisPhase, Option<String>) {
        let metric = Metric {
            success_condition: success.map(String::from),
            failure_condition: failure.map(String::from),
            ..Metric::default()
        };
        Conditions::compile(&metric, 0).expect("compiles").judge(&value)
    }

    #[test]
    fn the_compiled_program_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Conditions>();
    }

    #[test]
    fn an_empty_condition_is_no_condition() {
        assert_eq!(judge(Some("  "), None, json!(0)).0, AnalysisPhase::Successful);
    }

    #[test]
    fn a_number_too_large_for_int_is_a_uint_and_still_compares() {
        assert_eq!(judge(Some("result > 1"), None, json!(u64::MAX)).0, AnalysisPhase::Successful);
    }

    #[test]
    fn mixing_int_and_double_in_arithmetic_explains_the_fix() {
        let (phase, message) = judge(Some("result * 100 > 95"), None, json!(0.97));
        assert_eq!(phase, AnalysisPhase::Error);
        assert!(message.unwrap().contains("write 100.0 rather than 100"));
        assert_eq!(judge(Some("result * 100.0 > 95"), None, json!(0.97)).0, AnalysisPhase::Successful);
    }

    #[test]
    fn as_int_refuses_a_fraction_in_a_string() {
        let (phase, message) = judge(Some("asInt(result) == 1"), None, json!("1.5"));
        assert_eq!(phase, AnalysisPhase::Error);
        assert!(message.unwrap().contains("not a whole number"));
    }
}
