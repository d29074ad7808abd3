//! The AnalysisRun machine, as a user and the controller see it: runs written in YAML, measured
//! through `due()` and `record()` with scripted provider readings, on a clock the test moves.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use stepwise_api::{AnalysisPhase, AnalysisRun, AnalysisRunStatus, Measurement, MetricResult};
use stepwise_core::EventType;
use stepwise_core::measure::{self, Due, Outcome, Reading, RunUpdate, SecretValues, Step, Task};

use support::{analysis_run as run, at};

/// A run, a clock and the controller's loop: due → the provider answers → record → status.
struct Sim {
    run: AnalysisRun,
    now: i64,
    secrets: SecretValues,
}

impl Sim {
    fn new(spec: &str) -> Sim {
        Sim { run: run(spec), now: 0, secrets: SecretValues::new() }
    }

    fn due(&self) -> Due {
        measure::due(&self.run, &self.secrets, &at(self.now))
    }

    /// One reconcile: every due task is answered by `answer`, measured in one second.
    fn step(&mut self, answer: impl Fn(&Task) -> Reading) -> RunUpdate {
        let due = self.due();
        let outcomes = due
            .tasks
            .iter()
            .map(|t| Outcome {
                metric: t.metric.name.clone(),
                reading: answer(t),
                metadata: BTreeMap::new(),
                started_at: at(self.now),
                finished_at: at(self.now + 1),
            })
            .collect();
        let update = measure::record(&self.run, &due, outcomes, &at(self.now + 1));
        self.run.status = Some(update.status.clone());
        update
    }

    /// Reconciles whenever the run asks to be requeued, answering with `answer`, until it
    /// completes or `max` reconciles; returns the last update.
    fn until_done(&mut self, max: usize, answer: impl Fn(&Task) -> Reading) -> RunUpdate {
        let mut update = self.step(&answer);
        for _ in 0..max {
            let Some(wait) = update.requeue_after else { break };
            self.now += 1 + wait.as_secs() as i64;
            update = self.step(&answer);
        }
        update
    }

    fn status(&self) -> AnalysisRunStatus {
        self.run.status.clone().unwrap_or_default()
    }

    fn metric(&self, name: &str) -> MetricResult {
        self.status().metric_results.into_iter().find(|r| r.name == name).expect("metric result")
    }

    fn phase(&self) -> Option<AnalysisPhase> {
        self.status().phase
    }
}

fn value(v: serde_json::Value) -> impl Fn(&Task) -> Reading {
    move |_| Reading::Value(v.clone())
}

fn error(text: &str) -> impl Fn(&Task) -> Reading + '_ {
    move |_| Reading::Error(text.to_string())
}

fn reasons(update: &RunUpdate) -> Vec<&str> {
    update.events.iter().map(|e| e.reason.as_str()).collect()
}

const ONE_SHOT: &str = r#"
metrics:
- name: success-rate
  successCondition: result[0] >= 0.95
  provider: {prometheus: {address: "http://prometheus:9090", query: "q"}}
"#;

const FIVE_EVERY_30S: &str = r#"
metrics:
- name: success-rate
  interval: 30s
  count: 5
  failureLimit: 2
  successCondition: result[0] >= 0.95
  provider: {prometheus: {address: "http://prometheus:9090", query: "q"}}
"#;

mod counting {
    use super::*;

    #[test]
    fn a_metric_without_count_or_interval_is_measured_once() {
        let mut sim = Sim::new(ONE_SHOT);
        let update = sim.step(value(json!([0.97])));
        let m = sim.metric("success-rate");
        assert_eq!((m.count, m.successful, m.phase), (1, 1, AnalysisPhase::Successful));
        assert_eq!(m.measurements[0].value.as_deref(), Some("[0.97]"));
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));
        assert_eq!(update.requeue_after, None);
        assert_eq!(reasons(&update), ["MetricSuccessful", "AnalysisRunSuccessful"]);
        assert_eq!(update.events[1].type_, EventType::Normal);
        assert!(sim.status().completed_at.is_some());
    }

    #[test]
    fn a_metric_with_count_takes_that_many_measurements_an_interval_apart() {
        let mut sim = Sim::new(FIVE_EVERY_30S);
        let first = sim.step(value(json!([0.99])));
        assert_eq!(first.requeue_after, Some(Duration::from_secs(30)), "measured at 1s, next at 31s");
        sim.now = 30;
        assert!(sim.due().tasks.is_empty(), "29 s after the last measurement nothing is due");
        sim.now = 31;
        assert_eq!(sim.due().tasks.len(), 1);
        let last = sim.until_done(10, value(json!([0.99])));
        let m = sim.metric("success-rate");
        assert_eq!((m.count, m.successful, m.phase), (5, 5, AnalysisPhase::Successful));
        assert_eq!(m.measurements.len(), 5);
        assert_eq!(m.message.as_deref(), Some("success-rate: 5 measurements: 5 successful"));
        assert_eq!(last.requeue_after, None);
    }

    #[test]
    fn a_metric_with_interval_and_no_count_measures_until_the_run_is_terminated() {
        let mut sim = Sim::new(
            r#"
metrics:
- name: latency
  interval: 1m
  successCondition: result < 300
  provider: {prometheus: {address: "http://p", query: "q"}}
"#,
        );
        sim.until_done(20, value(json!(120)));
        let m = sim.metric("latency");
        assert_eq!(m.phase, AnalysisPhase::Running);
        assert_eq!(m.count, 21);
        assert_eq!(m.measurements.len(), 10, "the default retention keeps 10");
        sim.run.spec.terminate = Some(true);
        sim.now += 5;
        let update = sim.step(value(json!(120)));
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));
        assert_eq!(sim.status().message.as_deref(), Some("Run Terminated"));
        assert_eq!(sim.metric("latency").count, 21, "no measurement is taken once terminated");
        assert_eq!(reasons(&update), ["MetricSuccessful", "AnalysisRunSuccessful"]);
    }

    #[test]
    fn count_zero_means_the_default_count() {
        let mut sim = Sim::new(&ONE_SHOT.replace("  successCondition", "  count: 0\n  successCondition"));
        sim.step(value(json!([0.97])));
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));
    }

    #[test]
    fn errors_are_not_counted_as_measurements() {
        let mut sim = Sim::new(ONE_SHOT);
        sim.step(error("connection refused"));
        let m = sim.metric("success-rate");
        assert_eq!((m.count, m.error, m.consecutive_error, m.phase), (0, 1, 1, AnalysisPhase::Running));
        assert_eq!(m.measurements[0].phase, AnalysisPhase::Error);
        assert_eq!(m.measurements[0].message.as_deref(), Some("connection refused"));
    }

    #[test]
    fn a_judged_measurement_clears_the_run_of_consecutive_errors() {
        let mut sim = Sim::new(FIVE_EVERY_30S);
        sim.step(error("timeout"));
        sim.now += 11;
        sim.step(error("timeout"));
        sim.now += 11;
        sim.step(value(json!([0.99])));
        let m = sim.metric("success-rate");
        assert_eq!((m.count, m.successful, m.error, m.consecutive_error), (1, 1, 2, 0));
    }
}

