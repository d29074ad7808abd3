//! Reading the notifications ConfigMap and rendering its templates: what Argo users write works,
//! and every mistake is named by its key.

mod common;

use std::collections::BTreeMap;

use common::data;
use serde_json::json;
use stepwise_notify::{Config, Error};

/// A ConfigMap as Argo Rollouts' documentation writes one.
fn argo_configmap() -> BTreeMap<String, String> {
    data(&[
        ("trigger.on-rollout-aborted", "- send: [rollout-aborted]\n  when: rollout.status.phase == 'Degraded'\n"),
        (
            "trigger.on-step",
            "- send: [step, rollout-aborted]\n  oncePer: rollout.status.currentStepIndex\n- send: [step]\n",
        ),
        (
            "template.rollout-aborted",
            r##"message: Rollout {{.rollout.metadata.name}} has been aborted.
slack:
  attachments: |
    [{"title": "{{ .rollout.metadata.name}}", "color": "#E96D76",
      "fields": [{"title": "Strategy", "value": "{{if .rollout.spec.strategy.blueGreen}}BlueGreen{{end}}{{if .rollout.spec.strategy.canary}}Canary{{end}}", "short": true}]}]
  groupingKey: "{{.notification.key}}"
  notifyBroadcast: true
webhook:
  ci:
    method: PUT
    path: /rollouts/{{.rollout.metadata.namespace}}/{{.rollout.metadata.name}}
    body: '{"rollout": "{{.rollout.metadata.name}}", "step": {{.notification.step}}}'
"##,
        ),
        ("template.step", "message: '{{.rollout.metadata.name}} is at step {{.notification.step}}'\n"),
        ("service.slack", "token: $slack-token\n"),
        ("service.webhook.ci", "url: https://ci.example.com/hooks\nheaders:\n- name: X-Token\n  value: $ci-token\n"),
        ("subscriptions", "- recipients: [slack:deploys]\n  triggers: [on-rollout-aborted]\n"),
    ])
}

fn argo_secret() -> BTreeMap<String, String> {
    data(&[("slack-token", "xoxb-SECRET-1"), ("ci-token", "SECRET-ci-2")])
}

fn vars() -> serde_json::Value {
    json!({
        "rollout": {"metadata": {"name": "guestbook", "namespace": "shop"}, "spec": {"strategy": {"canary": {"steps": [{"setWeight": 20}]}}}, "status": {"phase": "Degraded"}},
        "notification": {"trigger": "on-rollout-aborted", "revision": "3", "step": 2, "message": "", "key": "shop/guestbook/3"},
    })
}

/// The Display of parsing `config` with `secrets`, which must fail.
fn parse_error(config: &[(&str, &str)], secrets: &[(&str, &str)]) -> String {
    Config::parse(&data(config), &data(secrets)).expect_err("the config is refused").to_string()
}

#[test]
fn an_argo_configmap_parses_into_its_triggers_and_services() {
    let config = Config::parse(&argo_configmap(), &argo_secret()).unwrap();
    assert_eq!(config.triggers(), ["on-rollout-aborted", "on-step"]);
    assert_eq!(config.service("slack").unwrap().kind(), "slack");
    assert_eq!(config.service("ci").unwrap().kind(), "webhook");
    assert!(matches!(config.service("webhook.ci"), Err(Error::UnknownService { .. })));
}

#[test]
fn the_conditions_of_a_trigger_are_kept_in_order() {
    let config = Config::parse(&argo_configmap(), &argo_secret()).unwrap();
    let conditions = config.conditions("on-rollout-aborted").unwrap();
    assert_eq!(conditions[0].when.as_deref(), Some("rollout.status.phase == 'Degraded'"));
    let conditions = config.conditions("on-step").unwrap();
    assert_eq!(conditions.len(), 2);
    assert_eq!(conditions[0].once_per.as_deref(), Some("rollout.status.currentStepIndex"));
    assert!(config.conditions("on-nothing").is_none());
}

