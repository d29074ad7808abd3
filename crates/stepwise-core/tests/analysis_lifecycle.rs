//! The lifecycle of AnalysisRuns beyond measuring, as in Argo Rollouts: `consecutiveSuccessLimit`
//! ends a metric early, `ttlStrategy` deletes a completed run, a Rollout keeps only so many
//! completed runs (`spec.analysis`), and `dryRunSummary` counts the dry-run metrics.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use stepwise_api::{AnalysisPhase, AnalysisRun, AnalysisRunStatus, MetricResult, RunSummary};
use stepwise_core::measure::{self, Expiry, Outcome, Reading, RunUpdate, SecretValues, Task};
use stepwise_core::{Action, AnalysisKind, ObservedAnalysisRun};
use support::{World, analysis_run as run, at, rollout_with};

/// The controller's loop on a clock: due → the provider answers the next scripted value → record.
struct Sim {
    run: AnalysisRun,
    now: i64,
}

impl Sim {
    fn new(spec: &str) -> Sim {
        Sim { run: run(spec), now: 0 }
    }

    fn step(&mut self, answer: impl Fn(&Task) -> Reading) -> RunUpdate {
        let due = measure::due(&self.run, &SecretValues::new(), &at(self.now));
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

    /// Answers each measurement with the next reading of `script` until the run completes or the
    /// script runs out; returns how many measurements were taken.
    fn run_script(&mut self, script: &[Reading]) -> usize {
        let mut taken = 0;
        loop {
            let due = measure::due(&self.run, &SecretValues::new(), &at(self.now));
            if !due.tasks.is_empty() {
                let Some(reading) = script.get(taken).cloned() else { return taken };
                taken += 1;
                let update = self.step(move |_| reading.clone());
                if update.requeue_after.is_none() {
                    return taken;
                }
            }
            self.now += 1;
            if self.now > 10_000 {
                return taken;
            }
        }
    }

    fn status(&self) -> AnalysisRunStatus {
        self.run.status.clone().unwrap_or_default()
    }

    fn metric(&self) -> MetricResult {
        self.status().metric_results.into_iter().next().expect("a metric result")
    }
}

fn ok() -> Reading {
    Reading::Value(json!(1))
}

fn bad() -> Reading {
    Reading::Value(json!(0))
}

fn unsure() -> Reading {
    Reading::Value(json!(2))
}

fn error() -> Reading {
    Reading::Error("connection refused".into())
}

/// A metric measured every 10 s: 1 succeeds, 0 fails, anything else is inconclusive. `limits`
/// is a YAML flow mapping of its count and limits.
fn metric(limits: &str) -> String {
    let limits = limits.trim_start_matches('{').trim_end_matches('}').replace(", ", "\n  ");
    format!(
        r#"
metrics:
- name: ready
  interval: 10s
  successCondition: result == 1
  failureCondition: result == 0
  {limits}
  provider: {{web: {{url: "http://checks/ready"}}}}
"#
    )
}

mod consecutive_success_limit {
    use super::*;

    #[test]
    fn a_metric_ends_successful_as_soon_as_it_has_that_many_successes_in_a_row() {
        let mut sim = Sim::new(&metric("{count: 10, failureLimit: 3, consecutiveSuccessLimit: 3}"));
        let taken = sim.run_script(&[ok(), bad(), ok(), ok(), ok(), ok(), ok()]);
        assert_eq!(taken, 5, "no measurement after the third success in a row");
        let m = sim.metric();
        assert_eq!(
            (m.phase, m.count, m.successful, m.failed, m.consecutive_success),
            (AnalysisPhase::Successful, 5, 4, 1, 3)
        );
        assert_eq!(sim.status().phase, Some(AnalysisPhase::Successful));
        let message = m.message.unwrap();
        assert!(message.contains("3 successful in a row, consecutiveSuccessLimit 3"), "{message}");
    }