mod limits {
    use super::*;

    #[test]
    fn one_failed_measurement_fails_a_metric_with_the_default_failure_limit() {
        let mut sim = Sim::new(ONE_SHOT);
        let update = sim.step(value(json!([0.5])));
        assert_eq!(sim.metric("success-rate").phase, AnalysisPhase::Failed);
        assert_eq!(sim.phase(), Some(AnalysisPhase::Failed));
        assert_eq!(
            sim.status().message.as_deref(),
            Some("success-rate: result[0] >= 0.95 was false for 0.5 — 1 failed measurement, more than failureLimit 0")
        );
        assert_eq!(reasons(&update), ["MetricFailed", "AnalysisRunFailed"]);
        assert!(update.events.iter().all(|e| e.type_ == EventType::Warning));
    }

    #[test]
    fn a_message_rounds_the_values_it_quotes_and_the_measurement_keeps_them_whole() {
        let mut sim = Sim::new(ONE_SHOT);
        sim.step(value(json!([0.7021421458041176])));
        assert_eq!(
            sim.status().message.as_deref(),
            Some(
                "success-rate: result[0] >= 0.95 was false for 0.7021 — 1 failed measurement, more than failureLimit 0"
            )
        );
        let m = sim.metric("success-rate");
        assert_eq!(m.measurements[0].value.as_deref(), Some("[0.7021421458041176]"));
    }

    #[test]
    fn a_metric_fails_on_the_first_failure_beyond_its_failure_limit_and_says_which_values_failed() {
        let mut sim = Sim::new(FIVE_EVERY_30S);
        for v in [0.82, 0.99, 0.80] {
            sim.step(value(json!([v])));
            sim.now += 31;
        }
        assert_eq!(sim.metric("success-rate").phase, AnalysisPhase::Running, "2 failures are within failureLimit 2");
        sim.step(value(json!([0.85])));
        let m = sim.metric("success-rate");
        assert_eq!((m.failed, m.successful, m.count, m.phase), (3, 1, 4, AnalysisPhase::Failed));
        assert_eq!(
            m.message.as_deref(),
            Some(
                "success-rate: result[0] >= 0.95 was false for 0.82, 0.8, 0.85 — 3 failed measurements, more than failureLimit 2"
            )
        );
        assert_eq!(sim.phase(), Some(AnalysisPhase::Failed));
        assert_eq!(sim.status().message, m.message);
    }

    #[test]
    fn inconclusive_measurements_beyond_the_limit_make_the_metric_and_run_inconclusive() {
        let spec = r#"
metrics:
- name: error-rate
  interval: 10s
  count: 4
  inconclusiveLimit: 1
  successCondition: result < 0.01
  failureCondition: result > 0.05
  provider: {prometheus: {address: "http://p", query: "q"}}
"#;
        let mut sim = Sim::new(spec);
        sim.step(value(json!(0.03)));
        assert_eq!(sim.metric("error-rate").phase, AnalysisPhase::Running);
        sim.now += 11;
        let update = sim.step(value(json!(0.02)));
        let m = sim.metric("error-rate");
        assert_eq!((m.inconclusive, m.count, m.phase), (2, 2, AnalysisPhase::Inconclusive));
        assert_eq!(
            m.message.as_deref(),
            Some(
                "error-rate: result < 0.01 was false and result > 0.05 was false for 0.03, 0.02 — 2 inconclusive \
                 measurements, more than inconclusiveLimit 1"
            )
        );
        assert_eq!(sim.phase(), Some(AnalysisPhase::Inconclusive));
        assert_eq!(reasons(&update), ["MetricInconclusive", "AnalysisRunInconclusive"]);
    }

    #[test]
    fn the_fifth_consecutive_error_puts_the_metric_in_error_with_the_default_limit() {
        let mut sim = Sim::new(FIVE_EVERY_30S);
        for _ in 0..4 {
            sim.step(error("dial tcp: connection refused"));
            sim.now += 11;
        }
        assert_eq!(sim.metric("success-rate").phase, AnalysisPhase::Running, "4 errors are within the default 4");
        let update = sim.step(error("dial tcp: connection refused"));
        let m = sim.metric("success-rate");
        assert_eq!((m.error, m.consecutive_error, m.phase), (5, 5, AnalysisPhase::Error));
        assert_eq!(
            m.message.as_deref(),
            Some(
                "success-rate: dial tcp: connection refused — 5 consecutive errors, more than consecutiveErrorLimit 4"
            )
        );
        assert_eq!(sim.phase(), Some(AnalysisPhase::Error));
        assert_eq!(reasons(&update), ["MetricError", "AnalysisRunError"]);
    }

    #[test]
    fn a_consecutive_error_limit_of_zero_errors_on_the_first_error() {
        let mut sim =
            Sim::new(&ONE_SHOT.replace("  successCondition", "  consecutiveErrorLimit: 0\n  successCondition"));
        sim.step(error("boom"));
        assert_eq!(sim.metric("success-rate").phase, AnalysisPhase::Error);
    }

    #[test]
    fn limits_can_be_templated_from_arguments() {
        let spec = r#"
args:
- {name: limit, value: "1"}
- {name: errors, value: "0"}
metrics:
- name: m
  interval: 10s
  count: 5
  failureLimit: "{{args.limit}}"
  consecutiveErrorLimit: "{{ args.errors }}"
  successCondition: result == 1
  provider: {prometheus: {address: "http://p", query: "q"}}
"#;
        let mut sim = Sim::new(spec);
        sim.step(value(json!(0)));
        assert_eq!(sim.metric("m").phase, AnalysisPhase::Running, "one failure is within failureLimit 1");
        sim.now += 11;
        sim.step(value(json!(0)));
        assert_eq!(sim.metric("m").phase, AnalysisPhase::Failed);

        let mut sim = Sim::new(spec);
        sim.step(error("down"));
        assert_eq!(sim.metric("m").phase, AnalysisPhase::Error, "consecutiveErrorLimit 0 from args.errors");
    }

