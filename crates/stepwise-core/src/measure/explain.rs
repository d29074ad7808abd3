//! Messages a person reads in `kubectl describe` and events: what failed, with the values, and
//! which limit it crossed.

use stepwise_api::{AnalysisPhase, Measurement, MetricResult};

use super::assess::{decisive, short_of_consecutive_successes};
use super::resolve::MetricSpec;

/// How many recent values a message quotes.
const VALUES_SHOWN: usize = 5;

/// Why a completed metric is in its phase, e.g. `success-rate: result[0] >= 0.95 was false for
/// 0.82, 0.8, 0.85 — 3 failed measurements, more than failureLimit 2`.
pub(crate) fn metric_message(r: &MetricResult, spec: &MetricSpec, terminated: bool) -> Option<String> {
    let name = &r.name;
    let limit = spec.consecutive_success_limit;
    let text = match r.phase {
        _ if short_of_consecutive_successes(r, spec) => format!(
            "{} — count reached with {} successful in a row, fewer than consecutiveSuccessLimit {limit}",
            tally(r),
            r.consecutive_success
        ),
        AnalysisPhase::Failed => crossed(r, AnalysisPhase::Failed, "failed", "failureLimit", spec.failure_limit),
        AnalysisPhase::Inconclusive => {
            crossed(r, AnalysisPhase::Inconclusive, "inconclusive", "inconclusiveLimit", spec.inconclusive_limit)
        }
        AnalysisPhase::Error => {
            let last = last_of(r, AnalysisPhase::Error).and_then(|m| m.message.clone());
            let n = r.consecutive_error;
            format!(
                "{} — {n} consecutive {}, more than consecutiveErrorLimit {}",
                last.unwrap_or_else(|| "measurement error".into()),
                plural(n, "error", "errors"),
                spec.consecutive_error_limit
            )
        }
        AnalysisPhase::Successful if terminated => format!("terminated after {}", tally(r)),
        AnalysisPhase::Successful if limit > 0 && r.consecutive_success >= limit => {
            format!("{} — {} successful in a row, consecutiveSuccessLimit {limit}", tally(r), r.consecutive_success)
        }
        AnalysisPhase::Successful => tally(r),
        AnalysisPhase::Pending | AnalysisPhase::Running => return None,
    };
    Some(format!("{name}: {text}"))
}

/// `<reason> for <values> — N <word> measurements, more than <limit field> L`.
fn crossed(r: &MetricResult, phase: AnalysisPhase, word: &str, field: &str, limit: i32) -> String {
    let of_phase: Vec<&Measurement> = r.measurements.iter().filter(|m| m.phase == phase).collect();
    let reason = of_phase.last().and_then(|m| m.message.clone());
    let skip = of_phase.len().saturating_sub(VALUES_SHOWN);
    let values: Vec<String> = of_phase[skip..].iter().filter_map(|m| m.value.as_deref().map(shown)).collect();
    let n = if phase == AnalysisPhase::Failed { r.failed } else { r.inconclusive };
    let what = match (reason, values.is_empty()) {
        (Some(reason), false) => format!("{reason} for {}", values.join(", ")),
        (Some(reason), true) => reason,
        (None, false) => format!("values {}", values.join(", ")),
        (None, true) => format!("{word} measurements"),
    };
    format!("{what} — {n} {word} {}, more than {field} {limit}", plural(n, "measurement", "measurements"))
}

/// A value as a person reads it: a one-element vector (a Prometheus instant query) shows its
/// element, and numbers are rounded (the measurement keeps them whole).
fn shown(value: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Array(a)) if a.len() == 1 => rounded(&a[0]).to_string(),
        Ok(parsed) => rounded(&parsed).to_string(),
        Err(_) => value.to_string(),
    }
}

/// Significant digits of a number in a message: enough to tell 0.9499 from 0.95.
const SIGNIFICANT_DIGITS: i32 = 4;

/// `value` with every number rounded to [`SIGNIFICANT_DIGITS`] (whole numbers stay whole).
fn rounded(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            if x == 0.0 || !x.is_finite() {
                return value.clone();
            }
            let decimals = (SIGNIFICANT_DIGITS - 1 - x.abs().log10().floor() as i32).max(0);
            if decimals == 0 {
                return Value::from(x.round() as i64);
            }
            let scale = 10f64.powi(decimals);
            serde_json::Number::from_f64((x * scale).round() / scale)
                .map(Value::Number)
                .unwrap_or_else(|| value.clone())
        }
        Value::Array(items) => Value::Array(items.iter().map(rounded).collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), rounded(v))).collect()),
        _ => value.clone(),
    }
}

fn last_of(r: &MetricResult, phase: AnalysisPhase) -> Option<&Measurement> {
    r.measurements.iter().rev().find(|m| m.phase == phase)
}

/// `5 measurements: 4 successful, 1 failed, 2 errors`, leaving out the zeros.
fn tally(r: &MetricResult) -> String {
    let mut parts = vec![format!("{} successful", r.successful)];
    if r.failed > 0 {
        parts.push(format!("{} failed", r.failed));
    }
    if r.inconclusive > 0 {
        parts.push(format!("{} inconclusive", r.inconclusive));
    }
    if r.error > 0 {
        parts.push(format!("{} {}", r.error, plural(r.error, "error", "errors")));
    }
    format!("{} {}: {}", r.count, plural(r.count, "measurement", "measurements"), parts.join(", "))
}

fn plural<'a>(n: i32, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The run's message once it completed: the metrics that decided it, then what dry-run metrics
/// would have done. `None` for a plain success.
pub(crate) fn run_message(results: &[MetricResult], terminated: bool) -> Option<String> {
    let said = |r: &MetricResult| r.message.clone().unwrap_or_else(|| format!("{}: {}", r.name, r.phase));
    let deciding: Vec<String> =
        results.iter().filter(|r| r.dry_run != Some(true) && decisive(r.phase)).map(said).collect();
    let dry: Vec<String> = results
        .iter()
        .filter(|r| r.dry_run == Some(true) && decisive(r.phase))
        .map(|r| format!("dry-run {}", said(r)))
        .collect();
    let mut message = deciding.join("; ");
    if terminated {
        message = if message.is_empty() { "Run Terminated".into() } else { format!("Run Terminated: {message}") };
    }
    if !dry.is_empty() {
        let sep = if message.is_empty() { "" } else { "; " };
        message = format!("{message}{sep}{}", dry.join("; "));
    }
    Some(message).filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn values_in_messages_keep_four_significant_digits_and_whole_numbers_stay_whole() {
        assert_eq!(shown("[0.7021421458041176]"), "0.7021");
        assert_eq!(shown("0.000123456"), "0.0001235");
        assert_eq!(shown("1234.5678"), "1235");
        assert_eq!(shown("42"), "42");
        assert_eq!(shown("[0.95, 12.3456]"), "[0.95,12.35]");
        assert_eq!(shown(r#"{"ok":false}"#), r#"{"ok":false}"#);
        assert_eq!(shown("not json"), "not json");
    }
}
