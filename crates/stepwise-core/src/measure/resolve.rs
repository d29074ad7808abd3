//! Turns a run's spec into metrics ready to measure: arguments substituted, counts and limits
//! read, durations parsed, conditions compiled, dry-run and retention rules applied. Any problem
//! is one message that names the field, and the run ends in Error with it.

use std::time::Duration as StdDuration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use regex::Regex;
use stepwise_api::{AnalysisRunSpec, DEFAULT_CONSECUTIVE_ERROR_LIMIT, DEFAULT_MEASUREMENT_RETENTION, Duration, Metric};

use super::SecretValues;
use super::args::{ArgValues, Redactor, substitute};
use super::condition::Conditions;

/// A metric as it is measured and judged.
#[derive(Clone, Debug)]
pub(crate) struct MetricSpec {
    /// The metric with its arguments substituted.
    pub metric: Metric,
    /// Measurements to take (errors excluded); `None` is unbounded.
    pub count: Option<i32>,
    /// Time between measurements.
    pub interval: Option<StdDuration>,
    /// Time after the run starts before the first measurement.
    pub initial_delay: StdDuration,
    /// -1: failed measurements never fail the metric (only with a consecutive success limit).
    pub failure_limit: i32,
    pub inconclusive_limit: i32,
    pub consecutive_error_limit: i32,
    /// 0: off.
    pub consecutive_success_limit: i32,
    /// Results recorded, never judged against the run.
    pub dry_run: bool,
    /// Measurements kept.
    pub retention: usize,
    pub conditions: Conditions,
}

/// The run's metrics ready to measure, and the redactor for its secret values. On error, the
/// redactor is still returned so the error message itself can be redacted.
pub(crate) fn resolve(spec: &AnalysisRunSpec, secrets: &SecretValues) -> (Result<Vec<MetricSpec>, String>, Redactor) {
    let (args, secret_values) = ArgValues::resolve(spec.args.as_deref().unwrap_or_default(), secrets);
    let redactor = Redactor::new(&secret_values);
    (resolve_metrics(spec, &args), redactor)
}

fn resolve_metrics(spec: &AnalysisRunSpec, args: &ArgValues) -> Result<Vec<MetricSpec>, String> {
    let names: Vec<&str> = spec.metrics.iter().map(|m| m.name.as_str()).collect();
    let dry_run = dry_run_flags(spec, &names)?;
    let retention = retention_limits(spec, &names)?;
    let mut resolved = Vec::with_capacity(spec.metrics.len());
    for (i, raw) in spec.metrics.iter().enumerate() {
        let metric = substitute(raw, args).map_err(|e| format!("metrics[{i}] ({}): {e}", raw.name))?;
        resolved.push(metric_spec(metric, i, dry_run[i], retention[i])?);
    }
    Ok(resolved)
}

fn metric_spec(metric: Metric, i: usize, dry_run: bool, retention: usize) -> Result<MetricSpec, String> {
    check_provider(&metric).map_err(|e| format!("metrics[{i}] ({}): {e}", metric.name))?;
    let interval = duration(&metric.interval, &format!("metrics[{i}].interval"))?;
    if interval == Some(StdDuration::ZERO) {
        return Err(format!("metrics[{i}].interval must be longer than zero"));
    }
    let count = whole(&metric.count, &format!("metrics[{i}].count"), 0)?;
    let failure_limit = failure_limit(&metric.failure_limit, &format!("metrics[{i}].failureLimit"))?;
    let inconclusive_limit = whole(&metric.inconclusive_limit, &format!("metrics[{i}].inconclusiveLimit"), 0)?;
    let consecutive_success_limit =
        whole(&metric.consecutive_success_limit, &format!("metrics[{i}].consecutiveSuccessLimit"), 0)?;
    check_count(i, count, interval, failure_limit, inconclusive_limit)?;
    check_consecutive_success(i, count, failure_limit, consecutive_success_limit)?;
    Ok(MetricSpec {
        // Argo: no count (or 0) is one measurement without an interval, unbounded with one.
        count: match (count, interval) {
            (0, Some(_)) => None,
            (0, None) => Some(1),
            (n, _) => Some(n),
        },
        interval,
        initial_delay: duration(&metric.initial_delay, &format!("metrics[{i}].initialDelay"))?.unwrap_or_default(),
        failure_limit,
        inconclusive_limit,
        consecutive_error_limit: whole(
            &metric.consecutive_error_limit,
            &format!("metrics[{i}].consecutiveErrorLimit"),
            DEFAULT_CONSECUTIVE_ERROR_LIMIT,
        )?,
        consecutive_success_limit,
        dry_run,
        retention,
        conditions: Conditions::compile(&metric, i)?,
        metric,
    })
}

/// What the schema accepts for Argo compatibility but stepwise does not do, and provider fields
/// that cannot work however often they are tried: the run ends in Error at once with this
/// message (naming the field and what to do instead) rather than retrying a measurement that
/// cannot succeed.
pub fn check_provider(metric: &Metric) -> Result<(), String> {
    let provider = &metric.provider;
    let authentication = [
        ("prometheus", provider.prometheus.as_ref().and_then(|p| p.authentication.as_ref())),
        ("web", provider.web.as_ref().and_then(|w| w.authentication.as_ref())),
    ];
    for (kind, auth) in authentication {
        // An empty object asks for nothing.
        let Some(method) = auth.and_then(|a| a.as_object()).and_then(|a| a.keys().next()) else { continue };
        return Err(format!(
            "provider.{kind}.authentication.{method} is not supported; use headers with a secretKeyRef argument, \
             e.g. Authorization: Bearer {{{{args.token}}}} (see docs/analysis.md)"
        ));
    }
    if let Some(range) = provider.prometheus.as_ref().and_then(|p| p.range_query.as_ref()) {
        range.offsets().map_err(|e| format!("provider.prometheus.{e}"))?;
    }
    if let Some(web) = &provider.web
        && web.body.is_some()
        && web.json_body.is_some()
    {
        return Err("provider.web: set body or jsonBody, not both".into());
    }
    Ok(())
}