    #[test]
    fn a_limit_that_is_not_a_number_ends_the_run_in_error_naming_the_field() {
        let spec = r#"
args: [{name: limit, value: "two"}]
metrics:
- name: m
  failureLimit: "{{args.limit}}"
  provider: {prometheus: {address: "http://p", query: "q"}}
"#;
        let mut sim = Sim::new(spec);
        assert!(sim.due().tasks.is_empty());
        assert_eq!(sim.due().problem(), Some("metrics[0].failureLimit must be a whole number, not \"two\""));
        let update = sim.step(value(json!(1)));
        assert_eq!(sim.phase(), Some(AnalysisPhase::Error));
        assert_eq!(
            sim.status().message.as_deref(),
            Some("metrics[0].failureLimit must be a whole number, not \"two\"")
        );
        assert_eq!(reasons(&update), ["AnalysisRunError"]);
        assert_eq!(update.requeue_after, None);
    }

    #[test]
    fn a_templated_count_above_one_needs_an_interval() {
        let spec = r#"
args: [{name: count, value: "3"}]
metrics:
- {name: m, count: "{{args.count}}", provider: {prometheus: {address: "http://p", query: "q"}}}
"#;
        let mut sim = Sim::new(spec);
        sim.step(value(json!(1)));
        assert_eq!(
            sim.status().message.as_deref(),
            Some("metrics[0].count 3 needs an interval between the measurements")
        );
    }

    #[test]
    fn a_count_below_the_failure_limit_is_refused_as_in_argo() {
        let mut sim = Sim::new(&FIVE_EVERY_30S.replace("count: 5", "count: 1"));
        sim.step(value(json!([0.5])));
        assert_eq!(
            sim.status().message.as_deref(),
            Some("metrics[0].count 1 is less than failureLimit 2: the limit could never be crossed")
        );
    }

    #[test]
    fn a_negative_count_is_refused() {
        let mut sim = Sim::new(&ONE_SHOT.replace("  successCondition", "  count: -3\n  successCondition"));
        sim.step(value(json!(1)));
        assert_eq!(sim.status().message.as_deref(), Some("metrics[0].count must not be negative, not -3"));
    }
}

mod scheduling {
    use super::*;

    #[test]
    fn the_first_measurement_waits_for_the_initial_delay() {
        let spec = FIVE_EVERY_30S.replace("  count: 5", "  count: 5\n  initialDelay: 1m");
        let mut sim = Sim::new(&spec);
        let update = sim.step(value(json!([0.99])));
        assert!(sim.metric("success-rate").measurements.is_empty());
        assert_eq!(sim.status().started_at, Some(at(1)), "the run starts at its first record");
        assert_eq!(sim.phase(), Some(AnalysisPhase::Running));
        assert_eq!(sim.metric("success-rate").phase, AnalysisPhase::Pending);
        assert_eq!(update.requeue_after, Some(Duration::from_secs(60)));
        sim.now = 60;
        assert!(sim.due().tasks.is_empty(), "59 s after the start");
        sim.now = 61;
        assert_eq!(sim.due().tasks[0].step, Step::Run);
    }

    #[test]
    fn after_an_error_the_metric_is_measured_again_in_10_seconds_whatever_the_interval() {
        let spec = FIVE_EVERY_30S.replace("interval: 30s", "interval: 5m");
        let mut sim = Sim::new(&spec);
        let update = sim.step(error("timeout"));
        assert_eq!(update.requeue_after, Some(Duration::from_secs(10)));
        sim.now = 10;
        assert!(sim.due().tasks.is_empty());
        sim.now = 11;
        assert_eq!(sim.due().tasks.len(), 1);
        let update = sim.step(value(json!([0.99])));
        assert_eq!(update.requeue_after, Some(Duration::from_secs(300)), "back to the interval after a success");
    }

    #[test]
    fn a_measurement_in_flight_is_resumed_at_its_resume_time_and_keeps_its_start() {
        let spec = r#"
metrics:
- name: smoke
  provider: {job: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: t, image: busybox}]}}}}}
"#;
        let mut sim = Sim::new(spec);
        let update = sim.step(|_| Reading::InProgress { resume_at: at(16) });
        let m = sim.metric("smoke");
        assert_eq!(m.phase, AnalysisPhase::Running);
        assert_eq!(m.measurements[0].phase, AnalysisPhase::Running);
        assert_eq!(m.measurements[0].finished_at, None);
        assert_eq!(update.requeue_after, Some(Duration::from_secs(15)));
        sim.now = 15;
        assert!(sim.due().tasks.is_empty());
        sim.now = 16;
        let due = sim.due();
        assert!(matches!(&due.tasks[0].step, Step::Resume(m) if m.started_at == Some(at(0))));
        sim.step(|_| Reading::Verdict { phase: AnalysisPhase::Successful, message: None });
        let m = sim.metric("smoke");
        assert_eq!(m.measurements.len(), 1, "the resumed measurement is finished in place");
        assert_eq!(m.measurements[0].started_at, Some(at(0)));
        assert_eq!(m.measurements[0].finished_at, Some(at(17)));
        assert_eq!((m.count, m.phase), (1, AnalysisPhase::Successful));
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));
    }

    #[test]
    fn a_provider_verdict_decides_without_conditions() {
        let mut sim = Sim::new(ONE_SHOT);
        sim.step(|_| Reading::Verdict { phase: AnalysisPhase::Failed, message: Some("job smoke-1 failed".into()) });
        assert_eq!(
            sim.status().message.as_deref(),
            Some("success-rate: job smoke-1 failed — 1 failed measurement, more than failureLimit 0")
        );
    }

    #[test]
    fn a_provider_that_has_not_decided_is_asked_again_in_10_seconds() {
        let mut sim = Sim::new(ONE_SHOT);
        let update = sim.step(|_| Reading::Verdict { phase: AnalysisPhase::Running, message: None });
        assert_eq!(sim.metric("success-rate").measurements[0].resume_at, Some(at(11)));
        assert_eq!(update.requeue_after, Some(Duration::from_secs(10)));
    }

    #[test]
    fn only_the_first_outcome_of_a_task_is_recorded() {
        let sim = Sim::new(FIVE_EVERY_30S);
        let due = sim.due();
        let outcome = |v: f64| Outcome {
            metric: "success-rate".into(),
            reading: Reading::Value(json!([v])),
            metadata: BTreeMap::new(),
            started_at: at(0),
            finished_at: at(1),
        };
        let stranger = Outcome { metric: "nobody-asked".into(), ..outcome(0.1) };
        let update = measure::record(&sim.run, &due, vec![outcome(0.99), outcome(0.1), stranger], &at(1));
        let m = &update.status.metric_results[0];
        assert_eq!((m.count, m.successful, m.measurements.len()), (1, 1, 1));
        assert_eq!(update.status.metric_results.len(), 1);
    }

    #[test]
    fn the_requeue_is_the_earliest_next_step_of_all_metrics() {
        let spec = r#"
metrics:
- {name: slow, interval: 5m, successCondition: "true", provider: {prometheus: {address: "http://p", query: "a"}}}
- {name: fast, interval: 20s, successCondition: "true", provider: {prometheus: {address: "http://p", query: "b"}}}
"#;
        let mut sim = Sim::new(spec);
        let update = sim.step(value(json!(1)));
        assert_eq!(update.requeue_after, Some(Duration::from_secs(20)));
    }

    #[test]
    fn nothing_is_written_while_nothing_is_due() {
        let mut sim = Sim::new(FIVE_EVERY_30S);
        sim.step(value(json!([0.99])));
        let before = sim.status();
        sim.now = 10;
        let due = sim.due();
        assert!(due.tasks.is_empty());
        let update = measure::record(&sim.run, &due, vec![], &at(10));
        assert_eq!(update.status, before);
        assert!(update.events.is_empty() && update.collect.is_empty());
        assert_eq!(update.requeue_after, Some(Duration::from_secs(21)));
    }
}