#[test]
fn a_trigger_whose_when_is_false_sends_nothing_and_says_why() {
    let config = Config::parse(&argo_configmap(), &argo_secret()).unwrap();
    let mut vars = vars();
    vars["rollout"]["status"] = json!({"phase": "Healthy"});
    let err = config.render("on-rollout-aborted", "slack", &vars).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trigger.on-rollout-aborted sends nothing: `rollout.status.phase == 'Degraded'` is false"
    );
    assert!(matches!(err, Error::Unmet { .. }));
}

#[test]
fn only_the_conditions_that_hold_send_their_templates() {
    let config = data(&[
        ("template.a", "message: a\n"),
        ("template.b", "message: b\n"),
        ("trigger.on-x", "- send: [a]\n  when: notification.step == 1\n- send: [b]\n  when: notification.step >= 1\n"),
        ("service.slack", "token: t\n"),
    ]);
    let config = Config::parse(&config, &BTreeMap::new()).unwrap();
    let sent = |step: i64| -> Vec<String> {
        match config.render("on-x", "slack", &json!({"notification": {"step": step}})) {
            Ok(messages) => messages.into_iter().map(|m| m.template).collect(),
            Err(Error::Unmet { .. }) => vec![],
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(sent(1), ["a", "b"]);
    assert_eq!(sent(2), ["b"]);
    assert!(sent(0).is_empty());
}

#[test]
fn a_when_that_does_not_compile_is_refused_naming_the_trigger_and_the_condition() {
    let err = parse_error(
        &[("template.a", "message: a\n"), ("trigger.on-x", "- send: [a]\n- send: [a]\n  when: rollout.status ==\n")],
        &[],
    );
    assert!(err.starts_with("trigger.on-x: condition 1: when `rollout.status ==` does not compile: line 1"), "{err}");
}

#[test]
fn a_when_that_cannot_be_evaluated_is_an_error_not_a_silence() {
    let config = data(&[
        ("template.a", "message: a\n"),
        ("trigger.on-x", "- send: [a]\n  when: rollout.spec.replicas > 'two'\n"),
        ("service.slack", "token: t\n"),
    ]);
    let config = Config::parse(&config, &BTreeMap::new()).unwrap();
    let err = config.render("on-x", "slack", &json!({"rollout": {"spec": {"replicas": 3}}})).unwrap_err();
    assert!(matches!(err, Error::Condition { index: 0, .. }), "{err}");
}

#[test]
fn rendering_for_slack_gives_the_message_and_the_slack_section_with_attachments_as_json() {
    let config = Config::parse(&argo_configmap(), &argo_secret()).unwrap();
    let messages = config.render("on-rollout-aborted", "slack", &vars()).unwrap();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.template, "rollout-aborted");
    assert_eq!(message.text, "Rollout guestbook has been aborted.");
    assert_eq!(message.fields.keys().collect::<Vec<_>>(), ["slack"]);
    let slack = &message.fields["slack"];
    assert_eq!(slack["attachments"][0]["title"], "guestbook");
    assert_eq!(slack["attachments"][0]["fields"][0]["value"], "Canary");
    assert_eq!(slack["groupingKey"], "shop/guestbook/3");
    assert_eq!(slack["notifyBroadcast"], true);
}

#[test]
fn rendering_for_a_webhook_gives_that_webhook_s_section() {
    let config = Config::parse(&argo_configmap(), &argo_secret()).unwrap();
    let messages = config.render("on-rollout-aborted", "ci", &vars()).unwrap();
    let webhook = &messages[0].fields["webhook"];
    assert_eq!(webhook["method"], "PUT");
    assert_eq!(webhook["path"], "/rollouts/shop/guestbook");
    assert_eq!(webhook["body"], r#"{"rollout": "guestbook", "step": 2}"#);
}

#[test]
fn a_trigger_renders_each_template_it_sends_once_in_order() {
    let config = Config::parse(&argo_configmap(), &argo_secret()).unwrap();
    let messages = config.render("on-step", "ci", &vars()).unwrap();
    let names: Vec<&str> = messages.iter().map(|m| m.template.as_str()).collect();
    assert_eq!(names, ["step", "rollout-aborted"]);
    assert_eq!(messages[0].text, "guestbook is at step 2");
    // `step` has no webhook section: nothing for the webhook but the text.
    assert!(messages[0].fields.is_empty());
}

#[test]
fn a_missing_field_renders_no_value_as_in_go() {
    let config = Config::parse(&argo_configmap(), &argo_secret()).unwrap();
    let mut vars = vars();
    vars["notification"] = json!({});
    let messages = config.render("on-step", "slack", &vars).unwrap();
    assert_eq!(messages[0].text, "guestbook is at step <no value>");
}

#[test]
fn a_template_error_names_the_template_and_the_field() {
    let config = Config::parse(&argo_configmap(), &argo_secret()).unwrap();
    // `.rollout.spec` is missing, so its field `strategy` cannot be read.
    let vars = json!({"rollout": {"metadata": {"name": "guestbook"}, "status": {"phase": "Degraded"}}, "notification": {"key": "k"}});
    let err = config.render("on-rollout-aborted", "slack", &vars).unwrap_err();
    assert!(err.to_string().starts_with("template.rollout-aborted: slack.attachments: "), "{err}");
    let Error::Template { key, field, .. } = err else { panic!("{err:?}") };
    assert_eq!((key.as_str(), field.as_str()), ("template.rollout-aborted", "slack.attachments"));
}

#[test]
fn rendered_attachments_that_are_not_json_name_the_template_and_the_field() {
    let config = data(&[
        ("template.t", "slack:\n  attachments: '[{\"title\": {{.x}}}]'\n"),
        ("trigger.on-x", "- send: [t]\n"),
        ("service.slack", "token: t\n"),
    ]);
    let config = Config::parse(&config, &BTreeMap::new()).unwrap();
    let err = config.render("on-x", "slack", &json!({"x": "unquoted"})).unwrap_err();
    assert!(err.to_string().starts_with("template.t: slack.attachments: not JSON"), "{err}");
}

#[test]
fn an_unknown_trigger_or_service_is_an_error_naming_it() {
    let config = Config::parse(&argo_configmap(), &argo_secret()).unwrap();
    let err = config.render("on-nothing", "slack", &vars()).unwrap_err();
    assert_eq!(err.to_string(), "trigger.on-nothing is not configured");
    let err = config.render("on-step", "teams", &vars()).unwrap_err();
    assert_eq!(err.to_string(), "no service is named teams: configure service.<type>.teams or service.teams");
}

#[test]
fn a_template_that_does_not_parse_is_refused_naming_the_template_and_the_field() {
    let err = parse_error(&[("template.on-abort", "message: 'Rollout {{.rollout.metadata.name'\n")], &[]);
    assert!(err.starts_with("template.on-abort: message: "), "{err}");
    let err = parse_error(&[("template.on-abort", "webhook:\n  ci:\n    body: '{{if .x}}'\n")], &[]);
    assert!(err.starts_with("template.on-abort: webhook.ci.body: "), "{err}");
    let err = parse_error(&[("template.on-abort", "- a list\n")], &[]);
    assert_eq!(err, "template.on-abort: not a map (message, and a section per service)");
}

#[test]
fn a_trigger_must_send_templates_that_are_configured() {
    let template = ("template.a", "message: a\n");
    let err = parse_error(&[template, ("trigger.on-x", "- send: [a, b]\n")], &[]);
    assert_eq!(err, "trigger.on-x: condition 0 sends template.b, which is not configured");
    let err = parse_error(&[template, ("trigger.on-x", "- when: 'true'\n")], &[]);
    assert!(
        err.starts_with("trigger.on-x: not a list of conditions: ") && err.contains("missing field `send`"),
        "{err}"
    );
    let err = parse_error(&[template, ("trigger.on-x", "- send: []\n")], &[]);
    assert_eq!(err, "trigger.on-x: condition 0 sends no template");
}

#[test]
fn a_service_must_be_of_a_known_type_with_a_unique_name() {
    let err = parse_error(&[("service.teams", "recipientUrls: {}\n")], &[]);
    assert_eq!(
        err,
        "service.teams: the service type teams is not supported (only webhook, slack, alertmanager, email, github, teams-workflows)"
    );
    let err = parse_error(&[("service.webhook.ci", "headers: []\n")], &[]);
    assert_eq!(err, "service.webhook.ci: url is missing");
    let err = parse_error(&[("service.slack.ci", "token: t\n"), ("service.webhook.ci", "url: http://h\n")], &[]);
    assert_eq!(err, "service.webhook.ci: another service is named ci");
}

#[test]
fn a_missing_secret_names_the_service_and_the_secret_key_but_no_value() {
    let secrets = [("slack-token", "xoxb-SECRET-1"), ("ci-password", "SECRET-pw-3")];
    let err = parse_error(&[("service.slack", "token: $slack-tokn\n")], &secrets);
    assert_eq!(err, "service.slack: $slack-tokn is not a key of the Secret");
    let config = "url: http://h\nbasicAuth: {username: u, password: $ci-pasword}\n";
    let err = parse_error(&[("service.webhook.ci", config)], &secrets);
    assert_eq!(err, "service.webhook.ci: $ci-pasword is not a key of the Secret");
}

#[test]
fn a_config_error_never_shows_a_secret_value() {
    let secrets = [("bad-header", "SECRET-4\nsplit"), ("host", "SECRET-5 not a host")];
    let errors = [
        parse_error(&[("service.webhook.ci", "url: http://h\nheaders: [{name: X-A, value: $bad-header}]\n")], &secrets),
        parse_error(&[("service.webhook.ci", "url: $host\n")], &secrets),
        parse_error(&[("service.slack", "token: $host\ntimeout: never\n")], &secrets),
    ];
    for err in errors {
        assert!(!err.contains("SECRET"), "{err}");
    }
}

#[test]
fn a_namespace_s_own_services_use_its_own_secret_and_the_controller_s_triggers_and_templates() {
    let own = data(&[(
        "service.webhook.team",
        "url: https://team.example/\nheaders:\n- name: X-Token\n  value: $team-token\n",
    )]);
    let config = Config::for_namespace(&argo_configmap(), &own, &data(&[("team-token", "t")])).unwrap();
    assert_eq!(config.service("team").unwrap().kind(), "webhook");
    assert!(config.service("slack").is_err(), "the controller's services stay the controller's");
    assert_eq!(config.triggers(), ["on-rollout-aborted", "on-step"]);
    let messages = config.render("on-step", "team", &vars()).unwrap();
    assert_eq!(messages[0].text, "guestbook is at step 2");
}

#[test]
fn a_namespace_s_service_cannot_read_the_controller_s_secret() {
    let own =
        data(&[("service.webhook.team", "url: https://team.example/\nheaders:\n- name: X\n  value: $slack-token\n")]);
    let err = Config::for_namespace(&argo_configmap(), &own, &BTreeMap::new()).err().unwrap();
    assert_eq!(err.to_string(), "service.webhook.team: $slack-token is not a key of the Secret");
}

#[test]
fn a_namespace_s_template_replaces_the_controller_s_of_the_same_name() {
    let own =
        data(&[("template.step", "message: 'our {{.rollout.metadata.name}}'\n"), ("service.slack", "token: x\n")]);
    let config = Config::for_namespace(&argo_configmap(), &own, &BTreeMap::new()).unwrap();
    assert_eq!(config.render("on-step", "slack", &vars()).unwrap()[0].text, "our guestbook");
}

#[test]
fn a_service_is_found_by_the_name_subscriptions_give_it() {
    let config = argo_configmap();
    assert!(Config::configures(&config, "slack"));
    assert!(Config::configures(&config, "ci"));
    assert!(!Config::configures(&config, "webhook"));
    assert!(!Config::configures(&config, "team"));
}