    #[test]
    fn a_failure_an_inconclusive_measurement_or_an_error_starts_the_count_of_successes_again() {
        let mut sim = Sim::new(&metric(
            "{count: 12, failureLimit: 3, inconclusiveLimit: 3, consecutiveErrorLimit: 3, consecutiveSuccessLimit: 2}",
        ));
        sim.run_script(&[ok()]);
        assert_eq!(sim.metric().consecutive_success, 1);
        for (reading, what) in
            [(bad(), "a failure"), (ok(), ""), (unsure(), "an inconclusive one"), (ok(), ""), (error(), "an error")]
        {
            let before = sim.metric().measurements.len();
            sim.run_script(std::slice::from_ref(&reading));
            assert_eq!(sim.metric().measurements.len(), before + 1);
            let expected = if what.is_empty() { 1 } else { 0 };
            assert_eq!(sim.metric().consecutive_success, expected, "after {what:?}");
            assert_eq!(sim.metric().phase, AnalysisPhase::Running);
        }
        sim.run_script(&[ok(), ok()]);
        assert_eq!(sim.metric().phase, AnalysisPhase::Successful);
    }

    #[test]
    fn reaching_the_count_without_the_successes_in_a_row_is_inconclusive_when_a_failure_limit_applies() {
        let mut sim = Sim::new(&metric("{count: 4, failureLimit: 1, consecutiveSuccessLimit: 3}"));
        let taken = sim.run_script(&[ok(), ok(), bad(), ok(), ok()]);
        assert_eq!(taken, 4);
        let m = sim.metric();
        assert_eq!((m.phase, m.failed, m.consecutive_success), (AnalysisPhase::Inconclusive, 1, 1));
        assert_eq!(sim.status().phase, Some(AnalysisPhase::Inconclusive));
        let message = m.message.unwrap();
        assert!(
            message.contains("count reached with 1 successful in a row, fewer than consecutiveSuccessLimit 3"),
            "{message}"
        );
    }

    #[test]
    fn reaching_the_count_without_the_successes_in_a_row_fails_when_failure_limit_is_minus_one() {
        let mut sim = Sim::new(&metric("{count: 4, failureLimit: -1, consecutiveSuccessLimit: 2}"));
        let taken = sim.run_script(&[bad(), ok(), bad(), bad(), ok()]);
        assert_eq!(taken, 4, "failures alone never end the metric with failureLimit -1");
        let m = sim.metric();
        assert_eq!((m.phase, m.failed), (AnalysisPhase::Failed, 3));
        assert_eq!(sim.status().phase, Some(AnalysisPhase::Failed));
    }

    #[test]
    fn with_failure_limit_minus_one_any_number_of_failures_is_tolerated_until_the_successes_come() {
        let mut sim = Sim::new(&metric("{failureLimit: -1, consecutiveSuccessLimit: 2}"));
        sim.run_script(&[bad(), bad(), bad(), bad(), bad(), bad(), ok(), ok()]);
        let m = sim.metric();
        assert_eq!((m.phase, m.failed, m.successful), (AnalysisPhase::Successful, 6, 2));
    }

    #[test]
    fn without_the_limit_the_metric_takes_every_measurement_of_its_count() {
        let mut sim = Sim::new(&metric("{count: 4}"));
        assert_eq!(sim.run_script(&[ok(), ok(), ok(), ok(), ok()]), 4);
        assert_eq!(sim.metric().consecutive_success, 4, "counted even without a limit, as Argo does");
    }

    fn refused(limits: &str) -> String {
        let mut sim = Sim::new(&metric(limits));
        let update = sim.step(|_| ok());
        assert_eq!(update.status.phase, Some(AnalysisPhase::Error), "{limits} should be refused");
        update.status.message.unwrap()
    }

    #[test]
    fn failure_limit_minus_one_without_a_consecutive_success_limit_ends_the_run_in_error_naming_the_field() {
        let message = refused("{count: 3, failureLimit: -1}");
        assert!(message.contains("metrics[0].failureLimit -1 (no limit) needs a consecutiveSuccessLimit"), "{message}");
        let message = refused("{count: 3, failureLimit: -1, consecutiveSuccessLimit: 0}");
        assert!(message.contains("metrics[0].failureLimit"), "{message}");
    }

    #[test]
    fn a_count_smaller_than_failure_limit_plus_consecutive_success_limit_is_refused_naming_the_field() {
        let message = refused("{count: 4, failureLimit: 2, consecutiveSuccessLimit: 3}");
        assert!(
            message.contains(
                "metrics[0].consecutiveSuccessLimit 3: count 4 is less than failureLimit + consecutiveSuccessLimit (5)"
            ),
            "{message}"
        );
        let message = refused("{count: 2, failureLimit: -1, consecutiveSuccessLimit: 3}");
        assert!(message.contains("metrics[0].consecutiveSuccessLimit 3"), "{message}");
    }

