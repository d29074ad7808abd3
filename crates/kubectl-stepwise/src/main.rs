//! `kubectl stepwise`: drive stepwise Rollouts from the command line. The decisions and the
//! rendering live in the library (`decide`, `render`); this file reads, patches and prints.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, ResourceExt};
use kubectl_stepwise::decide::{self, Decision, Verdict};
use kubectl_stepwise::{RolloutTree, convert, lint, render};
use serde_json::Value;
use stepwise_api::operations::Patches;
use stepwise_api::{AnalysisRun, POD_TEMPLATE_HASH_LABEL, Rollout};

mod server;

/// Drive stepwise Rollouts: see them, promote, abort, retry, undo.
#[derive(Parser)]
#[command(name = "kubectl stepwise", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// kubectl's connection flags, accepted before or after the command.
#[derive(Args, Clone)]
struct Global {
    /// Path of the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Show a Rollout as a tree: revisions, ReplicaSets, pods, AnalysisRuns.
    Get {
        #[command(subcommand)]
        what: GetWhat,
    },
    /// List Rollouts, one line each.
    List {
        #[command(subcommand)]
        what: ListWhat,
    },
    /// For CI: exit 0 when Healthy, 1 when Degraded or aborted, 2 when not there at the timeout
    /// (at once without --watch or --timeout). The reason is on the last line.
    Status {
        name: String,
        /// Wait until the Rollout is Healthy, Degraded or aborted.
        #[arg(short, long)]
        watch: bool,
        /// Give up after this long (e.g. 90s, 5m); implies --watch.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// End the current pause (or skip the current step); --full skips every remaining step.
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
    },
    /// Send traffic and pods back to the stable version.
    Abort { name: String },
    /// Start an aborted update again from step 1.
    Retry { name: String },
    /// Pause by hand: nothing scales and no step advances.
    Pause { name: String },
    /// Resume a Rollout paused by hand.
    Resume { name: String },
    /// Replace every pod, one at a time.
    Restart { name: String },
    /// The revisions, oldest first: their images, change-cause and when each was the stable
    /// version, as `kubectl rollout history` lists a Deployment's.
    History {
        name: String,
        /// Print that revision's pod template.
        #[arg(long)]
        revision: Option<i64>,
        /// Output format for scripts.
        #[arg(short, long, value_enum)]
        output: Option<Output>,
    },
    /// Put back the pod template of an earlier revision (default: the one before the current).
    Undo {
        name: String,
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Change a Rollout.
    Set {
        #[command(subcommand)]
        what: SetWhat,
    },
    /// The plugin's version, the cluster's and the controller's.
    Version {
        /// The controller's leader-election Lease, NAMESPACE/NAME (its --lease-namespace and
        /// --lease-name).
        #[arg(long, default_value = "default/stepwise-controller")]
        controller_lease: String,
    },
    /// Check Rollout and analysis manifests offline: the CRD's schema and rules, then the
    /// controller's own checks. Exit 1 when anything is wrong.
    Lint {
        /// The manifest file (multi-document YAML), or - for stdin.
        #[arg(short = 'f', long = "filename")]
        filename: String,
    },
    /// Turn Argo Rollouts manifests into stepwise's (stdout), report each change and each field
    /// stepwise lacks (stderr), then lint the result. Other documents pass through unchanged.
    Convert {
        /// The manifest file (multi-document YAML), or - for stdin.
        #[arg(short = 'f', long = "filename")]
        filename: String,
    },
    /// Work with notifications.
    Notify {
        #[command(subcommand)]
        what: NotifyWhat,
    },
    /// Work with plugins.
    Plugin {
        #[command(subcommand)]
        what: PluginWhat,
    },
    /// A web dashboard of every Rollout, live: what needs a person, why each waits, its traffic,
    /// revisions, analysis and Events, with buttons to act. Read-only unless --actions. Watches
    /// every namespace unless -n is given.
    Dashboard {
        /// Where to listen. With --auth=kubeconfig only a loopback address is allowed.
        #[arg(long, default_value = "127.0.0.1:3100")]
        address: std::net::SocketAddr,
        /// Serve the action buttons (promote, abort, ...), each checked against Kubernetes RBAC.
        #[arg(long)]
        actions: bool,
        /// kubeconfig: the dashboard acts as you, for you alone. token: people sign in with a
        /// bearer token the API server accepts and act as themselves (impersonation); how it runs
        /// in a cluster.
        #[arg(long, value_enum, default_value = "kubeconfig")]
        auth: server::auth::Mode,
    },
    /// A shell completion script for `kubectl-stepwise` on stdout (for `kubectl stepwise`, link
    /// the binary as kubectl_complete-stepwise on PATH).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum GetWhat {
    /// One Rollout.
    #[command(visible_aliases = ["rollouts", "ro"])]
    Rollout {
        name: String,
        /// Output format for scripts.
        #[arg(short, long, value_enum)]
        output: Option<Output>,
        /// Redraw whenever the Rollout, its ReplicaSets or pods change.
        #[arg(short, long)]
        watch: bool,
    },
}

#[derive(Subcommand)]
enum ListWhat {
    /// Rollouts of the namespace (or of all with -A).
    #[command(visible_aliases = ["rollout", "ro"])]
    Rollouts {
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

#[derive(Subcommand)]
enum SetWhat {
    /// Set a container's image, which starts an update.
    Image {
        name: String,
        /// CONTAINER=IMAGE
        assignment: String,
    },
}

#[derive(Subcommand)]
enum NotifyWhat {
    /// Render a trigger's templates for a Rollout and send them to a service once, with the
    /// controller's configuration: what its subscribers would get. Prints each message.
    Test {
        /// The service, as subscriptions name it (`slack`, or a webhook's name).
        service: String,
        /// The Rollout of the -n namespace the message is about.
        #[arg(long)]
        rollout: String,
        /// The trigger whose templates are sent.
        #[arg(long, default_value = "on-rollout-updated")]
        trigger: String,
        /// The recipient (a Slack channel).
        #[arg(long, default_value = "")]
        recipient: String,
        /// The controller's notifications ConfigMap, NAMESPACE/NAME (its namespace is the
        /// controller's --lease-namespace).
        #[arg(long, default_value = "default/stepwise-notification-configmap")]
        config: String,
        /// The Secret its `$key`s name, in the ConfigMap's namespace.
        #[arg(long, default_value = "stepwise-notification-secret")]
        secret: String,
    },
}

#[derive(Subcommand)]
enum PluginWhat {
    /// Check that the router plugin at URL speaks stepwise.dev/plugins/v1 as the controller
    /// expects: info, set-traffic at weights 0, 30, 100 and back to 0, header and mirror routes
    /// when it says it makes them, a repeated call, and refusals of invalid requests. One line
    /// per check; exit 1 when any fails. It changes the plugin's router: point it at a test one.
    Check {
        /// The plugin's base URL, as given to the controller's --router-plugin NAME=URL.
        url: String,
        /// The plugin's configuration, as a Rollout writes it under trafficRouting.plugins.<name>
        /// (JSON).
        #[arg(long, default_value = "{}")]
        config: String,
        /// How long each call may take.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Json,
    Yaml,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    stepwise_api::duration::parse_go_duration(text).map_err(|e| e.to_string())
}

/// A connected client and where the command acts.
struct Cx {
    client: Client,
    namespace: String,
    server: String,
    context: String,
}

impl Cx {
    async fn connect(global: &Global) -> anyhow::Result<Self> {
        let options = KubeConfigOptions { context: global.context.clone(), ..Default::default() };
        let kubeconfig = match &global.kubeconfig {
            Some(path) => {
                Kubeconfig::read_from(path).with_context(|| format!("cannot read kubeconfig {}", path.display()))?
            }
            None => Kubeconfig::read().context("no kubeconfig: set KUBECONFIG or pass --kubeconfig")?,
        };
        let context = global.context.clone().or(kubeconfig.current_context.clone()).unwrap_or_default();
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("cannot use context {context:?} of the kubeconfig"))?;
        let namespace = global.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).context("cannot build a client from the kubeconfig")?;
        Ok(Cx { client, namespace, server, context })
    }

    fn rollouts(&self) -> Api<Rollout> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A kube error as something a person can act on.
    fn explain(&self, e: kube::Error, verb: &str, resource: &str, name: Option<&str>) -> anyhow::Error {
        let ns = &self.namespace;
        match e {
            kube::Error::Api(status) if status.code == 404 => {
                if status.message.contains("could not find the requested resource") {
                    anyhow!(
                        "the stepwise CRDs are not installed in this cluster ({resource}.stepwise.dev is not served): install them with `kubectl apply -f crds/`"
                    )
                } else {
                    match name {
                        Some(n) => anyhow!(
                            "Rollout {n:?} not found in namespace {ns:?} (`kubectl stepwise list rollouts -A` lists them all)"
                        ),
                        None => anyhow!("{}", status.message),
                    }
                }
            }
            kube::Error::Api(status) if status.code == 403 => anyhow!(
                "forbidden: you may not {verb} {resource} in namespace {ns:?} (ask for RBAC that grants it): {}",
                status.message
            ),
            kube::Error::Api(status) if status.code == 401 => {
                anyhow!(
                    "unauthorized: the server {} refused the credentials of context {:?}",
                    self.server,
                    self.context
                )
            }
            e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => anyhow!(
                "cannot reach the cluster at {} (context {:?}): {e}; is it running? check --kubeconfig and --context",
                self.server,
                self.context
            ),
            e => anyhow::Error::new(e).context(format!("{verb} {resource}")),
        }
    }

    async fn get(&self, name: &str) -> anyhow::Result<Rollout> {
        self.rollouts().get(name).await.map_err(|e| self.explain(e, "get", "rollouts", Some(name)))
    }

    /// The Rollout and what it owns.
    async fn tree(&self, name: &str) -> anyhow::Result<RolloutTree> {
        let rollout = self.get(name).await?;
        let uid = rollout.uid();
        let owned = |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
            refs.iter().any(|o| Some(&o.uid) == uid.as_ref())
        };
        let labelled = ListParams::default().labels(POD_TEMPLATE_HASH_LABEL);
        let rs_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let replica_sets: Vec<ReplicaSet> = rs_api
            .list(&labelled)
            .await
            .map_err(|e| self.explain(e, "list", "replicasets", None))?
            .items
            .into_iter()
            .filter(|rs| owned(rs.owner_references()))
            .collect();
        let rs_uids: Vec<Option<String>> = replica_sets.iter().map(|rs| rs.uid()).collect();
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods = pod_api
            .list(&labelled)
            .await
            .map_err(|e| self.explain(e, "list", "pods", None))?
            .items
            .into_iter()
            .filter(|p| p.owner_references().iter().any(|o| rs_uids.contains(&Some(o.uid.clone()))))
            .collect();
        let run_api: Api<AnalysisRun> = Api::namespaced(self.client.clone(), &self.namespace);
        let analysis_runs = run_api
            .list(&ListParams::default())
            .await
            .map_err(|e| self.explain(e, "list", "analysisruns", None))?
            .items
            .into_iter()
            .filter(|r| owned(r.owner_references()))
            .collect();
        Ok(RolloutTree { rollout, replica_sets, pods, analysis_runs })
    }