/// Argo's checks of a count, which the API server cannot make on a templated one: more than one
/// measurement needs an interval, and a count no larger than a limit could never cross it.
fn check_count(
    i: usize,
    count: i32,
    interval: Option<StdDuration>,
    failure: i32,
    inconclusive: i32,
) -> Result<(), String> {
    if count > 1 && interval.is_none() {
        return Err(format!("metrics[{i}].count {count} needs an interval between the measurements"));
    }
    for (field, limit) in [("failureLimit", failure), ("inconclusiveLimit", inconclusive)] {
        if count > 0 && count < limit {
            return Err(format!(
                "metrics[{i}].count {count} is less than {field} {limit}: the limit could never be crossed"
            ));
        }
    }
    Ok(())
}

/// Argo's checks of a consecutive success limit: no failure limit (-1) only makes sense with one,
/// and a count too small to hold the failures allowed and then the successes in a row could
/// never end the metric Successful.
fn check_consecutive_success(i: usize, count: i32, failure_limit: i32, limit: i32) -> Result<(), String> {
    if failure_limit == -1 && limit == 0 {
        return Err(format!(
            "metrics[{i}].failureLimit -1 (no limit) needs a consecutiveSuccessLimit greater than 0, or the metric could never fail nor end early"
        ));
    }
    let needed = failure_limit.max(0).saturating_add(limit);
    if limit > 0 && count > 0 && count < needed {
        return Err(format!(
            "metrics[{i}].consecutiveSuccessLimit {limit}: count {count} is less than failureLimit + consecutiveSuccessLimit ({needed})"
        ));
    }
    Ok(())
}

/// failureLimit: a whole number, or -1 for none.
fn failure_limit(value: &Option<IntOrString>, field: &str) -> Result<i32, String> {
    let is_minus_one = match value {
        Some(IntOrString::Int(n)) => *n == -1,
        Some(IntOrString::String(s)) => s.trim() == "-1",
        None => false,
    };
    if is_minus_one {
        return Ok(-1);
    }
    whole(value, field, 0)
        .map_err(|e| if e.contains("negative") { format!("{e} (-1 is the only negative value: no limit)") } else { e })
}

/// A count or limit: an integer, or a string holding one (after templating), not negative.
fn whole(value: &Option<IntOrString>, field: &str, default: i32) -> Result<i32, String> {
    let n = match value {
        None => return Ok(default),
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            s.trim().parse::<i32>().map_err(|_| format!("{field} must be a whole number, not {s:?}"))?
        }
    };
    if n < 0 {
        return Err(format!("{field} must not be negative, not {n}"));
    }
    Ok(n)
}

fn duration(value: &Option<Duration>, field: &str) -> Result<Option<StdDuration>, String> {
    value.as_ref().map(|d| d.to_std().map_err(|e| format!("{field}: {e}"))).transpose()
}

/// A metric-name pattern matched against the whole name. `*` means every metric: Argo's docs
/// use it, but it is not a valid regular expression there.
fn name_pattern(pattern: &str, field: &str) -> Result<Regex, String> {
    let pattern = if pattern.trim() == "*" { ".*" } else { pattern };
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("{field} {pattern:?} is not a valid regular expression: {e}"))
}

/// Which metrics run in dry-run mode. A rule that matches no metric is an error: it is
/// almost certainly a misspelt name, and a misspelt dry-run could fail a rollout.
fn dry_run_flags(spec: &AnalysisRunSpec, names: &[&str]) -> Result<Vec<bool>, String> {
    let mut flags = vec![false; names.len()];
    for (r, rule) in spec.dry_run.iter().flatten().enumerate() {
        let field = format!("dryRun[{r}].metricName");
        let re = name_pattern(&rule.metric_name, &field)?;
        let matched = matching(&re, names, &field, &rule.metric_name)?;
        matched.into_iter().for_each(|i| flags[i] = true);
    }
    Ok(flags)
}

/// How many measurements each metric keeps; where rules overlap the last one wins, as in Argo.
fn retention_limits(spec: &AnalysisRunSpec, names: &[&str]) -> Result<Vec<usize>, String> {
    let mut limits = vec![DEFAULT_MEASUREMENT_RETENTION as usize; names.len()];
    for (r, rule) in spec.measurement_retention.iter().flatten().enumerate() {
        let field = format!("measurementRetention[{r}]");
        if rule.limit < 1 {
            return Err(format!("{field}.limit must be at least 1, not {}", rule.limit));
        }
        let re = name_pattern(&rule.metric_name, &format!("{field}.metricName"))?;
        let matched = matching(&re, names, &format!("{field}.metricName"), &rule.metric_name)?;
        matched.into_iter().for_each(|i| limits[i] = rule.limit as usize);
    }
    Ok(limits)
}

fn matching(re: &Regex, names: &[&str], field: &str, pattern: &str) -> Result<Vec<usize>, String> {
    let matched: Vec<usize> = (0..names.len()).filter(|&i| re.is_match(names[i])).collect();
    if matched.is_empty() {
        return Err(format!("{field} {pattern:?} matches no metric of the run"));
    }
    Ok(matched)
}