    #[test]
    fn a_negative_limit_is_refused_naming_the_field() {
        let message = refused("{count: 4, consecutiveSuccessLimit: -2}");
        assert!(message.contains("metrics[0].consecutiveSuccessLimit must not be negative"), "{message}");
        let message = refused("{count: 4, failureLimit: -2, consecutiveSuccessLimit: 1}");
        assert!(message.contains("metrics[0].failureLimit must not be negative"), "{message}");
    }

    #[test]
    fn the_limit_may_come_from_an_argument() {
        let spec = format!(
            "{}args: [{{name: streak, value: '2'}}]\n",
            metric("{count: 5, consecutiveSuccessLimit: '{{args.streak}}'}")
        );
        let mut sim = Sim::new(&spec);
        assert_eq!(sim.run_script(&[ok(), ok(), ok()]), 2);
        assert_eq!(sim.metric().phase, AnalysisPhase::Successful);
    }
}

mod ttl_strategy {
    use super::*;

    fn completed(phase: AnalysisPhase, ttl: &str) -> AnalysisRun {
        let mut r = run(&format!("{}ttlStrategy: {ttl}\n", metric("{}")));
        r.status = Some(AnalysisRunStatus { phase: Some(phase), completed_at: Some(at(100)), ..Default::default() });
        r
    }

    #[test]
    fn a_successful_run_is_deleted_once_seconds_after_success_have_passed_and_looked_at_again_then() {
        let r = completed(AnalysisPhase::Successful, "{secondsAfterSuccess: 30, secondsAfterCompletion: 600}");
        assert_eq!(measure::expiry(&r, &at(100)), Expiry::After(Duration::from_secs(30)));
        assert_eq!(measure::expiry(&r, &at(120)), Expiry::After(Duration::from_secs(10)));
        assert_eq!(measure::expiry(&r, &at(130)), Expiry::Delete);
        assert_eq!(measure::expiry(&r, &at(5000)), Expiry::Delete);
    }

    #[test]
    fn a_failed_run_goes_by_seconds_after_failure() {
        let r = completed(AnalysisPhase::Failed, "{secondsAfterSuccess: 30, secondsAfterFailure: 300}");
        assert_eq!(measure::ttl_seconds(&r), Some(300));
        assert_eq!(measure::expiry(&r, &at(399)), Expiry::After(Duration::from_secs(1)));
        assert_eq!(measure::expiry(&r, &at(400)), Expiry::Delete);
    }

    #[test]
    fn seconds_after_completion_covers_every_phase_the_specific_fields_leave_out() {
        for phase in
            [AnalysisPhase::Error, AnalysisPhase::Inconclusive, AnalysisPhase::Successful, AnalysisPhase::Failed]
        {
            let r = completed(phase, "{secondsAfterCompletion: 60}");
            assert_eq!(measure::ttl_seconds(&r), Some(60), "{phase}");
        }
        let r = completed(AnalysisPhase::Error, "{secondsAfterFailure: 5, secondsAfterCompletion: 60}");
        assert_eq!(measure::ttl_seconds(&r), Some(60), "Error is not Failed: secondsAfterFailure does not apply");
    }

    #[test]
    fn a_run_without_a_ttl_for_its_phase_is_kept() {
        let r = completed(AnalysisPhase::Failed, "{secondsAfterSuccess: 30}");
        assert_eq!(measure::expiry(&r, &at(100_000)), Expiry::Keep);
        let mut no_ttl = completed(AnalysisPhase::Successful, "{}");
        assert_eq!(measure::expiry(&no_ttl, &at(100_000)), Expiry::Keep);
        no_ttl.spec.ttl_strategy = None;
        assert_eq!(measure::expiry(&no_ttl, &at(100_000)), Expiry::Keep);
    }

    #[test]
    fn a_run_still_measuring_is_never_deleted_whatever_its_ttl() {
        let mut r = completed(AnalysisPhase::Running, "{secondsAfterCompletion: 0}");
        assert_eq!(measure::expiry(&r, &at(100_000)), Expiry::Keep);
        r.status = None;
        assert_eq!(measure::expiry(&r, &at(100_000)), Expiry::Keep);
    }

