//! Given/When/Then helpers for end-to-end tests of stepwise on the local control plane
//! (`tests/cluster`). Each test gets its own namespace and its own controller process, scoped to
//! that namespace, so tests run in parallel without seeing each other.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::{Value, json};
use stepwise_api::operations::{self, Patches};
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, Rollout, RolloutPhase};

pub mod browser;
pub mod dashboard;
pub mod gitops;
pub mod plugin_cli;
pub mod prometheus;
pub mod routing;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The state directory of the local control plane, as `tests/cluster/lib.sh` computes it: each
/// suite of `just test` has its own (`STEPWISE_CLUSTER_DIR`).
pub fn cluster_dir() -> PathBuf {
    std::env::var_os("STEPWISE_CLUSTER_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/cluster"))
}

/// The kubeconfig of the local control plane.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("STEPWISE_KUBECONFIG").map(PathBuf::from).unwrap_or_else(|| cluster_dir().join("kubeconfig"))
}

/// kubectl as the project's scripts install it.
pub fn kubectl_path() -> PathBuf {
    let env = std::fs::read_to_string(cluster_dir().join("env")).unwrap_or_default();
    env.lines()
        .find_map(|l| l.strip_prefix("KUBECTL="))
        .map(|p| PathBuf::from(p.trim_matches('\'')))
        .unwrap_or_else(|| cluster_dir().join("bin/kubectl"))
}

/// A client of the local control plane; fails with a hint when it is not running.
pub async fn client() -> anyhow::Result<Client> {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| {
        format!("no kubeconfig at {}: start the local control plane with `just cluster-up`", path.display())
    })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Installs the committed CRDs (server-side apply, idempotent) and waits until they are served.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in stepwise_api::crd::all() {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("stepwise-e2e").force(), &Patch::Apply(&crd))
            .await
            .with_context(|| format!("install CRD {name}"))?;
    }
    let rollouts: Api<Rollout> = Api::all(client.clone());
    eventually("the Rollout CRD is served", Duration::from_secs(30), || async {
        Ok(rollouts.list(&ListParams::default().limit(1)).await.is_ok())
    })
    .await
}

/// Polls `check` every 200 ms until it returns true, or fails after `timeout` naming `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_err.map(|e| format!(" (last error: {e})")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A controller process started by a test.
pub struct ControllerProcess {
    child: Child,
    /// Port of its /metrics, /healthz and /readyz.
    pub metrics_port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl ControllerProcess {
    /// Starts the debug build of `stepwise-controller` scoped to `namespace` with extra flags.
    pub fn start(namespace: &str, name: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_binary("target/debug/stepwise-controller", namespace, name, extra)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a given build (path relative to the repository root) of the controller.
    pub fn start_binary(binary: &str, namespace: &str, name: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_kubeconfig(Path::new(binary), &kubeconfig_path(), namespace, name, extra)
    }

    /// Starts the debug build with more environment variables (the OTEL_* of an exporter, say).
    pub fn start_with_env(namespace: &str, name: &str, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let binary = Path::new("target/debug/stepwise-controller");
        Self::spawn(binary, &kubeconfig_path(), namespace, name, extra, env)
    }

    /// Starts a given build (relative to the repository root, or absolute) with another kubeconfig
    /// (one that points at a proxy, say). Its log is `target/e2e-logs/<namespace>-<name>.log`.
    pub fn start_with_kubeconfig(
        binary: &Path,
        kubeconfig: &Path,
        namespace: &str,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::spawn(binary, kubeconfig, namespace, name, extra, &[])
    }

    fn spawn(
        binary: &Path,
        kubeconfig: &Path,
        namespace: &str,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let bin = repo_root().join(binary);
        if !bin.exists() {
            bail!("{} not built: run `cargo build --bins` first (just test does)", bin.display());
        }
        let logs = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{namespace}-{name}.log"));
        let file = std::fs::File::create(&log)?;
        let metrics_port = free_port();
        let child = Command::new(bin)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--namespace={namespace}"))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .args(extra)
            .env("RUST_LOG", "info,stepwise_controller=debug,kube=warn")
            .envs(env.iter().copied())
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .context("start stepwise-controller")?;
        Ok(ControllerProcess { child, metrics_port, log })
    }

    /// Whether it still runs (it has neither crashed nor exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it at once, as a crash would (SIGKILL).
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (SIGTERM) and waits.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status()?;
        Ok(self.child.wait()?)
    }

    /// The body of one of its HTTP endpoints.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((code, body))
    }

