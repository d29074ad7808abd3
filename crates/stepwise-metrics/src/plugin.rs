//! Metric plugins: measurements by a program of the platform team's, in any language, without
//! recompiling stepwise.
//!
//! The protocol (`stepwise.dev/plugins/v1`, docs/plugins.md) is one process per call: the
//! controller runs the plugin's executable with one JSON request on its standard input and reads
//! one JSON answer from its standard output; what it writes on standard error becomes the message
//! of a failed call. A call that does not answer within the timeout is killed. Nothing is kept
//! between calls, so a plugin is a small stateless program, and a crashed plugin is just one
//! measurement in Error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stepwise_api::{AnalysisPhase, Measurement, Metric};
use tokio::io::AsyncWriteExt;

use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// The protocol's name and version, in every request and every answer.
pub const PROTOCOL: &str = "stepwise.dev/plugins/v1";

/// Seconds a call may take unless the controller says otherwise.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;

/// The metric plugins the controller was started with, by name.
#[derive(Clone, Debug, Default)]
pub struct PluginProvider {
    plugins: BTreeMap<String, PathBuf>,
    timeout: Duration,
}

/// What the controller asks a plugin.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    /// Always [`PROTOCOL`].
    pub protocol: &'static str,
    /// `run`, `resume`, `terminate` or `garbageCollect`.
    pub operation: &'static str,
    /// The AnalysisRun.
    pub run: RunJson<'a>,
    /// The metric's name and the plugin's configuration (arguments already filled in).
    pub metric: MetricJson<'a>,
    /// For resume and terminate: the measurement in flight; for garbageCollect: those dropped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<&'a Measurement>,
}

/// The run, as a plugin sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunJson<'a> {
    /// Namespace of the AnalysisRun.
    pub namespace: &'a str,
    /// Name of the AnalysisRun.
    pub name: &'a str,
    /// UID of the AnalysisRun.
    pub uid: &'a str,
}

/// The metric, as a plugin sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricJson<'a> {
    /// Name of the metric.
    pub name: &'a str,
    /// The configuration under `provider.plugin.<name>`.
    pub config: &'a Value,
}