    #[test]
    fn a_run_that_completes_through_record_counts_its_ttl_from_its_completion() {
        let mut sim = Sim::new(&format!("{}ttlStrategy: {{secondsAfterCompletion: 20}}\n", metric("{count: 1}")));
        sim.now = 40;
        sim.run_script(&[ok()]);
        assert_eq!(sim.status().completed_at, Some(at(41)));
        assert_eq!(measure::expiry(&sim.run, &at(41)), Expiry::After(Duration::from_secs(20)));
        assert_eq!(measure::expiry(&sim.run, &at(61)), Expiry::Delete);
    }
}

mod summaries {
    use super::*;

    const TWO_DRY_RUN: &str = r#"
dryRun: [{metricName: "shadow-.*"}]
metrics:
- {name: ready, successCondition: result == 1, provider: {web: {url: "http://checks/ready"}}}
- {name: shadow-a, successCondition: result == 1, provider: {web: {url: "http://checks/a"}}}
- {name: shadow-b, successCondition: result == 1, provider: {web: {url: "http://checks/b"}}}
"#;

    #[test]
    fn dry_run_metrics_are_counted_in_a_summary_of_their_own() {
        let mut sim = Sim::new(TWO_DRY_RUN);
        sim.step(|t| if t.metric.name == "shadow-b" { Reading::Value(json!(0)) } else { Reading::Value(json!(1)) });
        let (counted, dry_run) = measure::summaries(&sim.status());
        assert_eq!(counted, RunSummary { count: 1, successful: 1, ..Default::default() });
        assert_eq!(dry_run, Some(RunSummary { count: 2, successful: 1, failed: 1, ..Default::default() }));
        assert_eq!(sim.status().phase, Some(AnalysisPhase::Successful), "dry-run metrics never decide");
    }

    #[test]
    fn a_run_without_dry_run_metrics_has_no_dry_run_summary() {
        let mut sim = Sim::new(&metric("{count: 1}"));
        sim.run_script(&[bad()]);
        let (counted, dry_run) = measure::summaries(&sim.status());
        assert_eq!(counted, RunSummary { count: 1, failed: 1, ..Default::default() });
        assert_eq!(dry_run, None);
    }

    #[test]
    fn metadata_written_on_a_metric_result_is_kept_as_written() {
        let mut sim = Sim::new(&metric("{count: 2}"));
        sim.run_script(&[ok()]);
        let mut status = sim.status();
        let metadata = BTreeMap::from([("owner".to_string(), "team-a".to_string())]);
        status.metric_results[0].metadata = Some(metadata.clone());
        sim.run.status = Some(status);
        sim.run_script(&[ok()]);
        assert_eq!(sim.metric().phase, AnalysisPhase::Successful);
        assert_eq!(sim.metric().metadata, Some(metadata));
    }
}

mod run_history_limits {
    use super::*;

    const CANARY: &str = "    canary:\n      steps:\n      - analysis: {templates: [{templateName: check}]}\n";

    fn world(limits: &str) -> World {
        let mut ro = rollout_with(1, CANARY);
        if !limits.is_empty() {
            ro.spec.analysis = Some(serde_yaml::from_str(limits).unwrap());
        }
        let mut w = World::new(ro);
        w.settle(10);
        w
    }

    /// A completed run of an older version, created `age` seconds before now.
    fn old_run(w: &mut World, name: &str, phase: AnalysisPhase, age: i64) {
        w.observed.analysis_runs.push(ObservedAnalysisRun {
            name: name.into(),
            hash: "old".into(),
            kind: AnalysisKind::Step(0),
            phase,
            message: None,
            terminating: false,
            created: Some(stepwise_core::add_seconds(&w.now, -age)),
        });
    }

    fn deleted(plan: &stepwise_core::Plan) -> Vec<&str> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteAnalysisRun { name } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn five_successful_and_five_unsuccessful_runs_are_kept_by_default_and_the_oldest_beyond_go_first() {
        let mut w = world("");
        for i in 0..7 {
            old_run(&mut w, &format!("ok-{i}"), AnalysisPhase::Successful, 1000 - i * 10);
        }
        for (i, phase) in [AnalysisPhase::Failed, AnalysisPhase::Error, AnalysisPhase::Inconclusive]
            .iter()
            .cycle()
            .take(6)
            .enumerate()
        {
            old_run(&mut w, &format!("bad-{i}"), *phase, 995 - i as i64 * 10);
        }
        let plan = w.reconcile();
        assert_eq!(deleted(&plan), ["ok-0", "bad-0", "ok-1"], "oldest first");
        assert_eq!(deleted(&w.reconcile()), Vec::<&str>::new(), "once deleted, nothing more to delete");
    }

