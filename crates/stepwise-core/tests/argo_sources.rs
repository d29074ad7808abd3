//! Argo Rollouts analysis sources stepwise accepts: templates composed of other templates
//! (`spec.templates`), and provider fields the schema keeps for Argo manifests but stepwise does
//! not act on, which end a run in Error at once naming the field.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use stepwise_api::{AnalysisPhase, AnalysisRun, AnalysisRunSpec, AnalysisTemplateRef, AnalysisTemplateSpec};
use stepwise_core::Observed;
use stepwise_core::analysis_run::combine_templates;
use stepwise_core::measure::{self, Outcome, Reading, SecretValues};

fn template(yaml: &str) -> AnalysisTemplateSpec {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad template: {e}\n{yaml}"))
}

fn reference(name: &str) -> AnalysisTemplateRef {
    AnalysisTemplateRef { template_name: name.into(), cluster_scope: None }
}

fn cluster_reference(name: &str) -> AnalysisTemplateRef {
    AnalysisTemplateRef { template_name: name.into(), cluster_scope: Some(true) }
}

fn world(namespaced: &[(&str, &str)], cluster: &[(&str, &str)]) -> Observed {
    let specs =
        |list: &[(&str, &str)]| list.iter().map(|(n, y)| (n.to_string(), template(y))).collect::<BTreeMap<_, _>>();
    Observed { analysis_templates: specs(namespaced), cluster_analysis_templates: specs(cluster), ..Default::default() }
}

fn names(metrics: &[stepwise_api::Metric]) -> Vec<&str> {
    metrics.iter().map(|m| m.name.as_str()).collect()
}

const JOB: &str = "provider: {job: {spec: {}}}";

mod templates_of_templates {
    use super::*;

    #[test]
    fn nested_templates_are_resolved_recursively_with_each_templates_own_metrics_first() {
        let observed = world(
            &[
                (
                    "all",
                    "templates: [{templateName: latency}, {templateName: base, clusterScope: true}]\nmetrics: [{name: own, provider: {job: {spec: {}}}}]",
                ),
                ("latency", &format!("metrics: [{{name: p99, {JOB}}}]\ntemplates: [{{templateName: errors}}]")),
                (
                    "errors",
                    &format!(
                        "metrics: [{{name: error-rate, {JOB}}}]\ndryRun: [{{metricName: error-rate}}]\nmeasurementRetention: [{{metricName: error-rate, limit: 3}}]"
                    ),
                ),
            ],
            &[("base", &format!("metrics: [{{name: up, {JOB}}}]\nargs: [{{name: service}}]"))],
        );
        let combined = combine_templates(&observed, &[reference("all")]).unwrap();
        assert_eq!(names(&combined.metrics), ["own", "p99", "error-rate", "up"]);
        assert_eq!(combined.args.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["service"]);
        assert_eq!(combined.dry_run.len(), 1);
        assert_eq!(combined.measurement_retention[0].limit, 3);
    }

    #[test]
    fn a_template_reached_twice_is_combined_once() {
        let observed = world(
            &[
                ("a", "templates: [{templateName: shared}]"),
                ("b", "templates: [{templateName: shared}]"),
                ("shared", &format!("metrics: [{{name: up, {JOB}}}]")),
            ],
            &[],
        );
        let combined = combine_templates(&observed, &[reference("a"), reference("b")]).unwrap();
        assert_eq!(names(&combined.metrics), ["up"]);
    }

    #[test]
    fn a_metric_name_in_two_templates_is_an_error_naming_both() {
        let observed = world(
            &[
                ("top", "templates: [{templateName: one}, {templateName: two, clusterScope: true}]"),
                ("one", &format!("metrics: [{{name: up, {JOB}}}]")),
            ],
            &[("two", &format!("metrics: [{{name: up, {JOB}}}]"))],
        );
        assert_eq!(
            combine_templates(&observed, &[reference("top")]).unwrap_err(),
            "metric up is in both AnalysisTemplate one and ClusterAnalysisTemplate two"
        );
    }

    #[test]
    fn a_cycle_is_an_error_naming_the_cycle() {
        let observed = world(
            &[
                ("a", &format!("metrics: [{{name: m, {JOB}}}]\ntemplates: [{{templateName: b}}]")),
                ("b", "templates: [{templateName: c, clusterScope: true}]"),
            ],
            &[("c", "templates: [{templateName: b}]")],
        );
        assert_eq!(
            combine_templates(&observed, &[reference("a")]).unwrap_err(),
            "templates form a cycle: AnalysisTemplate b → ClusterAnalysisTemplate c → AnalysisTemplate b"
        );
    }

    #[test]
    fn a_missing_nested_template_is_an_error_naming_it_and_the_template_that_names_it() {
        let observed =
            world(&[("a", &format!("metrics: [{{name: m, {JOB}}}]\ntemplates: [{{templateName: gone}}]"))], &[]);
        assert_eq!(
            combine_templates(&observed, &[reference("a")]).unwrap_err(),
            "AnalysisTemplate gone not found (named in spec.templates of AnalysisTemplate a)"
        );
        assert_eq!(
            combine_templates(&observed, &[cluster_reference("a")]).unwrap_err(),
            "ClusterAnalysisTemplate a not found"
        );
    }