    async fn apply(&self, name: &str, patches: &Patches) -> Result<(), kube::Error> {
        if let Some(spec) = &patches.spec {
            self.rollouts().patch(name, &PatchParams::default(), &Patch::Merge(spec)).await?;
        }
        if let Some(status) = &patches.status {
            self.rollouts().patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await?;
        }
        Ok(())
    }

    /// Reads, decides and patches; on a 409 (the controller changed the Rollout after it was
    /// read) reads and decides again, so nothing is decided from a state the person never saw.
    async fn operate(&self, name: &str, decide: impl Fn(&Rollout) -> Result<Decision, String>) -> anyhow::Result<()> {
        for _ in 0..10 {
            let rollout = self.get(name).await?;
            let decision = decide(&rollout).map_err(|reason| anyhow!("{reason}"))?;
            match self.apply(name, &decision.patches).await {
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.explain(e, "patch", "rollouts", Some(name))),
                Ok(()) => {
                    println!("{}", decision.done);
                    return Ok(());
                }
            }
        }
        bail!("rollout {name:?} changed under every one of 10 attempts; try again")
    }

    async fn json_patch(&self, name: &str, patch: Value) -> anyhow::Result<()> {
        let patch = Patch::<Value>::Json(serde_json::from_value(patch)?);
        match self.rollouts().patch(name, &PatchParams::default(), &patch).await {
            Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("test") => {
                bail!("rollout {name:?} changed while the patch was made; try again")
            }
            result => result.map(drop).map_err(|e| self.explain(e, "patch", "rollouts", Some(name))),
        }
    }
}