mod dry_run {
    use super::*;

    const TWO: &str = r#"
metrics:
- {name: success-rate, successCondition: "result >= 0.95", provider: {prometheus: {address: "http://p", query: "a"}}}
- {name: latency-p99, successCondition: "result < 300", provider: {prometheus: {address: "http://p", query: "b"}}}
"#;

    fn answer(t: &Task) -> Reading {
        Reading::Value(if t.metric.name == "success-rate" { json!(0.99) } else { json!(900) })
    }

    #[test]
    fn a_failing_dry_run_metric_does_not_fail_the_run_but_is_reported() {
        let mut sim = Sim::new(&format!("{TWO}dryRun: [{{metricName: latency-.*}}]\n"));
        sim.step(answer);
        let m = sim.metric("latency-p99");
        assert_eq!((m.phase, m.dry_run), (AnalysisPhase::Failed, Some(true)));
        assert_eq!(sim.metric("success-rate").dry_run, None);
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));
        assert_eq!(
            sim.status().message.as_deref(),
            Some(
                "dry-run latency-p99: result < 300 was false for 900 — 1 failed measurement, more than failureLimit 0"
            )
        );
    }

    #[test]
    fn the_pattern_matches_the_whole_name() {
        let mut sim = Sim::new(&format!("{TWO}dryRun: [{{metricName: latency}}, {{metricName: latency-p99}}]\n"));
        sim.step(answer);
        assert_eq!(sim.phase(), Some(AnalysisPhase::Error), "latency matches no whole metric name");
        assert_eq!(
            sim.status().message.as_deref(),
            Some("dryRun[0].metricName \"latency\" matches no metric of the run")
        );
    }

    #[test]
    fn a_star_puts_every_metric_in_dry_run_like_dot_star() {
        for pattern in ["\"*\"", "\".*\""] {
            let mut sim = Sim::new(&format!("{TWO}dryRun: [{{metricName: {pattern}}}]\n"));
            sim.step(|_| Reading::Value(json!(900)));
            assert_eq!(sim.metric("success-rate").dry_run, Some(true), "{pattern}");
            assert_eq!(sim.metric("success-rate").phase, AnalysisPhase::Successful);
            assert_eq!(sim.metric("latency-p99").phase, AnalysisPhase::Failed);
            assert_eq!(sim.phase(), Some(AnalysisPhase::Successful), "{pattern}");
        }
    }

    #[test]
    fn an_invalid_pattern_ends_the_run_in_error_naming_it() {
        let mut sim = Sim::new(&format!("{TWO}dryRun: [{{metricName: \"latency-(\"}}]\n"));
        sim.step(answer);
        let message = sim.status().message.unwrap();
        assert!(
            message.starts_with("dryRun[0].metricName \"latency-(\" is not a valid regular expression"),
            "{message}"
        );
    }

    #[test]
    fn a_dry_run_metric_that_fails_does_not_stop_the_others() {
        let spec = r#"
metrics:
- {name: a, interval: 10s, count: 2, successCondition: "result > 0", provider: {prometheus: {address: "http://p", query: "a"}}}
- {name: b, successCondition: "result > 0", provider: {prometheus: {address: "http://p", query: "b"}}}
dryRun: [{metricName: b}]
"#;
        let mut sim = Sim::new(spec);
        sim.step(|t| Reading::Value(json!(if t.metric.name == "a" { 1 } else { 0 })));
        assert_eq!(sim.metric("b").phase, AnalysisPhase::Failed);
        assert_eq!(sim.phase(), Some(AnalysisPhase::Running), "a still has a measurement to take");
        sim.until_done(5, value(json!(1)));
        assert_eq!(sim.metric("a").count, 2);
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));
    }
}

mod retention {
    use super::*;

    #[test]
    fn only_the_newest_measurements_are_kept_and_the_others_are_cleaned_up() {
        let spec = format!("{FIVE_EVERY_30S}measurementRetention: [{{metricName: success-.*, limit: 2}}]\n");
        let mut sim = Sim::new(&spec);
        sim.step(value(json!([0.991])));
        sim.now += 31;
        let update = sim.step(value(json!([0.992])));
        assert!(update.collect.is_empty());
        sim.now += 31;
        let update = sim.step(value(json!([0.993])));
        let kept: Vec<_> = sim.metric("success-rate").measurements.iter().map(|m| m.value.clone().unwrap()).collect();
        assert_eq!(kept, ["[0.992]", "[0.993]"]);
        assert_eq!(update.collect.len(), 1);
        assert_eq!(update.collect[0].0.name, "success-rate");
        assert_eq!(update.collect[0].1.iter().map(|m| m.value.clone().unwrap()).collect::<Vec<_>>(), ["[0.991]"]);
        assert_eq!(sim.metric("success-rate").count, 3, "counters are not trimmed");
    }

