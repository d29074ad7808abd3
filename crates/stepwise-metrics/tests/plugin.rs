//! The plugin protocol with real processes: the example plugin of examples/plugins, and small
//! misbehaving plugins written for each case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use stepwise_api::{AnalysisPhase, Metric};
use stepwise_metrics::plugin::PluginProvider;
use stepwise_metrics::{MetricProvider, Reading, RunRef};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/file-metric.py")
}

fn metric(plugin: &str, config: serde_json::Value) -> Metric {
    Metric {
        name: "budget".into(),
        provider: serde_json::from_value(json!({"plugin": {plugin: config}})).unwrap(),
        ..Default::default()
    }
}

fn run() -> RunRef {
    RunRef { namespace: "shop".into(), name: "api-1".into(), uid: "u".into() }
}

/// A plugin written for one test: a shell script in a fresh directory.
fn script(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stepwise-plugin-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plugin");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path
}

fn provider(name: &str, path: PathBuf, timeout: Duration) -> PluginProvider {
    PluginProvider::new(BTreeMap::from([(name.to_string(), path)]), timeout)
}

#[tokio::test]
async fn the_example_plugin_measures_the_number_in_its_file_and_says_when_it_cannot() {
    let dir = std::env::temp_dir().join(format!("stepwise-file-metric-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("budget");
    std::fs::write(&file, "0.97\n").unwrap();
    let p = provider("example.com/file", example(), Duration::from_secs(20));
    let taken = p.run(&run(), &metric("example.com/file", json!({"path": file}))).await.unwrap();
    assert_eq!(taken.reading, Reading::Value(json!(0.97)));
    assert_eq!(taken.metadata.get("path").map(String::as_str), file.to_str());

    std::fs::write(&file, "lots").unwrap();
    let err = p.run(&run(), &metric("example.com/file", json!({"path": file}))).await.unwrap_err();
    assert!(err.to_string().ends_with("holds 'lots', not a number"), "{err}");
    let err = p.run(&run(), &metric("example.com/file", json!({}))).await.unwrap_err();
    assert!(err.to_string().contains("config.path is required"), "{err}");
}

#[tokio::test]
async fn a_verdict_and_a_measurement_still_running_come_back_as_such() {
    let verdict = script(
        "verdict",
        r#"cat >/dev/null; echo '{"protocol":"stepwise.dev/plugins/v1","phase":"Inconclusive","message":"too few requests"}'"#,
    );
    let p = provider("v", verdict, Duration::from_secs(10));
    let taken = p.run(&run(), &metric("v", json!({}))).await.unwrap();
    assert_eq!(
        taken.reading,
        Reading::Verdict { phase: AnalysisPhase::Inconclusive, message: Some("too few requests".into()) }
    );
    let running =
        script("running", r#"cat >/dev/null; echo '{"protocol":"stepwise.dev/plugins/v1","resumeAfterSeconds":7}'"#);
    let p = provider("r", running, Duration::from_secs(10));
    let before = k8s_openapi::jiff::Timestamp::now();
    let Reading::InProgress { resume_at } = p.run(&run(), &metric("r", json!({}))).await.unwrap().reading else {
        panic!("not in progress")
    };
    assert!(resume_at.duration_since(before).as_secs() >= 7);
}

#[tokio::test]
async fn the_request_carries_the_protocol_the_operation_the_run_and_the_config() {
    let dir = std::env::temp_dir().join(format!("stepwise-plugin-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seen = dir.join("request.json");
    let echo = script(
        "echo",
        &format!(r#"cat > {}; echo '{{"protocol":"stepwise.dev/plugins/v1","value":1}}'"#, seen.display()),
    );
    let p = provider("e", echo, Duration::from_secs(10));
    p.run(&run(), &metric("e", json!({"threshold": 3}))).await.unwrap();
    let request: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(
        request,
        json!({
            "protocol": "stepwise.dev/plugins/v1",
            "operation": "run",
            "run": {"namespace": "shop", "name": "api-1", "uid": "u"},
            "metric": {"name": "budget", "config": {"threshold": 3}}
        })
    );
}

#[tokio::test]
async fn a_plugin_that_fails_hangs_or_is_missing_is_an_error_that_says_which() {
    let failing = script("failing", "echo 'budget service unreachable' >&2; exit 4");
    let err = provider("f", failing, Duration::from_secs(10)).run(&run(), &metric("f", json!({}))).await.unwrap_err();
    assert_eq!(err.to_string(), "metric plugin f: exited with code 4: budget service unreachable");

    let hanging = script("hanging", "sleep 30");
    let started = Instant::now();
    let err = provider("h", hanging, Duration::from_secs(1)).run(&run(), &metric("h", json!({}))).await.unwrap_err();
    assert_eq!(err.to_string(), "no answer within 1 s from metric plugin h");
    assert!(started.elapsed() < Duration::from_secs(10), "killed at the timeout");

    let err = provider("m", PathBuf::from("/nonexistent/plugin"), Duration::from_secs(1))
        .run(&run(), &metric("m", json!({})))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("metric plugin m: cannot run /nonexistent/plugin"), "{err}");
}