    #[test]
    fn arguments_merge_by_name_and_two_different_values_are_an_error_naming_both_templates() {
        let observed = world(
            &[
                ("top", "templates: [{templateName: declares}, {templateName: gives}]"),
                ("declares", &format!("metrics: [{{name: a, {JOB}}}]\nargs: [{{name: service}}]")),
                ("gives", &format!("metrics: [{{name: b, {JOB}}}]\nargs: [{{name: service, value: api}}]")),
                ("other", &format!("metrics: [{{name: c, {JOB}}}]\nargs: [{{name: service, value: web}}]")),
            ],
            &[],
        );
        let combined = combine_templates(&observed, &[reference("top")]).unwrap();
        assert_eq!(combined.args.len(), 1);
        assert_eq!(combined.args[0].value.as_deref(), Some("api"), "the value given wins over the declaration");
        assert_eq!(
            combine_templates(&observed, &[reference("top"), reference("other")]).unwrap_err(),
            "argument service has different values in AnalysisTemplate gives and AnalysisTemplate other"
        );
    }

    #[test]
    fn templates_that_bring_no_metric_at_all_are_an_error() {
        let observed = world(&[("a", "templates: [{templateName: b}]"), ("b", "templates: [{templateName: a}]")], &[]);
        assert!(combine_templates(&observed, &[reference("a")]).unwrap_err().starts_with("templates form a cycle"));
        let observed = world(&[("a", "dryRun: [{metricName: x}]")], &[]);
        assert_eq!(combine_templates(&observed, &[reference("a")]).unwrap_err(), "the templates hold no metrics");
    }
}

mod fields_stepwise_does_not_act_on {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
    }

    /// What one reconcile of a fresh run says: the problem `due` found, and the status `record`
    /// writes with it.
    fn first_reconcile(spec: &str) -> (Option<String>, usize, stepwise_api::AnalysisRunStatus) {
        let spec: AnalysisRunSpec = serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("bad spec: {e}\n{spec}"));
        let run = AnalysisRun::new("run", spec);
        let due = measure::due(&run, &SecretValues::new(), &at(0));
        let outcomes: Vec<Outcome> = due
            .tasks
            .iter()
            .map(|t| Outcome {
                metric: t.metric.name.clone(),
                reading: Reading::Value(serde_json::json!(1)),
                metadata: BTreeMap::new(),
                started_at: at(0),
                finished_at: at(1),
            })
            .collect();
        let problem = due.problem().map(str::to_string);
        let tasks = due.tasks.len();
        (problem, tasks, measure::record(&run, &due, outcomes, &at(1)).status)
    }

    #[test]
    fn authentication_ends_the_run_in_error_naming_the_method_and_what_to_use_instead() {
        for (provider, method) in [
            (
                "prometheus: {address: 'http://p', query: up, authentication: {sigv4: {region: eu-west-1}}}",
                "prometheus.authentication.sigv4",
            ),
            (
                "prometheus: {address: 'http://p', query: up, authentication: {oauth2: {tokenUrl: 'http://t'}}}",
                "prometheus.authentication.oauth2",
            ),
            ("web: {url: 'http://w', authentication: {oauth2: {tokenUrl: 'http://t'}}}", "web.authentication.oauth2"),
        ] {
            let (_, tasks, status) = first_reconcile(&format!("metrics:\n- name: m\n  provider: {{{provider}}}\n"));
            let message = status.message.unwrap_or_default();
            assert_eq!(tasks, 0);
            assert_eq!(status.phase, Some(AnalysisPhase::Error));
            assert!(
                message.starts_with(&format!(
                    "metrics[0] (m): provider.{method} is not supported; use headers with a secretKeyRef argument"
                )),
                "{message}"
            );
        }
        // An empty object asks for nothing and is measured as usual.
        let (problem, tasks, _) = first_reconcile(
            "metrics:\n- name: m\n  provider: {prometheus: {address: 'http://p', query: up, authentication: {}}}\n",
        );
        assert_eq!((problem, tasks), (None, 1));
    }

    #[test]
    fn a_range_query_stepwise_cannot_read_or_a_web_metric_with_both_bodies_ends_the_run_in_error() {
        let (problem, ..) = first_reconcile(
            "metrics:\n- name: m\n  provider: {prometheus: {address: 'http://p', query: up, rangeQuery: {start: \"now() - 600\", end: now(), step: 1m}}}\n",
        );
        let problem = problem.unwrap_or_default();
        assert!(
            problem
                .starts_with("metrics[0] (m): provider.prometheus.rangeQuery.start: \"now() - 600\" is not supported"),
            "{problem}"
        );

        let (problem, ..) = first_reconcile(
            "metrics:\n- name: m\n  provider: {web: {url: 'http://w', method: POST, body: '{}', jsonBody: {a: 1}}}\n",
        );
        assert_eq!(problem.as_deref(), Some("metrics[0] (m): provider.web: set body or jsonBody, not both"));

        // The forms Argo documents are measured.
        let (problem, tasks, _) = first_reconcile(
            "metrics:\n- name: m\n  provider: {prometheus: {address: 'http://p', query: up, rangeQuery: {start: \"now() - duration('10m')\", end: now(), step: 1m}}}\n",
        );
        assert_eq!((problem, tasks), (None, 1));
    }
}