    #[test]
    fn when_the_run_completes_every_measurement_it_kept_is_cleaned_up() {
        let mut sim = Sim::new(FIVE_EVERY_30S);
        let update = sim.until_done(10, value(json!([0.99])));
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));
        assert_eq!(update.collect.len(), 1);
        assert_eq!(update.collect[0].1.len(), 5);
    }

    #[test]
    fn a_retention_rule_matching_no_metric_is_an_error() {
        let mut sim = Sim::new(&format!("{ONE_SHOT}measurementRetention: [{{metricName: latency, limit: 3}}]\n"));
        sim.step(value(json!([1])));
        assert_eq!(
            sim.status().message.as_deref(),
            Some("measurementRetention[0].metricName \"latency\" matches no metric of the run")
        );
    }
}

mod terminating {
    use super::*;

    const JOB_AND_QUERY: &str = r#"
metrics:
- name: smoke
  provider: {job: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: t, image: busybox}]}}}}}
- name: success-rate
  successCondition: result >= 0.95
  provider: {prometheus: {address: "http://p", query: "q"}}
"#;

    #[test]
    fn a_terminated_run_with_nothing_in_flight_ends_at_once_with_what_it_has() {
        let mut sim = Sim::new(FIVE_EVERY_30S);
        sim.step(value(json!([0.99])));
        sim.run.spec.terminate = Some(true);
        sim.now = 100;
        assert!(sim.due().tasks.is_empty(), "no new measurement once terminated");
        let update = sim.step(value(json!([0.99])));
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));
        assert_eq!(sim.status().message.as_deref(), Some("Run Terminated"));
        assert_eq!(
            sim.metric("success-rate").message.as_deref(),
            Some("success-rate: terminated after 1 measurement: 1 successful")
        );
        assert_eq!(update.requeue_after, None);
        assert_eq!(sim.status().completed_at, Some(at(101)));
    }

    #[test]
    fn a_terminated_run_stops_its_measurements_in_flight_before_it_ends() {
        let mut sim = Sim::new(JOB_AND_QUERY);
        sim.step(|t| match t.metric.name.as_str() {
            "smoke" => Reading::InProgress { resume_at: at(60) },
            _ => Reading::Value(json!(0.99)),
        });
        sim.run.spec.terminate = Some(true);
        sim.now = 5;
        let update = measure::record(&sim.run, &sim.due(), vec![], &at(5));
        assert_eq!(update.status.phase, Some(AnalysisPhase::Running), "the job is still in flight");
        assert_eq!(update.status.message.as_deref(), Some("Run ending: stopping the measurements in flight of smoke"));
        assert_eq!(update.requeue_after, Some(Duration::ZERO));
        sim.run.status = Some(update.status);
        let due = sim.due();
        assert_eq!(due.tasks.len(), 1);
        assert!(matches!(&due.tasks[0].step, Step::Terminate(m) if m.finished_at.is_none()));
        let update = sim.step(|_| Reading::Terminated);
        let smoke = sim.metric("smoke");
        assert_eq!(smoke.measurements[0].message.as_deref(), Some("Metric Terminated"));
        assert!(smoke.measurements[0].finished_at.is_some());
        assert_eq!(smoke.count, 0, "a stopped measurement is not counted");
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));
        assert_eq!(sim.status().message.as_deref(), Some("Run Terminated"));
        assert_eq!(update.collect.iter().map(|(m, _)| m.name.as_str()).collect::<Vec<_>>(), ["smoke", "success-rate"]);
    }

    #[test]
    fn a_failed_metric_ends_the_run_after_stopping_the_others() {
        let mut sim = Sim::new(JOB_AND_QUERY);
        sim.step(|t| match t.metric.name.as_str() {
            "smoke" => Reading::InProgress { resume_at: at(60) },
            _ => Reading::Value(json!(0.5)),
        });
        assert_eq!(sim.metric("success-rate").phase, AnalysisPhase::Failed);
        assert_eq!(sim.phase(), Some(AnalysisPhase::Running));
        sim.now = 2;
        let due = sim.due();
        assert!(matches!(&due.tasks[..], [Task { step: Step::Terminate(_), .. }]), "{due:?}");
        let update = sim.step(|_| Reading::Terminated);
        assert_eq!(sim.phase(), Some(AnalysisPhase::Failed));
        assert_eq!(
            sim.status().message.as_deref(),
            Some("success-rate: result >= 0.95 was false for 0.5 — 1 failed measurement, more than failureLimit 0")
        );
        assert_eq!(reasons(&update), ["MetricSuccessful", "AnalysisRunFailed"]);
    }

    #[test]
    fn the_run_takes_the_worst_verdict_failed_over_error_over_inconclusive() {
        let spec = r#"
metrics:
- {name: a, successCondition: "result > 0.9", failureCondition: "result < 0.5", provider: {prometheus: {address: "http://p", query: "a"}}}
- {name: b, consecutiveErrorLimit: 0, successCondition: "result > 0.9", failureCondition: "result < 0.5", provider: {prometheus: {address: "http://p", query: "b"}}}
- {name: c, successCondition: "result > 0.9", failureCondition: "result < 0.5", provider: {prometheus: {address: "http://p", query: "c"}}}
"#;
        let verdict = |answers: [Reading; 3]| {
            let mut sim = Sim::new(spec);
            sim.step(|t| answers[(t.metric.name.as_bytes()[0] - b'a') as usize].clone());
            sim.phase()
        };
        let (ok, failed, inconclusive) =
            (Reading::Value(json!(1)), Reading::Value(json!(0)), Reading::Value(json!(0.7)));
        let error = Reading::Error("down".into());
        assert_eq!(verdict([inconclusive.clone(), error.clone(), failed]), Some(AnalysisPhase::Failed));
        assert_eq!(verdict([inconclusive.clone(), error, ok.clone()]), Some(AnalysisPhase::Error));
        assert_eq!(verdict([inconclusive, ok.clone(), ok]), Some(AnalysisPhase::Inconclusive));
    }

    #[test]
    fn a_terminated_run_keeps_the_worst_verdict_so_far() {
        let spec = FIVE_EVERY_30S.replace("failureLimit: 2", "failureLimit: 0\n  inconclusiveLimit: 5");
        let mut sim = Sim::new(&spec);
        sim.step(value(json!([0.99])));
        sim.run.spec.terminate = Some(true);
        sim.step(value(json!([0.99])));
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));

        let mut sim = Sim::new(JOB_AND_QUERY);
        sim.step(|t| match t.metric.name.as_str() {
            "smoke" => Reading::InProgress { resume_at: at(60) },
            _ => Reading::Value(json!(0.5)),
        });
        sim.run.spec.terminate = Some(true);
        sim.step(|_| Reading::Terminated);
        assert_eq!(sim.phase(), Some(AnalysisPhase::Failed));
        assert!(sim.status().message.unwrap().starts_with("Run Terminated: success-rate: result >= 0.95 was false"));
    }
}