/// A plugin's answer. Exactly one of `value`, `phase`, `resumeAfterSeconds` and `error` is set
/// (none at all for terminate and garbageCollect).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Answer {
    /// Must be [`PROTOCOL`].
    pub protocol: String,
    /// A value: the metric's conditions decide what it means.
    #[serde(default)]
    pub value: Option<Value>,
    /// A verdict of the plugin's own: Successful, Failed, Inconclusive or Error.
    #[serde(default)]
    pub phase: Option<AnalysisPhase>,
    /// Why, with a phase or an error.
    #[serde(default)]
    pub message: Option<String>,
    /// Still measuring: ask again (resume) after this many seconds.
    #[serde(default)]
    pub resume_after_seconds: Option<u64>,
    /// The plugin could not measure.
    #[serde(default)]
    pub error: Option<String>,
    /// Kept in the measurement's metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl PluginProvider {
    /// Plugins by name (the key under `provider.plugin`) and executable; each call may take
    /// `timeout`.
    pub fn new(plugins: BTreeMap<String, PathBuf>, timeout: Duration) -> Self {
        PluginProvider { plugins, timeout }
    }

    /// Parses the controller's `NAME=PATH` flags.
    pub fn parse_flag(flag: &str) -> Result<(String, PathBuf), Error> {
        match flag.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok((name.to_string(), PathBuf::from(path))),
            _ => Err(Error::Config { field: "--metric-plugin", message: format!("{flag:?} is not NAME=PATH") }),
        }
    }

    /// The plugin a metric names and its configuration.
    fn plugin_of<'m>(&self, metric: &'m Metric) -> Result<(&str, &PathBuf, &'m Value), Error> {
        let field = "provider.plugin";
        let configs = metric
            .provider
            .plugin
            .as_ref()
            .ok_or_else(|| Error::Config { field, message: format!("metric {} names no plugin", metric.name) })?;
        let mut named = configs.iter();
        let (Some((name, config)), None) = (named.next(), named.next()) else {
            return Err(Error::Config { field, message: "must name exactly one plugin".into() });
        };
        let (name, path) = self.plugins.get_key_value(name.as_str()).ok_or_else(|| Error::Config {
            field,
            message: format!(
                "the metric plugin {name} is not installed (the controller's --metric-plugin flags name: {})",
                if self.plugins.is_empty() {
                    "none".to_string()
                } else {
                    self.plugins.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        })?;
        Ok((name.as_str(), path, config))
    }

    async fn call(
        &self,
        operation: &'static str,
        run: &RunRef,
        metric: &Metric,
        measurements: Vec<&Measurement>,
    ) -> Result<Answer, Error> {
        let (name, path, config) = self.plugin_of(metric)?;
        let request = Request {
            protocol: PROTOCOL,
            operation,
            run: RunJson { namespace: &run.namespace, name: &run.name, uid: &run.uid },
            metric: MetricJson { name: &metric.name, config },
            measurements,
        };
        let body = serde_json::to_vec(&request).map_err(|e| Error::Answer { message: e.to_string() })?;
        let target = format!("metric plugin {name}");
        let output = tokio::time::timeout(self.timeout, exec(path, &body))
            .await
            .map_err(|_| Error::Timeout { seconds: self.timeout.as_secs(), target: target.clone() })?
            .map_err(|e| Error::Source {
                target: target.clone(),
                message: format!("cannot run {}: {e}", path.display()),
            })?;
        read_answer(&target, output.status.code(), &output.stdout, &output.stderr)
    }
}

/// Runs the executable with `body` on its standard input; killed if the call is abandoned.
async fn exec(path: &PathBuf, body: &[u8]) -> std::io::Result<std::process::Output> {
    let mut child = tokio::process::Command::new(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading its input still answers.
        let _ = stdin.write_all(body).await;
    }
    child.wait_with_output().await
}

/// A plugin's output as an answer, or the error that says what was wrong with it.
pub fn read_answer(target: &str, code: Option<i32>, stdout: &[u8], stderr: &[u8]) -> Result<Answer, Error> {
    let said = String::from_utf8_lossy(stderr);
    let said = said.trim();
    if code != Some(0) {
        let code = code.map_or("a signal".to_string(), |c| format!("code {c}"));
        let message =
            if said.is_empty() { format!("exited with {code}") } else { format!("exited with {code}: {said}") };
        return Err(Error::Source { target: target.to_string(), message });
    }
    let text = String::from_utf8_lossy(stdout);
    let answer: Answer = serde_json::from_str(text.trim()).map_err(|e| Error::Answer {
        message: format!(
            "{target} answered something that is not a {PROTOCOL} answer ({e}): {:?}",
            text.chars().take(100).collect::<String>()
        ),
    })?;
    if answer.protocol != PROTOCOL {
        return Err(Error::Answer {
            message: format!("{target} speaks {:?}; this controller speaks {PROTOCOL}", answer.protocol),
        });
    }
    Ok(answer)
}

/// What an answer to run or resume means.
pub fn taken(target: &str, answer: Answer, now: Timestamp) -> Result<Taken, Error> {
    let reading = match (answer.value, answer.phase, answer.resume_after_seconds, answer.error) {
        (Some(value), None, None, None) => Reading::Value(value),
        (None, Some(phase), None, None) => Reading::Verdict { phase, message: answer.message },
        (None, None, Some(seconds), None) => {
            let after = SignedDuration::from_secs(i64::try_from(seconds).unwrap_or(i64::MAX));
            Reading::InProgress { resume_at: now.checked_add(after).unwrap_or(Timestamp::MAX) }
        }
        (None, None, None, Some(error)) => return Err(Error::Source { target: target.to_string(), message: error }),
        _ => {
            return Err(Error::Answer {
                message: format!("{target} must answer exactly one of value, phase, resumeAfterSeconds and error"),
            });
        }
    };
    Ok(Taken { reading, metadata: answer.metadata })
}

impl MetricProvider for PluginProvider {
    fn kind(&self) -> &'static str {
        "plugin"
    }

    async fn run(&self, run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let answer = self.call("run", run, metric, Vec::new()).await?;
        taken(&format!("metric plugin of {}", metric.name), answer, Timestamp::now())
    }

    async fn resume(&self, run: &RunRef, metric: &Metric, measurement: &Measurement) -> Result<Taken, Error> {
        let answer = self.call("resume", run, metric, vec![measurement]).await?;
        taken(&format!("metric plugin of {}", metric.name), answer, Timestamp::now())
    }

    async fn terminate(&self, run: &RunRef, metric: &Metric, measurement: &Measurement) -> Result<(), Error> {
        let answer = self.call("terminate", run, metric, vec![measurement]).await?;
        answer.error.map_or(Ok(()), |message| {
            Err(Error::Source { target: format!("metric plugin of {}", metric.name), message })
        })
    }

    async fn garbage_collect(&self, run: &RunRef, metric: &Metric, dropped: &[Measurement]) -> Result<(), Error> {
        if dropped.is_empty() {
            return Ok(());
        }
        let answer = self.call("garbageCollect", run, metric, dropped.iter().collect()).await?;
        answer.error.map_or(Ok(()), |message| {
            Err(Error::Source { target: format!("metric plugin of {}", metric.name), message })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(text: &str) -> Result<Answer, Error> {
        read_answer("metric plugin p", Some(0), text.as_bytes(), b"")
    }

    #[test]
    fn each_kind_of_answer_becomes_its_reading() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let t = |text| taken("p", answer(text).unwrap(), now);
        assert_eq!(
            t(r#"{"protocol":"stepwise.dev/plugins/v1","value":[0.99]}"#).unwrap().reading,
            Reading::Value(json!([0.99]))
        );
        assert_eq!(
            t(r#"{"protocol":"stepwise.dev/plugins/v1","phase":"Failed","message":"budget spent"}"#).unwrap().reading,
            Reading::Verdict { phase: AnalysisPhase::Failed, message: Some("budget spent".into()) }
        );
        assert_eq!(
            t(r#"{"protocol":"stepwise.dev/plugins/v1","resumeAfterSeconds":5,"metadata":{"job":"x"}}"#).unwrap(),
            Taken {
                reading: Reading::InProgress { resume_at: Timestamp::from_second(1_800_000_005).unwrap() },
                metadata: BTreeMap::from([("job".to_string(), "x".to_string())]),
            }
        );
        assert_eq!(
            t(r#"{"protocol":"stepwise.dev/plugins/v1","error":"no data"}"#).unwrap_err().to_string(),
            "p: no data"
        );
        assert!(t(r#"{"protocol":"stepwise.dev/plugins/v1","value":1,"error":"both"}"#).is_err());
        assert!(t(r#"{"protocol":"stepwise.dev/plugins/v1"}"#).is_err());
    }

    #[test]
    fn a_failed_call_an_unknown_protocol_and_a_non_json_answer_are_errors_that_say_which() {
        let err = read_answer("metric plugin p", Some(3), b"", b"cannot reach the budget service\n").unwrap_err();
        assert_eq!(err.to_string(), "metric plugin p: exited with code 3: cannot reach the budget service");
        let err = answer(r#"{"protocol":"stepwise.dev/plugins/v2","value":1}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metric plugin p speaks \"stepwise.dev/plugins/v2\"; this controller speaks stepwise.dev/plugins/v1"
        );
        let err = answer("hello").unwrap_err().to_string();
        assert!(
            err.starts_with("metric plugin p answered something that is not a stepwise.dev/plugins/v1 answer"),
            "{err}"
        );
        assert!(answer(r#"{"protocol":"stepwise.dev/plugins/v1","valu":1}"#).is_err(), "unknown fields are refused");
    }

    #[test]
    fn a_metric_names_one_installed_plugin() {
        let p = PluginProvider::new(
            BTreeMap::from([("example.com/file".into(), PathBuf::from("/bin/true"))]),
            Duration::from_secs(1),
        );
        let metric = |plugins: Value| Metric {
            name: "m".into(),
            provider: serde_json::from_value(json!({"plugin": plugins})).unwrap(),
            ..Default::default()
        };
        assert!(p.plugin_of(&metric(json!({"example.com/file": {}}))).is_ok());
        let err = p.plugin_of(&metric(json!({"example.com/other": {}}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "provider.plugin: the metric plugin example.com/other is not installed (the controller's --metric-plugin flags name: example.com/file)"
        );
        assert!(p.plugin_of(&metric(json!({"a": {}, "b": {}}))).is_err());
        assert_eq!(PluginProvider::parse_flag("a/b=/x/y").unwrap(), ("a/b".into(), PathBuf::from("/x/y")));
        assert!(PluginProvider::parse_flag("nopath").is_err());
    }
}