    /// The value of a metric line starting with `prefix`.
    pub async fn metric(&self, prefix: &str) -> anyhow::Result<Option<f64>> {
        let (_, body) = self.get("/metrics").await?;
        Ok(body.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()))
    }

    /// The sum of a metric over all its label sets.
    pub async fn metric_sum(&self, name: &str) -> anyhow::Result<f64> {
        let (_, body) = self.get("/metrics").await?;
        Ok(body
            .lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The values of metric `name` by label set (`{kind="conflict"}`, or "" without labels).
    pub async fn metric_values(&self, name: &str) -> anyhow::Result<BTreeMap<String, f64>> {
        let (_, body) = self.get("/metrics").await?;
        Ok(metric_values(&body, name))
    }

    /// The last 40 lines of its log.
    pub fn log_tail(&self) -> String {
        self.log_tail_lines(40)
    }

    /// Its whole log, without the terminal's colour codes.
    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut plain = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find('\x1b') {
            plain.push_str(&rest[..at]);
            rest = &rest[at..];
            rest = rest.find('m').map(|end| &rest[end + 1..]).unwrap_or("");
        }
        plain.push_str(rest);
        plain
    }

    /// The last `lines` lines of its log.
    pub fn log_tail_lines(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// The samples of metric `name` in a Prometheus text exposition, by label set.
pub fn metric_values(exposition: &str, name: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            (labels.is_empty() || labels.starts_with('{')).then_some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// One test's world: a namespace, a client, and a controller.
pub struct Env {
    /// Client of the local control plane.
    pub client: Client,
    /// The test's namespace.
    pub ns: String,
    /// Controllers started for this test.
    pub controllers: Vec<ControllerProcess>,
    /// Name of the Rollout under test.
    pub rollout: String,
}

impl Env {
    /// A fresh namespace `e2e-<name>-<suffix>` with a controller watching it.
    pub async fn new(name: &str) -> anyhow::Result<Self> {
        let mut env = Self::without_controller(name).await?;
        env.start_controller(&["--leader-elect=false"])?;
        Ok(env)
    }

    /// A fresh namespace with no controller yet.
    pub async fn without_controller(name: &str) -> anyhow::Result<Self> {
        let client = client().await?;
        install_crds(&client).await?;
        let suffix = format!(
            "{:x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos() % 0xfffff
        );
        let ns = format!("e2e-{name}-{suffix}");
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"stepwise.dev/e2e": "true"}}}))?,
        )
        .await?;
        Ok(Env { client, ns, controllers: Vec::new(), rollout: "app".into() })
    }

    /// Starts (another) controller for this namespace.
    pub fn start_controller(&mut self, extra: &[&str]) -> anyhow::Result<usize> {
        let n = self.controllers.len();
        self.controllers.push(ControllerProcess::start(&self.ns, &format!("controller-{n}"), extra)?);
        Ok(n)
    }

    /// The Rollouts of the test's namespace.
    pub fn rollouts(&self) -> Api<Rollout> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    // ---- Given ----

    /// Services with the `app: demo` selector.
    pub async fn given_services(&self, names: &[&str]) -> anyhow::Result<()> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        for name in names {
            let svc = json!({"metadata": {"name": name}, "spec": {"selector": {"app": "demo"}, "ports": [{"port": 80, "targetPort": 8080}]}});
            api.create(&PostParams::default(), &serde_json::from_value(svc)?).await?;
        }
        Ok(())
    }

    /// A Rollout named `app` with `replicas`, the `demo:1` image and `strategy` (YAML), created and
    /// waited on until Healthy.
    pub async fn given_rollout(&self, replicas: i32, strategy: &str) -> anyhow::Result<Rollout> {
        let yaml = format!(
            "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: {}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: demo}}}}\n  template:\n    metadata: {{labels: {{app: demo}}}}\n    spec: {{containers: [{{name: app, image: 'example.invalid/demo:1'}}]}}\n  strategy:\n{strategy}",
            self.rollout
        );
        let ro: Rollout = serde_yaml::from_str(&yaml)?;
        self.rollouts().create(&PostParams::default(), &ro).await?;
        self.then_phase(RolloutPhase::Healthy, Duration::from_secs(60)).await?;
        self.get().await
    }

    // ---- When ----

    /// The Rollout as it is now.
    pub async fn get(&self) -> anyhow::Result<Rollout> {
        Ok(self.rollouts().get(&self.rollout).await?)
    }

    /// Waits until the controller has seen the spec of `changed` (status.observedGeneration), so
    /// that no check that follows can pass on a status written before the change.
    async fn observed(&self, changed: Rollout) -> anyhow::Result<()> {
        let generation = changed.metadata.generation;
        self.then("the controller to observe the change", Duration::from_secs(30), |ro| {
            ro.status.as_ref().and_then(|s| s.observed_generation) >= generation
        })
        .await
    }

    async fn apply(&self, patches: Patches) -> anyhow::Result<()> {
        if let Some(spec) = patches.spec {
            let changed = self.rollouts().patch(&self.rollout, &PatchParams::default(), &Patch::Merge(spec)).await?;
            self.observed(changed).await?;
        }
        if let Some(status) = patches.status {
            self.rollouts().patch_status(&self.rollout, &PatchParams::default(), &Patch::Merge(status)).await?;
        }
        Ok(())
    }

    /// Changes the image, starting an update.
    pub async fn when_image(&self, image: &str) -> anyhow::Result<()> {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
        let changed = self.rollouts().patch(&self.rollout, &PatchParams::default(), &Patch::Merge(patch)).await?;
        self.observed(changed).await
    }

    /// Merge-patches the pod template (e.g. a node selector no node matches).
    pub async fn when_template(&self, template_patch: Value) -> anyhow::Result<()> {
        let changed = self
            .rollouts()
            .patch(&self.rollout, &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": template_patch}})))
            .await?;
        self.observed(changed).await
    }

    /// Promote, as `kubectl stepwise promote` does: decided on the Rollout as read, and decided
    /// again if the controller changed it before the patch landed (409 Conflict).
    pub async fn when_promote(&self) -> anyhow::Result<()> {
        for _ in 0..10 {
            match self.apply(operations::promote(&self.get().await?)).await {
                Err(e) if e.downcast_ref::<kube::Error>().is_some_and(is_conflict) => continue,
                result => return result,
            }
        }
        anyhow::bail!("promote conflicted 10 times in a row")
    }

    /// Promote full.
    pub async fn when_promote_full(&self) -> anyhow::Result<()> {
        self.apply(operations::promote_full(&self.get().await?)).await
    }

    /// Abort.
    pub async fn when_abort(&self) -> anyhow::Result<()> {
        self.apply(operations::abort()).await
    }

    /// Retry after an abort.
    pub async fn when_retry(&self) -> anyhow::Result<()> {
        self.apply(operations::retry()).await
    }

    /// Pause or resume by hand.
    pub async fn when_paused(&self, paused: bool) -> anyhow::Result<()> {
        self.apply(operations::set_paused(paused)).await
    }

    /// Scale through the scale subresource, as `kubectl scale` and an HPA do.
    pub async fn when_scaled(&self, replicas: i32) -> anyhow::Result<()> {
        let patch = json!({"spec": {"replicas": replicas}});
        self.rollouts().patch_scale(&self.rollout, &PatchParams::default(), &Patch::Merge(patch)).await?;
        self.observed(self.get().await?).await
    }

    /// Undo to the previous revision.
    pub async fn when_undo(&self) -> anyhow::Result<()> {
        let ro = self.get().await?;
        let rss: Vec<(i64, Value)> = self
            .replica_sets()
            .await?
            .iter()
            .map(|rs| {
                (
                    operations::revision_of(rs.annotations()),
                    serde_json::to_value(rs.spec.as_ref().and_then(|s| s.template.clone())).unwrap_or(Value::Null),
                )
            })
            .collect();
        if let Some(patch) = operations::undo(&ro, &rss, None).map_err(anyhow::Error::msg)? {
            let changed = self
                .rollouts()
                .patch(&self.rollout, &PatchParams::default(), &Patch::<Value>::Json(serde_json::from_value(patch)?))
                .await?;
            self.observed(changed).await?;
        }
        Ok(())
    }

    // ---- Then ----

    /// Waits until the Rollout's phase is `phase`.
    pub async fn then_phase(&self, phase: RolloutPhase, timeout: Duration) -> anyhow::Result<()> {
        self.then(&format!("phase {phase}"), timeout, |ro| ro.status.as_ref().and_then(|s| s.phase) == Some(phase))
            .await
    }

    /// Waits until `check` holds for the Rollout; the error shows its status and the controller log.
    pub async fn then(&self, what: &str, timeout: Duration, check: impl Fn(&Rollout) -> bool) -> anyhow::Result<()> {
        let api = self.rollouts();
        let name = self.rollout.clone();
        let result = eventually(what, timeout, || {
            let api = api.clone();
            let name = name.clone();
            let ok = &check;
            async move { Ok(ok(&api.get(&name).await?)) }
        })
        .await;
        if let Err(e) = result {
            let status = self
                .get()
                .await
                .ok()
                .and_then(|r| r.status)
                .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default());
            let logs: Vec<String> = self.controllers.iter().map(|c| c.log_tail()).collect();
            bail!("{e}\nstatus: {}\ncontroller log:\n{}", status.unwrap_or_default(), logs.join("\n---\n"));
        }
        Ok(())
    }

    /// Waits until the Rollout is at step `index` and paused there.
    pub async fn then_paused_at_step(&self, index: i32, timeout: Duration) -> anyhow::Result<()> {
        self.then(&format!("paused at step {index}"), timeout, |ro| {
            let st = ro.status.clone().unwrap_or_default();
            st.current_step_index == Some(index) && st.phase == Some(RolloutPhase::Paused)
        })
        .await
    }

    /// The Rollout's ReplicaSets.
    pub async fn replica_sets(&self) -> anyhow::Result<Vec<ReplicaSet>> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.ns);
        Ok(api.list(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL)).await?.items)
    }

    /// Ready pods (not terminating) of a pod template hash.
    pub async fn ready_pods(&self, hash: &str) -> anyhow::Result<i32> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let pods = api.list(&ListParams::default().labels(&format!("{POD_TEMPLATE_HASH_LABEL}={hash}"))).await?.items;
        Ok(pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count() as i32)
    }

    /// Pods (any state, not terminating) of a pod template hash.
    pub async fn pods(&self, hash: &str) -> anyhow::Result<i32> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let pods = api.list(&ListParams::default().labels(&format!("{POD_TEMPLATE_HASH_LABEL}={hash}"))).await?.items;
        Ok(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).count() as i32)
    }

    /// Waits until the new version has `canary` ready pods and the stable version `stable`, with
    /// no other pods.
    pub async fn then_pods(&self, canary: i32, stable: i32, timeout: Duration) -> anyhow::Result<()> {
        let what = format!("{canary} canary and {stable} stable pods");
        let result = eventually(&what, timeout, || async {
            let ro = self.get().await?;
            let st = ro.status.unwrap_or_default();
            let new = st.current_pod_hash.unwrap_or_default();
            let old = st.stable_rs.unwrap_or_default();
            let mut total = 0;
            for rs in self.replica_sets().await? {
                total +=
                    self.pods(rs.labels().get(POD_TEMPLATE_HASH_LABEL).map(String::as_str).unwrap_or_default()).await?;
            }
            let c = self.ready_pods(&new).await?;
            let s = if old == new { 0 } else { self.ready_pods(&old).await? };
            Ok(c == canary && s == stable && total == canary + stable)
        })
        .await;
        if let Err(e) = result {
            let ro = self.get().await?;
            let st = ro.status.clone().unwrap_or_default();
            let mut counts = Vec::new();
            for rs in self.replica_sets().await? {
                let h = rs.labels().get(POD_TEMPLATE_HASH_LABEL).cloned().unwrap_or_default();
                counts.push(format!(
                    "{h}: spec {:?} ready {}",
                    rs.spec.as_ref().and_then(|s| s.replicas),
                    self.ready_pods(&h).await?
                ));
            }
            bail!(
                "{e}: new={:?} stable={:?} message={:?} replicasets={counts:?}",
                st.current_pod_hash,
                st.stable_rs,
                st.message
            );
        }
        Ok(())
    }

    /// The pod template hash a Service selects.
    pub async fn service_hash(&self, name: &str) -> anyhow::Result<Option<String>> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let svc = api.get(name).await?;
        Ok(svc.spec.and_then(|s| s.selector).and_then(|s| s.get(POD_TEMPLATE_HASH_LABEL).cloned()))
    }

    /// Reasons and messages of the Events recorded on the Rollout, oldest first.
    pub async fn events(&self) -> anyhow::Result<Vec<(String, String)>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut events = api.list(&ListParams::default()).await?.items;
        events.retain(|e| e.involved_object.kind.as_deref() == Some("Rollout"));
        events.sort_by_key(|e| {
            e.event_time.as_ref().map(|t| t.0).or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        Ok(events.into_iter().map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default())).collect())
    }

    /// Stops the controllers and deletes the namespace.
    pub async fn cleanup(mut self) -> anyhow::Result<()> {
        self.controllers.clear();
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let _ = nss.delete(&self.ns, &DeleteParams::background()).await;
        Ok(())
    }
}

/// Whether the API server refused a write because the object changed since it was read.
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

/// Seconds as a Duration, for readable timeouts.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A JSON document served over HTTP on 127.0.0.1 (what a web metric reads), changed by the test
/// through the handle; returns its URL.
pub async fn serve_json(document: std::sync::Arc<std::sync::Mutex<Value>>) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = stream.read(&mut buf).await;
            let body = document.lock().map(|d| d.to_string()).unwrap_or_default();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    Ok(url)
}