mod completed {
    use super::*;

    #[test]
    fn what_due_found_can_be_held_across_an_await() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Due>();
        send_sync::<RunUpdate>();
    }

    #[test]
    fn a_completed_run_never_changes_again() {
        let mut sim = Sim::new(ONE_SHOT);
        sim.step(value(json!([0.5])));
        let done = sim.status();
        assert_eq!(done.phase, Some(AnalysisPhase::Failed));
        sim.now = 1000;
        let due = sim.due();
        assert!(due.tasks.is_empty());
        let outcome = Outcome {
            metric: "success-rate".into(),
            reading: Reading::Value(json!([0.99])),
            metadata: BTreeMap::new(),
            started_at: at(1000),
            finished_at: at(1001),
        };
        let update = measure::record(&sim.run, &due, vec![outcome], &at(1001));
        assert_eq!(update, RunUpdate { status: done, requeue_after: None, events: vec![], collect: vec![] });
    }

    #[test]
    fn events_are_emitted_once_on_transition() {
        let mut sim = Sim::new(ONE_SHOT);
        let first = sim.step(value(json!([0.99])));
        assert_eq!(first.events.len(), 2);
        sim.now = 50;
        let again = sim.step(value(json!([0.99])));
        assert!(again.events.is_empty());
    }
}

mod arguments {
    use super::*;

    const WITH_SECRET: &str = r#"
args:
- {name: service, value: checkout}
- name: token
  valueFrom: {secretKeyRef: {name: prom-auth, key: token}}
metrics:
- name: success-rate
  successCondition: result[0] >= 0.95
  provider:
    prometheus:
      address: "http://prometheus:9090"
      query: 'sum(rate(http_requests_total{service="{{args.service}}"}[5m]))'
      headers: [{key: Authorization, value: "Bearer {{args.token}}"}]
"#;

    fn with_token(spec: &str) -> Sim {
        let mut sim = Sim::new(spec);
        sim.secrets.insert(("prom-auth".into(), "token".into()), "s3cr3t-t0k3n".into());
        sim
    }

    #[test]
    fn the_secrets_a_run_reads_are_listed_once_each() {
        let spec = WITH_SECRET
            .replace("metrics:", "- name: again\n  valueFrom: {secretKeyRef: {name: prom-auth, key: token}}\nmetrics:");
        assert_eq!(measure::secrets_needed(&run(&spec).spec), [("prom-auth".to_string(), "token".to_string())]);
    }

    #[test]
    fn arguments_are_substituted_into_the_metric_the_provider_gets() {
        let sim = with_token(WITH_SECRET);
        let due = sim.due();
        let p = due.tasks[0].metric.provider.prometheus.clone().unwrap();
        assert_eq!(p.query, r#"sum(rate(http_requests_total{service="checkout"}[5m]))"#);
        assert_eq!(p.headers.unwrap()[0].value, "Bearer s3cr3t-t0k3n");
        assert!(!format!("{:?}", due).contains("s3cr3t"), "a task's debug output does not show secrets");
    }

    #[test]
    fn secret_values_never_reach_the_status_or_events() {
        let mut sim = with_token(&WITH_SECRET.replace("result[0] >= 0.95", "result != 's3cr3t-t0k3n'"));
        let update = sim.step(|_| Reading::Value(json!("s3cr3t-t0k3n")));
        let status = serde_json::to_string(&sim.status()).unwrap();
        assert!(!status.contains("s3cr3t"), "{status}");
        assert!(status.contains("*****"), "{status}");
        assert!(update.events.iter().all(|e| !e.message.contains("s3cr3t")));

        let mut sim = with_token(&WITH_SECRET.replace("  successCondition", "  interval: 10s\n  successCondition"));
        sim.step(|_| Reading::Error("401 Unauthorized for token s3cr3t-t0k3n".into()));
        let m = &sim.metric("success-rate").measurements[0];
        assert_eq!(m.message.as_deref(), Some("401 Unauthorized for token *****"));
    }

    #[test]
    fn provider_metadata_is_kept_and_redacted() {
        let mut sim = with_token(WITH_SECRET);
        let due = sim.due();
        let mut metadata = BTreeMap::new();
        metadata.insert("query".to_string(), "Bearer s3cr3t-t0k3n".to_string());
        let outcome = Outcome {
            metric: "success-rate".into(),
            reading: Reading::Value(json!([0.99])),
            metadata,
            started_at: at(0),
            finished_at: at(1),
        };
        let update = measure::record(&sim.run, &due, vec![outcome], &at(1));
        sim.run.status = Some(update.status);
        let md = sim.metric("success-rate").measurements[0].metadata.clone().unwrap();
        assert_eq!(md["query"], "Bearer *****");
    }

    #[test]
    fn a_missing_secret_ends_the_run_in_error_naming_the_argument() {
        let mut sim = Sim::new(WITH_SECRET);
        let update = sim.step(value(json!([0.99])));
        assert_eq!(sim.phase(), Some(AnalysisPhase::Error));
        assert_eq!(
            sim.status().message.as_deref(),
            Some("metrics[0] (success-rate): args.token was not resolved: key token of Secret prom-auth was not found")
        );
        assert_eq!(update.events[0].reason, "AnalysisRunError");
    }

    #[test]
    fn a_missing_argument_is_named() {
        let mut sim = Sim::new(&WITH_SECRET.replace("{{args.service}}", "{{ args.svc }}"));
        sim.secrets.insert(("prom-auth".into(), "token".into()), "x".into());
        sim.step(value(json!([0.99])));
        assert_eq!(
            sim.status().message.as_deref(),
            Some("metrics[0] (success-rate): args.svc was not resolved: the run has no argument svc")
        );
    }

    #[test]
    fn an_argument_without_a_value_is_an_error_only_where_it_is_used() {
        let mut sim = Sim::new(&ONE_SHOT.replace("metrics:", "args:\n- {name: unused}\nmetrics:"));
        sim.step(value(json!([0.99])));
        assert_eq!(sim.phase(), Some(AnalysisPhase::Successful));
    }

    #[test]
    fn a_field_ref_left_in_a_run_is_an_error() {
        let spec = r#"
args: [{name: ns, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}]
metrics:
- {name: m, provider: {prometheus: {address: "http://p", query: "up{namespace='{{args.ns}}'}"}}}
"#;
        let mut sim = Sim::new(spec);
        sim.step(value(json!(1)));
        let message = sim.status().message.unwrap();
        assert!(message.contains("args.ns was not resolved: valueFrom.fieldRef metadata.namespace"), "{message}");
    }

    #[test]
    fn interval_and_count_can_be_templated() {
        let spec = r#"
args: [{name: interval, value: 45s}, {name: count, value: "2"}]
metrics:
- name: m
  interval: "{{args.interval}}"
  count: "{{args.count}}"
  successCondition: result == 1
  provider: {prometheus: {address: "http://p", query: "q"}}
"#;
        let mut sim = Sim::new(spec);
        let update = sim.step(value(json!(1.0)));
        assert_eq!(update.requeue_after, Some(Duration::from_secs(45)));
        sim.until_done(5, value(json!(1.0)));
        assert_eq!((sim.metric("m").count, sim.phase()), (2, Some(AnalysisPhase::Successful)));
    }

    #[test]
    fn a_templated_duration_that_is_not_a_duration_names_the_field() {
        let spec = r#"
args: [{name: interval, value: soon}]
metrics:
- {name: m, interval: "{{args.interval}}", provider: {prometheus: {address: "http://p", query: "q"}}}
"#;
        let mut sim = Sim::new(spec);
        sim.step(value(json!(1)));
        let message = sim.status().message.unwrap();
        assert!(message.starts_with("metrics[0].interval: "), "{message}");
    }
}

mod cel {
    use super::*;