    #[test]
    fn the_limits_of_spec_analysis_apply_to_successful_and_unsuccessful_runs_apart() {
        let mut w = world("{successfulRunHistoryLimit: 1, unsuccessfulRunHistoryLimit: 0}");
        old_run(&mut w, "ok-old", AnalysisPhase::Successful, 300);
        old_run(&mut w, "failed", AnalysisPhase::Failed, 200);
        old_run(&mut w, "ok-new", AnalysisPhase::Successful, 100);
        assert_eq!(deleted(&w.reconcile()), ["ok-old", "failed"]);
        let left: Vec<&str> = w.observed.analysis_runs.iter().map(|r| r.name.as_str()).collect();
        assert!(left.contains(&"ok-new"), "{left:?}");
    }

    #[test]
    fn runs_still_measuring_are_never_deleted() {
        let mut w = world("{successfulRunHistoryLimit: 0, unsuccessfulRunHistoryLimit: 0}");
        old_run(&mut w, "pending", AnalysisPhase::Pending, 300);
        old_run(&mut w, "running", AnalysisPhase::Running, 300);
        old_run(&mut w, "done", AnalysisPhase::Successful, 300);
        let plan = w.reconcile();
        assert_eq!(deleted(&plan), ["done"]);
    }

    #[test]
    fn a_run_being_stopped_takes_its_place_in_the_history_and_an_older_completed_run_goes_in_its_stead() {
        let mut w = world("{successfulRunHistoryLimit: 1}");
        old_run(&mut w, "ok-old", AnalysisPhase::Successful, 300);
        old_run(&mut w, "stopping", AnalysisPhase::Running, 100);
        let plan = w.reconcile();
        assert_eq!(deleted(&plan), ["ok-old"]);
        assert!(plan.actions.contains(&Action::TerminateAnalysisRun { name: "stopping".into() }));
        w.observed.analysis_runs.iter_mut().for_each(|r| r.phase = AnalysisPhase::Successful);
        assert_eq!(deleted(&w.reconcile()), Vec::<&str>::new(), "once it has ended, it is the one kept");
    }

    #[test]
    fn the_run_the_rollout_status_names_is_kept_whatever_the_limits() {
        let mut w = world("{successfulRunHistoryLimit: 0, unsuccessfulRunHistoryLimit: 0}");
        w.set_image("demo:2");
        w.settle(5);
        w.analyses_start();
        w.analyses_finish();
        w.analysis_outcome = AnalysisPhase::Inconclusive;
        let current = w.run_of(AnalysisKind::Step(0)).expect("the step's run").name.clone();
        w.observed.analysis_runs.iter_mut().for_each(|r| r.phase = AnalysisPhase::Inconclusive);
        let plan = w.reconcile();
        let named = w.status().canary.and_then(|c| c.current_step_analysis_run_status).map(|r| r.name);
        assert_eq!(named.as_deref(), Some(current.as_str()), "the status names the inconclusive run");
        assert!(!deleted(&plan).contains(&current.as_str()), "{:?}", deleted(&plan));
        assert!(w.observed.analysis_runs.iter().any(|r| r.name == current));
    }

    #[test]
    fn releasing_version_after_version_keeps_only_the_newest_runs() {
        let mut w = world("{successfulRunHistoryLimit: 2}");
        for v in 2..=6 {
            w.wait(60);
            w.set_image(&format!("demo:{v}"));
            for _ in 0..20 {
                w.reconcile();
                w.pods_settle();
                w.analyses_start();
                w.analyses_finish();
            }
        }
        let runs: Vec<&ObservedAnalysisRun> = w.observed.analysis_runs.iter().collect();
        let completed = runs.iter().filter(|r| r.phase == AnalysisPhase::Successful).count();
        assert!(completed <= 3, "two in the history and at most the current one: {runs:?}");
        let newest = runs.iter().map(|r| r.created.clone()).max().flatten();
        assert!(runs.iter().any(|r| r.created == newest), "the newest run stays");
        assert_eq!(w.status().phase, Some(stepwise_api::RolloutPhase::Healthy));
    }
}