fn colour_phase(text: String) -> String {
    if !std::io::stdout().is_terminal() || std::env::var_os("NO_COLOR").is_some() {
        return text;
    }
    text.lines()
        .map(|line| match line.strip_prefix("Phase:") {
            Some(rest) => {
                let code = match rest.trim() {
                    "Healthy" => "32",
                    "Degraded" => "31",
                    "Paused" => "33",
                    _ => "36",
                };
                format!("Phase:{}\x1b[{code}m{}\x1b[0m", &rest[..rest.len() - rest.trim_start().len()], rest.trim())
            }
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

async fn get_rollout(cx: &Cx, name: &str, output: Option<Output>, watch: bool) -> anyhow::Result<()> {
    let print = |t: &RolloutTree, redraw: bool| -> anyhow::Result<()> {
        match output {
            Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&render::summary(t))?),
            Some(Output::Yaml) => print!("{}", serde_yaml::to_string(&render::summary(t))?),
            None => {
                // Redraw in place only on a terminal; piped output gets one tree after another.
                if redraw && std::io::stdout().is_terminal() {
                    print!("\x1b[H\x1b[2J");
                } else if redraw {
                    println!();
                }
                print!("{}", colour_phase(render::tree(t, Timestamp::now())));
            }
        }
        Ok(())
    };
    let first = cx.tree(name).await?;
    print(&first, false)?;
    if !watch {
        return Ok(());
    }
    // Any change of the Rollout, a ReplicaSet, a pod or an AnalysisRun in the namespace wakes a
    // redraw; the tree is then read again, so what is drawn is consistent.
    let labelled = watcher::Config::default().labels(POD_TEMPLATE_HASH_LABEL);
    let rollout = watcher(cx.rollouts(), watcher::Config::default().fields(&format!("metadata.name={name}")))
        .default_backoff()
        .map_ok(drop)
        .boxed();
    let rs = watcher(Api::<ReplicaSet>::namespaced(cx.client.clone(), &cx.namespace), labelled.clone())
        .default_backoff()
        .map_ok(drop)
        .boxed();
    let pods = watcher(Api::<Pod>::namespaced(cx.client.clone(), &cx.namespace), labelled)
        .default_backoff()
        .map_ok(drop)
        .boxed();
    let runs = watcher(Api::<AnalysisRun>::namespaced(cx.client.clone(), &cx.namespace), watcher::Config::default())
        .default_backoff()
        .map_ok(drop)
        .boxed();
    let mut changes = futures::stream::select_all([rollout, rs, pods, runs]);
    let mut last = render::tree(&first, Timestamp::now());
    while let Some(change) = changes.next().await {
        if change.is_err() {
            continue;
        }
        // A burst of events (a scale-up touches many pods) gives one redraw.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), changes.next()).await {}
        let tree = cx.tree(name).await?;
        let text = render::tree(&tree, Timestamp::now());
        if text != last || output.is_some() {
            print(&tree, true)?;
            last = text;
        }
    }
    Ok(())
}

async fn status(cx: &Cx, name: &str, watch: bool, timeout: Option<Duration>) -> anyhow::Result<ExitCode> {
    let rollout = cx.get(name).await?;
    let mut verdict = decide::verdict(&rollout);
    if !watch && timeout.is_none() || !matches!(verdict, Verdict::InProgress(_)) {
        println!("{}", verdict.reason());
        return Ok(ExitCode::from(verdict.exit_code() as u8));
    }
    println!("{}", verdict.reason());
    let changes = kube::runtime::watcher::watch_object(cx.rollouts(), name);
    let wait = async {
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            match change {
                Ok(Some(ro)) => {
                    let next = decide::verdict(&ro);
                    if next != verdict {
                        println!("{}", next.reason());
                    }
                    verdict = next;
                    if !matches!(verdict, Verdict::InProgress(_)) {
                        return Ok(verdict.exit_code());
                    }
                }
                Ok(None) => bail!("Rollout {name:?} was deleted"),
                // The watcher starts again by itself; a passing error is not the rollout's state.
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        bail!("the watch of rollout {name:?} ended")
    };
    match timeout {
        None => Ok(ExitCode::from(wait.await? as u8)),
        Some(limit) => match tokio::time::timeout(limit, wait).await {
            Ok(code) => Ok(ExitCode::from(code? as u8)),
            Err(_) => {
                let last = decide::verdict(&cx.get(name).await?);
                println!("timed out after {}: {}", humantime(limit), last.reason());
                Ok(ExitCode::from(2))
            }
        },
    }
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

async fn undo(cx: &Cx, name: &str, to: Option<i64>) -> anyhow::Result<()> {
    let tree = cx.tree(name).await?;
    let revisions = decide::revision_templates(&tree.replica_sets);
    let (patch, done) = decide::undo(&tree.rollout, &revisions, to).map_err(|e| anyhow!("{e}"))?;
    cx.json_patch(name, patch).await?;
    println!("{done}");
    Ok(())
}

async fn history(cx: &Cx, name: &str, revision: Option<i64>, output: Option<Output>) -> anyhow::Result<()> {
    let tree = cx.tree(name).await?;
    let text = match (revision, output) {
        (None, None) => render::history(&tree),
        (Some(n), None) => render::revision_detail(&tree, n).map_err(|e| anyhow!("{e}"))?,
        (revision, Some(format)) => {
            let value = match revision {
                None => render::history_summary(&tree),
                Some(n) => render::revision_summary(&tree, n).map_err(|e| anyhow!("{e}"))?,
            };
            match format {
                Output::Json => format!("{}\n", serde_json::to_string_pretty(&value)?),
                Output::Yaml => serde_yaml::to_string(&value)?,
            }
        }
    };
    print!("{text}");
    Ok(())
}

async fn set_image(cx: &Cx, name: &str, assignment: &str) -> anyhow::Result<()> {
    let Some((container, image)) = assignment.split_once('=').filter(|(c, i)| !c.is_empty() && !i.is_empty()) else {
        bail!("expected CONTAINER=IMAGE, got {assignment:?}");
    };
    let rollout = cx.get(name).await?;
    let (patch, done) = decide::set_image(&rollout, container, image).map_err(|e| anyhow!("{e}"))?;
    cx.json_patch(name, patch).await?;
    println!("{done}");
    Ok(())
}

/// Reads a manifest file, or stdin for `-`; returns the name to show and the text.
fn read_manifest(filename: &str) -> anyhow::Result<(String, String)> {
    if filename == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("cannot read stdin")?;
        Ok(("<stdin>".into(), text))
    } else {
        let text = std::fs::read_to_string(filename).with_context(|| format!("cannot read {filename}"))?;
        Ok((filename.to_string(), text))
    }
}

fn lint(filename: &str) -> anyhow::Result<ExitCode> {
    let (name, text) = read_manifest(filename)?;
    let (report, problems) = lint::report(&name, &lint::lint(&text));
    print!("{report}");
    Ok(if problems { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn convert(filename: &str) -> anyhow::Result<ExitCode> {
    let (name, text) = read_manifest(filename)?;
    let converted = convert::convert(&text);
    print!("{}", converted.yaml);
    eprint!("{}", converted.report(&name));
    // The result is checked as `lint` would check it.
    let (report, problems) = lint::report(&format!("{name} (converted)"), &lint::lint(&converted.yaml));
    eprint!("{report}");
    Ok(if problems { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// What can be told of the controller from the cluster: its leader-election Lease, and the
/// version it publishes there (`stepwise.dev/controller-version`), if it does.
async fn controller_version(cx: &Cx, lease: &str) -> String {
    use k8s_openapi::api::coordination::v1::Lease;
    let Some((ns, name)) = lease.split_once('/') else {
        return format!("unknown (--controller-lease must be NAMESPACE/NAME, not {lease:?})");
    };
    let leases: Api<Lease> = Api::namespaced(cx.client.clone(), ns);
    match leases.get_opt(name).await {
        Ok(Some(object)) => {
            let spec = object.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.filter(|h| !h.is_empty());
            let renewed = spec
                .renew_time
                .map(|t| {
                    let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.0);
                    format!(", renewed {} ago", render::age(Some(&at), Timestamp::now()))
                })
                .unwrap_or_default();
            let version = object.annotations().get(decide::CONTROLLER_VERSION_ANNOTATION);
            match (version, holder) {
                (Some(v), Some(h)) => format!("{v} (leader {h}, Lease {lease}{renewed})"),
                (Some(v), None) => format!("{v} (Lease {lease} has no holder now)"),
                (None, Some(h)) => format!(
                    "unknown (the Lease {lease} is held by {h}{renewed}, but has no {} annotation: this controller does not publish its version)",
                    decide::CONTROLLER_VERSION_ANNOTATION
                ),
                (None, None) => format!("unknown (the Lease {lease} has no holder: no controller is leading)"),
            }
        }
        Ok(None) => format!(
            "unknown (no Lease {lease}: the controller runs without leader election, or with another --lease-name; see --controller-lease)"
        ),
        Err(e) => format!("unknown ({})", cx.explain(e, "get", "leases", None)),
    }
}

async fn version(global: &Global, controller_lease: &str) -> anyhow::Result<()> {
    println!(
        "client: kubectl-stepwise {} (API {}/{})",
        env!("CARGO_PKG_VERSION"),
        stepwise_api::GROUP,
        stepwise_api::VERSION
    );
    let cx = Cx::connect(global).await?;
    let server = cx.client.apiserver_version().await.map_err(|e| cx.explain(e, "get", "version", None))?;
    println!("server: Kubernetes {} at {}", server.git_version, cx.server);
    let crds = match cx.rollouts().list(&ListParams::default().limit(1)).await {
        Ok(_) => format!("installed ({}/{} served)", stepwise_api::GROUP, stepwise_api::VERSION),
        Err(e) => cx.explain(e, "list", "rollouts", None).to_string(),
    };
    println!("stepwise CRDs: {crds}");
    println!("controller: {}", controller_version(&cx, controller_lease).await);
    Ok(())
}

/// `plugin check`: runs the conformance checks against the plugin at `url`, printing a line per
/// check as it goes, so a plugin that hangs shows where.
async fn plugin_check(url: &str, config: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    use kubectl_stepwise::plugin_check::{self, Call, Verdict};
    use stepwise_traffic::plugin;

    let config: Value = serde_json::from_str(config).context("--config is not JSON")?;
    // Checked as the controller checks its --router-plugin flags.
    plugin::check_url(url).map_err(|e| anyhow!("{e}"))?;
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only means another thread installed a provider in between, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("kubectl-stepwise/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the HTTP client")?;
    let send = |call: Call| {
        let request = match call {
            Call::Info => client.get(plugin::endpoint(url, plugin::INFO_PATH)),
            Call::SetTraffic(body) => client
                .post(plugin::endpoint(url, plugin::SET_TRAFFIC_PATH))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        };
        async move {
            let call = async {
                let response = request.header(reqwest::header::ACCEPT, "application/json").send().await?;
                let status = response.status().as_u16();
                Ok::<_, reqwest::Error>((status, response.text().await?))
            };
            match tokio::time::timeout(timeout, call).await {
                Err(_) => Err(plugin::Problem::Timeout(timeout).to_string()),
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) if e.is_connect() => {
                    let mut cause: &(dyn std::error::Error + 'static) = &e;
                    while let Some(next) = cause.source() {
                        cause = next;
                    }
                    Err(plugin::Problem::Connect(cause.to_string()).to_string())
                }
                Ok(Err(e)) => Err(plugin::Problem::Transport(e.without_url().to_string()).to_string()),
            }
        }
    };
    println!("checking the router plugin at {url} ({})", plugin::PROTOCOL);
    let mut verdicts = Vec::new();
    let (verdict, info) = match send(Call::Info).await {
        Ok((status, body)) => plugin_check::judge_info(status, &body),
        Err(reason) => (Verdict::Fail(reason), None),
    };
    println!("{}", verdict.line("info"));
    verdicts.push(verdict);
    for check in plugin_check::checks(&config, info.as_ref()) {
        let verdict = match check.plan {
            Err(reason) => Verdict::Skip(reason),
            Ok((call, expect)) => match send(call).await {
                Ok((status, body)) => plugin_check::judge(expect, status, &body),
                Err(reason) => Verdict::Fail(reason),
            },
        };
        println!("{}", verdict.line(&check.name));
        verdicts.push(verdict);
    }
    println!("{}", plugin_check::summary(&verdicts));
    let failed = verdicts.iter().any(|v| matches!(v, Verdict::Fail(_)));
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version { controller_lease } => {
            version(&cli.global, &controller_lease).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Lint { filename } => return lint(&filename),
        Command::Plugin { what: PluginWhat::Check { url, config, timeout } } => {
            return plugin_check(&url, &config, timeout).await;
        }
        Command::Convert { filename } => return convert(&filename),
        Command::Dashboard { address, actions, auth } => {
            let config = dashboard_config(&cli.global).await?;
            let options = server::Options { address, mode: auth, actions, namespace: cli.global.namespace.clone() };
            server::serve(options, config).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "kubectl-stepwise", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let cx = Cx::connect(&cli.global).await?;
    match cli.command {
        Command::Get { what: GetWhat::Rollout { name, output, watch } } => {
            get_rollout(&cx, &name, output, watch).await?
        }
        Command::List { what: ListWhat::Rollouts { all_namespaces } } => {
            let api: Api<Rollout> = if all_namespaces { Api::all(cx.client.clone()) } else { cx.rollouts() };
            let mut items =
                api.list(&ListParams::default()).await.map_err(|e| cx.explain(e, "list", "rollouts", None))?.items;
            if items.is_empty() {
                let scope =
                    if all_namespaces { "any namespace".to_string() } else { format!("namespace {:?}", cx.namespace) };
                eprintln!("no Rollouts in {scope}");
                return Ok(ExitCode::SUCCESS);
            }
            items.sort_by_key(|r| (r.namespace(), r.name_any()));
            print!("{}", render::list(&items, all_namespaces, Timestamp::now()));
        }
        Command::Status { name, watch, timeout } => return status(&cx, &name, watch, timeout).await,
        Command::Promote { name, full } => cx.operate(&name, |ro| decide::promote(ro, full)).await?,
        Command::Abort { name } => cx.operate(&name, decide::abort).await?,
        Command::Retry { name } => cx.operate(&name, decide::retry).await?,
        Command::Pause { name } => cx.operate(&name, |ro| decide::set_paused(ro, true)).await?,
        Command::Resume { name } => cx.operate(&name, |ro| decide::set_paused(ro, false)).await?,
        Command::Restart { name } => {
            let at = Timestamp::from_second(Timestamp::now().as_second())?.to_string();
            cx.operate(&name, |ro| Ok(decide::restart(ro, &at))).await?
        }
        Command::History { name, revision, output } => history(&cx, &name, revision, output).await?,
        Command::Undo { name, to_revision } => undo(&cx, &name, to_revision).await?,
        Command::Set { what: SetWhat::Image { name, assignment } } => set_image(&cx, &name, &assignment).await?,
        Command::Notify { what: NotifyWhat::Test { service, rollout, trigger, recipient, config, secret } } => {
            let destination = Destination { service, recipient, config, secret };
            return notify_test(&cx, &destination, &rollout, &trigger).await;
        }
        Command::Version { .. }
        | Command::Completion { .. }
        | Command::Lint { .. }
        | Command::Convert { .. }
        | Command::Dashboard { .. }
        | Command::Plugin { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `notify test` sends, and the configuration it reads.
struct Destination {
    service: String,
    recipient: String,
    /// The ConfigMap, NAMESPACE/NAME.
    config: String,
    /// The Secret, in the ConfigMap's namespace.
    secret: String,
}

/// `notify test`: the trigger's messages for the Rollout, rendered with the controller's
/// configuration and sent once to the destination. Exit 1 when the configuration, a template or
/// the sending fails, with the reason (never a secret).
async fn notify_test(cx: &Cx, to: &Destination, rollout: &str, trigger: &str) -> anyhow::Result<ExitCode> {
    let Destination { service, recipient, config, secret } = to;
    let (config_ns, config_name) =
        config.split_once('/').with_context(|| format!("--config {config}: expected NAMESPACE/NAME"))?;
    let ro = cx.rollouts().get(rollout).await.map_err(|e| cx.explain(e, "get", "rollouts", Some(rollout)))?;
    let data = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(cx.client.clone(), config_ns)
        .get(config_name)
        .await
        .with_context(|| format!("cannot read ConfigMap {config}"))?
        .data
        .unwrap_or_default();
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(cx.client.clone(), config_ns)
        .get_opt(secret)
        .await
        .with_context(|| format!("cannot read Secret {config_ns}/{secret}"))?;
    let secrets = secret.and_then(|s| s.data).unwrap_or_default();
    let secrets = secrets.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect();
    let config = stepwise_notify::Config::parse(&data, &secrets)?;
    let revision = ro.status.as_ref().and_then(|s| s.current_revision).unwrap_or(0);
    let key = format!("test/{revision}/{trigger}/{service}/{recipient}");
    let notification = stepwise_notify::Notification {
        trigger: trigger.to_string(),
        revision,
        step: ro.status.as_ref().and_then(|s| s.current_step_index),
        message: format!("a test of {trigger}, sent by kubectl stepwise notify test"),
        key: key.clone(),
        service: service.to_string(),
        recipient: recipient.to_string(),
    };
    let vars = stepwise_notify::template_vars(serde_json::to_value(&ro)?, &notification);
    let destination = config.service(service)?;
    let messages = config.render(trigger, service, &vars)?;
    for message in &messages {
        println!("template {}: {}", message.template, message.text);
        for (kind, section) in &message.fields {
            println!("  {kind}: {section}");
        }
        let idempotency_key = format!("{key}/{}", message.template);
        if let Err(e) = destination.send(message, recipient, None, &idempotency_key).await {
            println!("not sent: {e}");
            return Ok(ExitCode::from(1));
        }
    }
    println!("sent {} message(s) of {trigger} to {service}", messages.len());
    Ok(ExitCode::SUCCESS)
}

/// The dashboard's connection: the kubeconfig as for every command, or, in a Pod without one, the
/// Pod's ServiceAccount.
async fn dashboard_config(global: &Global) -> anyhow::Result<Config> {
    let options = KubeConfigOptions { context: global.context.clone(), ..Default::default() };
    let kubeconfig = match &global.kubeconfig {
        Some(path) => {
            Some(Kubeconfig::read_from(path).with_context(|| format!("cannot read kubeconfig {}", path.display()))?)
        }
        None => Kubeconfig::read().ok(),
    };
    match kubeconfig {
        Some(kubeconfig) => Ok(Config::from_custom_kubeconfig(kubeconfig, &options).await?),
        None => Config::incluster().context("no kubeconfig (set KUBECONFIG or pass --kubeconfig) and not in a Pod"),
    }
}

/// kubectl's completion of `kubectl stepwise …`: called as `kubectl_complete-stepwise WORDS…`
/// (a link to this binary) or `kubectl-stepwise __complete WORDS…`.
fn completion_request() -> Option<Vec<String>> {
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let called = std::path::Path::new(&argv0).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let rest: Vec<String> = args.collect();
    if called.starts_with(kubectl_stepwise::complete::HELPER_NAME) {
        return Some(rest);
    }
    match rest.split_first() {
        Some((first, words)) if first == "__complete" => Some(words.to_vec()),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(words) = completion_request() {
        use clap::CommandFactory;
        let mut command = Cli::command();
        command.build();
        print!("{}", kubectl_stepwise::complete::answer(&command, &words));
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