    /// The measurement one reading of `value` makes under these conditions.
    fn judged(success: Option<&str>, failure: Option<&str>, value: serde_json::Value) -> Measurement {
        let mut spec = String::from("metrics:\n- name: m\n  interval: 10s\n");
        for (field, cond) in [("successCondition", success), ("failureCondition", failure)] {
            if let Some(c) = cond {
                spec.push_str(&format!("  {field}: {}\n", serde_json::to_string(c).unwrap()));
            }
        }
        spec.push_str("  provider: {prometheus: {address: \"http://p\", query: \"q\"}}\n");
        let mut sim = Sim::new(&spec);
        sim.step(move |_| Reading::Value(value.clone()));
        let status = sim.status();
        sim.metric("m").measurements.pop().unwrap_or_else(|| panic!("no measurement: {:?}", status.message))
    }

    fn phase(success: &str, value: serde_json::Value) -> AnalysisPhase {
        judged(Some(success), None, value).phase
    }

    #[test]
    fn conditions_from_the_argo_docs_work_as_written() {
        use AnalysisPhase::*;
        let cases = [
            ("result[0] >= 0.95", json!([0.97]), Successful),
            ("result[0] >= 0.95", json!([0.94]), Failed),
            ("result == 1", json!(1.0), Successful),
            ("result == 1", json!(1), Successful),
            ("result == 1.0", json!(1), Successful),
            ("result >= 1", json!(1.5), Successful),
            ("result.all(x, x > 0.9)", json!([0.95, 1, 0.91]), Successful),
            ("result.all(x, x > 0.9)", json!([0.95, 0.2]), Failed),
            ("result > 0.5 && result < 2", json!(1), Successful),
            ("result > 0.5 && result < 2", json!(2.5), Failed),
            ("result.ok == true && result.latency < 300", json!({"ok": true, "latency": 120}), Successful),
            ("result == 'healthy'", json!("healthy"), Successful),
            ("isNaN(result)", json!("NaN"), Successful),
            ("!isNaN(result) && result > 0.9", json!(0.95), Successful),
            ("isInf(result)", json!("+Inf"), Successful),
            // Prometheus' NaN (0/0) and infinities, spelled as text in JSON, compare as numbers.
            ("result[0] >= 0.95", json!(["+Inf"]), Successful),
            ("result[0] < 0", json!(["-Inf"]), Successful),
            ("isInf(result)", json!(1e300), Failed),
            ("default(result, 0) == 0", json!(null), Successful),
            ("default(result, 0) == 0", json!(3), Failed),
            ("isNil(result)", json!(null), Successful),
            ("asInt(result) == 3", json!("3"), Successful),
            ("asInt(result) == 3", json!(3.7), Successful),
            ("asFloat(result) > 0.5", json!("0.75"), Successful),
            ("size(result) == 0", json!([]), Successful),
            ("string(result.code).matches('^2..$')", json!({"code": 204}), Successful),
        ];
        for (condition, value, expected) in cases {
            assert_eq!(phase(condition, value.clone()), expected, "{condition} with result = {value}");
        }
    }

    #[test]
    fn a_nan_result_is_an_error_that_says_how_to_decide_with_is_nan() {
        let m = judged(Some("result[0] >= 0.95"), None, json!(["NaN"]));
        assert_eq!(m.phase, AnalysisPhase::Error);
        assert!(m.message.as_deref().unwrap_or_default().contains("isNaN(result[0]) ||"), "{:?}", m.message);
        assert_eq!(
            judged(Some("isNaN(result[0]) || result[0] >= 0.95"), None, json!(["NaN"])).phase,
            AnalysisPhase::Successful
        );
    }

    #[test]
    fn the_two_conditions_decide_together_as_in_argo() {
        use AnalysisPhase::*;
        let (s, f) = ("result > 0.9", "result < 0.5");
        assert_eq!(judged(None, None, json!(0)).phase, Successful, "no condition");
        assert_eq!(judged(Some(s), None, json!(0.95)).phase, Successful);
        assert_eq!(judged(Some(s), None, json!(0.7)).phase, Failed);
        assert_eq!(judged(None, Some(f), json!(0.7)).phase, Successful);
        assert_eq!(judged(None, Some(f), json!(0.2)).phase, Failed);
        assert_eq!(judged(Some(s), Some(f), json!(0.95)).phase, Successful);
        assert_eq!(judged(Some(s), Some(f), json!(0.2)).phase, Failed);
        assert_eq!(judged(Some(s), Some(f), json!(0.7)).phase, Inconclusive);
        assert_eq!(judged(Some("true"), Some("true"), json!(0)).phase, Failed, "failure wins when both are true");
        assert_eq!(judged(None, Some(f), json!(0.2)).message.as_deref(), Some("result < 0.5 was true"));
    }

