//! What the lab's tests share: the lab's addresses, applying manifests with kubectl, waiting until
//! the responders serve a namespace's pods and until Traefik routes by the weights stepwise wrote,
//! and measuring the split of real requests.
#![allow(dead_code)] // each test binary uses its own part

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use stepwise_api::RolloutPhase;
use stepwise_e2e::{Env, eventually};
use stepwise_lab::load::{self, LoadConfig, LoadReport};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The lab's addresses, from the environment tests/lab/exec.sh sets.
pub struct Lab {
    /// Traefik's `web` entry point.
    pub traefik: String,
    /// Traefik's API, ping and metrics.
    pub traefik_admin: String,
    /// The lab's Prometheus.
    pub prometheus: String,
    /// The responders' status server.
    pub responders: String,
}

impl Lab {
    /// The running lab, or an error that says how to get one.
    pub fn get() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!("{name} is not set: these tests run inside the lab; run them with `scripts/just lab-test`")
            })
        };
        // /proc/self/net/dev lists the interfaces of this process's network namespace (/sys/class/net
        // shows the namespace sysfs was mounted in, which is the machine's).
        let links: Vec<String> = std::fs::read_to_string("/proc/self/net/dev")?
            .lines()
            .skip(2)
            .filter_map(|line| line.split(':').next().map(|name| name.trim().to_string()))
            .collect();
        if links != ["lo"] {
            bail!(
                "this network namespace has the interfaces {links:?}: the lab's tests run only where lo is the only one"
            );
        }
        Ok(Lab {
            traefik: var("LAB_TRAEFIK_URL")?,
            traefik_admin: var("LAB_TRAEFIK_ADMIN_URL")?,
            prometheus: var("LAB_PROMETHEUS_URL")?,
            responders: var("LAB_RESPONDER_URL")?,
        })
    }

    /// Sends `requests` requests for `host` through Traefik and reports who answered.
    pub async fn send(&self, host: &str, requests: u64) -> anyhow::Result<LoadReport> {
        let config = LoadConfig {
            url: format!("{}/", self.traefik),
            host: Some(host.to_string()),
            requests: Some(requests),
            duration: Some(Duration::from_secs(120)),
            rate: 0.0,
            concurrency: 8,
            timeout: Duration::from_secs(5),
        };
        load::run(config, None).await
    }

    /// Waits until the responders serve exactly the running pods of `ns` whose version is
    /// `version`, `count` of them.
    pub async fn until_served(&self, ns: &str, version: &str, count: usize) -> anyhow::Result<()> {
        let url = format!("{}/pods", self.responders);
        eventually(&format!("{count} pods of version {version} in {ns} served"), Duration::from_secs(60), || async {
            let pods: Vec<Value> = reqwest::get(&url).await?.json().await?;
            let served = pods.iter().filter(|p| p["namespace"] == ns && p["version"] == version).count();
            Ok(served == count)
        })
        .await
    }

    /// Waits until Traefik's own view of the service `name` (as its API lists it, e.g.
    /// `<ns>-demo@kubernetescrd`) gives `weights` (backend service name suffix → weight).
    pub async fn until_traefik_weights(&self, name: &str, weights: &[(&str, u64)]) -> anyhow::Result<()> {
        let url = format!("{}/api/http/services/{name}", self.traefik_admin);
        let want: Vec<(String, u64)> = weights.iter().map(|(s, w)| (s.to_string(), *w)).collect();
        eventually(&format!("Traefik to route {name} by {want:?}"), Duration::from_secs(30), || async {
            let answer = reqwest::get(&url).await?;
            if !answer.status().is_success() {
                return Ok(false);
            }
            let service: Value = answer.json().await?;
            let got: Vec<(String, u64)> = service["weighted"]["services"]
                .as_array()
                .map(|services| {
                    services
                        .iter()
                        .map(|s| {
                            (s["name"].as_str().unwrap_or_default().to_string(), s["weight"].as_u64().unwrap_or(0))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(want
                .iter()
                .all(|(suffix, weight)| got.iter().any(|(name, w)| name.contains(suffix.as_str()) && w == weight)))
        })
        .await
    }
}

impl Lab {
    /// Waits until a small sample through Traefik for `host` shows `version` answering about
    /// `percent` % with nothing failing: Traefik applies a changed route within a second or two.
    pub async fn until_share(&self, host: &str, version: &str, percent: f64) -> anyhow::Result<()> {
        eventually(&format!("{host} to send {percent}% to version {version}"), Duration::from_secs(30), || async {
            let sample = self.send(host, 200).await?;
            Ok(sample.failed() == 0 && (100.0 * sample.share(version) - percent).abs() <= 5.0)
        })
        .await
    }
}

impl Lab {
    /// Steady load for `host` through Traefik at `rate` requests a second until `stop` is sent
    /// (or 400 s pass); the task returns what the load saw.
    pub fn steady_load(&self, host: &str, rate: f64) -> (watch::Sender<bool>, JoinHandle<anyhow::Result<LoadReport>>) {
        let (stop, stopped) = watch::channel(false);
        let config = LoadConfig {
            url: format!("{}/", self.traefik),
            host: Some(host.to_string()),
            requests: None,
            duration: Some(Duration::from_secs(400)),
            rate,
            concurrency: 4,
            timeout: Duration::from_secs(5),
        };
        (stop, tokio::spawn(load::run(config, Some(stopped))))
    }

    /// Releases `version` failing `error_rate` of its requests under 100 requests a second, until
    /// the Rollout is judged: Healthy for a good version, Degraded (aborted) otherwise. Returns
    /// what the load saw during the release.
    pub async fn release(&self, env: &Env, host: &str, version: &str, error_rate: &str) -> anyhow::Result<LoadReport> {
        let (stop, load) = self.steady_load(host, 100.0);
        env.when_template(json!({"spec": {"containers": [{
            "name": "app",
            "image": format!("lab.invalid/demo:{version}"),
            "ports": [{"containerPort": 8080}],
            "env": [{"name": "ERROR_RATE", "value": error_rate}],
        }]}}))
        .await?;
        let outcome = if error_rate == "0" { RolloutPhase::Healthy } else { RolloutPhase::Degraded };
        let judged = env.then_phase(outcome, Duration::from_secs(120)).await;
        stop.send(true)?;
        let report = load.await??;
        judged?;
        eprintln!("during the release of {version} (ERROR_RATE={error_rate}):\n{report}");
        Ok(report)
    }
}

/// The Services of the app every lab test runs: `demo-stable` and `demo-canary`, selecting the
/// pods labelled `app: demo` on port 8080.
pub const SERVICES: &str = "apiVersion: v1
kind: Service
metadata: {name: demo-stable}
spec: {selector: {app: demo}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: demo-canary}
spec: {selector: {app: demo}, ports: [{port: 80, targetPort: 8080}]}
";

/// The app routed by Traefik: the Services, a weighted TraefikService `demo` (all on stable) and an
/// IngressRoute sending `host` to it.
pub fn traefik_app(host: &str) -> String {
    format!(
        r#"{SERVICES}---
apiVersion: traefik.io/v1alpha1
kind: TraefikService
metadata: {{name: demo}}
spec:
  weighted:
    services:
    - {{name: demo-stable, port: 80, weight: 100}}
    - {{name: demo-canary, port: 80, weight: 0}}
---
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: demo}}
spec:
  entryPoints: [web]
  routes:
  - match: Host(`{host}`)
    kind: Rule
    services: [{{name: demo, kind: TraefikService}}]
"#
    )
}

/// The Rollout every lab test releases: `app`, `replicas` pods of `lab.invalid/demo:1` labelled
/// `app: demo` and answering on port 8080, with `strategy` (YAML, indented four spaces, under
/// `strategy:`).
pub fn rollout(replicas: u32, strategy: &str) -> String {
    format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: app}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: demo}}}}\n  template:\n    metadata: {{labels: {{app: demo}}}}\n    spec: {{containers: [{{name: app, image: 'lab.invalid/demo:1', ports: [{{containerPort: 8080}}]}}]}}\n  strategy:\n{strategy}"
    )
}