    #[test]
    fn a_condition_that_is_not_a_boolean_is_a_measurement_error() {
        let m = judged(Some("result"), None, json!(5));
        assert_eq!(m.phase, AnalysisPhase::Error);
        assert_eq!(m.message.as_deref(), Some("successCondition `result` returned int, not a boolean"));
        let m = judged(None, Some("result[0]"), json!([0.5]));
        assert_eq!(m.message.as_deref(), Some("failureCondition `result[0]` returned double, not a boolean"));
    }

    #[test]
    fn an_empty_answer_is_an_error_that_says_there_was_no_data() {
        for empty in [json!([]), json!(null)] {
            let m = judged(Some("result[0] >= 0.95"), None, empty.clone());
            assert_eq!(m.phase, AnalysisPhase::Error, "{empty}");
            let message = m.message.unwrap();
            assert!(message.starts_with("no data: the query returned an empty result"), "{message}");
            assert!(message.contains("result[0] >= 0.95"), "{message}");
        }
    }

    #[test]
    fn an_evaluation_error_names_the_condition() {
        let m = judged(Some("result.missing > 1"), None, json!({"other": 1}));
        assert_eq!(m.phase, AnalysisPhase::Error);
        assert_eq!(
            m.message.as_deref(),
            Some("could not evaluate successCondition `result.missing > 1`: no key missing in the result")
        );
        let m = judged(Some("reslt > 1"), None, json!(2));
        assert!(m.message.unwrap().contains("reslt"));
    }

    #[test]
    fn a_broken_condition_is_refused_with_its_position() {
        assert_eq!(measure::check_condition("result[0] >= 0.95"), Ok(()));
        let e = measure::check_condition("result >= ").unwrap_err();
        assert!(e.starts_with("line 1, column 11: Syntax error"), "{e}");
        let e = measure::check_condition("result >= 0.95 &&\n  (result < ").unwrap_err();
        assert!(e.starts_with("line 2, column 13:"), "{e}");
        let e = measure::check_condition("result[0 >= 1").unwrap_err();
        assert!(e.contains("line 1, column 14"), "{e}");
        assert!(measure::check_condition("result ==== 1").is_err());
    }

    #[test]
    fn a_template_condition_with_argument_placeholders_can_be_checked_before_the_arguments_are_known() {
        assert_eq!(measure::check_condition("result[0] >= {{args.threshold}}"), Ok(()));
        assert_eq!(measure::check_condition("result == '{{ args.expected }}'"), Ok(()));
        let e = measure::check_condition("{{args.threshold}} <= ").unwrap_err();
        assert!(e.starts_with("line 1, column 23:"), "the column is where the user wrote it: {e}");
    }

    #[test]
    fn a_run_whose_condition_does_not_compile_ends_in_error_before_measuring() {
        let mut sim = Sim::new(&ONE_SHOT.replace("result[0] >= 0.95", "result[0] >= "));
        assert!(sim.due().tasks.is_empty());
        sim.step(value(json!([1])));
        let message = sim.status().message.unwrap();
        assert!(message.starts_with("metrics[0].successCondition `result[0] >=`: line 1, column"), "{message}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// What a provider may answer: a value the conditions judge, an error, or "still going".
    fn reading() -> impl Strategy<Value = u8> {
        0u8..5
    }

    fn answer(kind: u8, now: i64) -> Reading {
        match kind {
            0 => Reading::Value(json!(0.99)), // successful
            1 => Reading::Value(json!(0.10)), // failed
            2 => Reading::Value(json!(0.70)), // inconclusive
            3 => Reading::Error("timeout".into()),
            _ => Reading::InProgress { resume_at: at(now + 5) },
        }
    }

    proptest! {
        #[test]
        fn counters_stay_consistent_and_a_completed_run_stays_completed(
            readings in proptest::collection::vec(reading(), 1..40),
            count in prop_oneof![Just(0i32), 3i32..6],
            failure_limit in 0i32..3,
            inconclusive_limit in 0i32..3,
            error_limit in 0i32..5,
            retention in 1i32..4,
            terminate_at in proptest::option::of(0usize..40),
        ) {
            let spec = format!(
                r#"
metrics:
- name: m
  interval: 10s
  count: {count}
  failureLimit: {failure_limit}
  inconclusiveLimit: {inconclusive_limit}
  consecutiveErrorLimit: {error_limit}
  successCondition: result > 0.9
  failureCondition: result < 0.5
  provider: {{prometheus: {{address: "http://p", query: "q"}}}}
measurementRetention: [{{metricName: m, limit: {retention}}}]
"#
            );
            let mut sim = Sim::new(&spec);
            let mut completed: Option<AnalysisRunStatus> = None;
            for (i, kind) in readings.iter().enumerate() {
                if terminate_at == Some(i) {
                    sim.run.spec.terminate = Some(true);
                }
                let now = sim.now;
                let update = sim.step(|_| answer(*kind, now));
                let m = sim.metric("m");
                prop_assert_eq!(m.count, m.successful + m.failed + m.inconclusive);
                prop_assert!(m.consecutive_error <= m.error);
                prop_assert!(m.measurements.len() <= retention as usize);
                prop_assert!(m.failed <= failure_limit + 1 && m.inconclusive <= inconclusive_limit + 1);
                if let Some(done) = &completed {
                    prop_assert_eq!(&sim.status(), done);
                    prop_assert!(update.events.is_empty() && update.requeue_after.is_none());
                    prop_assert!(sim.due().tasks.is_empty());
                } else if sim.status().completed_at.is_some() {
                    prop_assert!(sim.phase().is_some_and(AnalysisPhase::is_completed));
                    prop_assert!(update.requeue_after.is_none());
                    prop_assert!(update.events.iter().any(|e| e.reason.starts_with("AnalysisRun")));
                    completed = Some(sim.status());
                } else {
                    prop_assert!(update.requeue_after.is_some(), "a running run always says when to look again");
                }
                sim.now += 11;
            }
        }
    }
}