/// The Traefik router of [`traefik_app`], as `trafficRouting` holds it.
pub const TRAEFIK: &str = "traefik: {weightedTraefikServiceName: demo}";

/// A canary strategy over the two Services, routed by `router` (one line of `trafficRouting`),
/// with `steps` (YAML list items, indented six spaces).
pub fn canary(router: &str, steps: &str) -> String {
    format!(
        "    canary:\n      canaryService: demo-canary\n      stableService: demo-stable\n      trafficRouting:\n        {router}\n      steps:\n{steps}"
    )
}

/// The steps of a judged canary: half the traffic, then the `success-rate` analysis of the
/// canary's pods (its template takes their pod-template hash as `hash`).
pub const JUDGED_STEPS: &str = "      - setWeight: 50\n      - analysis:\n          templates: [{templateName: success-rate}]\n          args:\n          - name: hash\n            valueFrom: {podTemplateHashValue: Latest}\n";

/// The AnalysisTemplate `success-rate` of [`JUDGED_STEPS`], measuring with `provider` (YAML,
/// indented eight spaces, under `provider:`): four measurements 5 s apart after 10 s, at least
/// 0.95, one failure tolerated.
pub fn success_rate_template(provider: &str) -> String {
    format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: success-rate}}\nspec:\n  args:\n  - name: hash\n  metrics:\n  - name: success-rate\n    initialDelay: 10s\n    interval: 5s\n    count: 4\n    failureLimit: 1\n    successCondition: result[0] >= 0.95\n    provider:\n{provider}"
    )
}

/// `kubectl apply --server-side` of `yaml` into `ns`.
pub fn kubectl_apply(ns: &str, yaml: &str) -> anyhow::Result<()> {
    let mut child = Command::new(stepwise_e2e::kubectl_path())
        .args(["apply", "--server-side", "--field-manager=lab-test", "-n", ns, "-f", "-"])
        .env("KUBECONFIG", stepwise_e2e::kubeconfig_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run kubectl")?;
    child.stdin.take().context("kubectl stdin")?.write_all(yaml.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The failed requests a release under load may lose: a tenth of a percent. Zero was seen in
/// most runs, but a CI run lost 1 of 5,562 requests in a good release, not explained yet
/// (tests/lab/README.md); the figures are printed either way.
pub fn tolerated_failures(report: &LoadReport) -> u64 {
    report.total() / 1000
}

/// The share of answers from `version`, in percent, with the counts, for messages.
pub fn describe(report: &LoadReport, version: &str) -> String {
    format!(
        "{:.1}% from {version} ({} requests, {} failed)",
        100.0 * report.share(version),
        report.total(),
        report.failed()
    )
}
