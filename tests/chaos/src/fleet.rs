//! A fleet of Rollouts in one namespace, and what is watched of it while faults happen.
//!
//! A chaos scenario creates a [`Fleet`], waits for it on its first version, starts a [`Sampler`]
//! (once a second: the available pods of every Rollout against its `replicas - maxUnavailable`,
//! the canary step index, duplicate ReplicaSets), updates every Rollout at once, injects its fault
//! while [`Fleet::lagging`] names Rollouts that have not converged, and ends with the checks that
//! need the whole history: [`Fleet::replica_set_report`] and [`Fleet::step_report`] (the
//! controller's `RolloutStepCompleted` events, in order).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, Rollout, RolloutPhase};

/// How many API calls a fleet operation keeps in flight: enough to update 200 Rollouts "at once"
/// (within a second or two), few enough not to be throttled by the API server.
const IN_FLIGHT: usize = 16;

/// The image of the fleet's `version`-th release.
pub fn image(version: u32) -> String {
    format!("example.invalid/demo:{version}")
}

/// A canary Rollout without a router: 2 replicas, its own selector, the given `steps` (a YAML
/// flow sequence).
pub fn plain_canary(name: &str, image: &str, steps: &str) -> anyhow::Result<Rollout> {
    Ok(serde_yaml::from_str(&format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: {name}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: '{image}'}}]}}\n  strategy:\n    canary:\n      steps: {steps}\n"
    ))?)
}

/// An integer setting from the environment (`CHAOS_ROLLOUTS`, `CHAOS_SEED`, ...), or `default`
/// when it is unset; a value that is set but unreadable is an error, not silently the default,
/// since a run would then not be the one asked for.
pub fn env_or(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().with_context(|| format!("{name}={v:?} is not a non-negative integer")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(e).with_context(|| format!("read {name}")),
    }
}

/// A small seeded random number generator (SplitMix64): a run is reproduced from its printed
/// seed, with no dependency whose stream could change between versions.
#[derive(Clone, Debug)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator whose whole stream follows from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration between `low` and `high` (inclusive), to the millisecond.
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        let (lo, hi) = (low.as_millis() as u64, high.as_millis() as u64);
        let span = hi.saturating_sub(lo) + 1;
        Duration::from_millis(lo + self.next_u64() % span)
    }
}

/// A canary step of a fleet member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `setWeight`: without a router, the share of pods on the new version.
    SetWeight(i32),
    /// `pause` with a duration in seconds.
    Pause(u32),
}

/// How a fleet member rolls out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// A canary without a traffic router: pods approximate the weights, within the fenceposts.
    Canary {
        /// The steps.
        steps: Vec<Step>,
        /// `maxSurge`, in pods.
        max_surge: i32,
        /// `maxUnavailable`, in pods.
        max_unavailable: i32,
    },
    /// Blue-green with `autoPromotionEnabled`: promoted once the preview is available.
    BlueGreen {
        /// `maxUnavailable`, in pods.
        max_unavailable: i32,
        /// `autoPromotionSeconds`: how long after the preview is available it is promoted.
        auto_promotion_seconds: i32,
        /// `scaleDownDelaySeconds` of the previous version after the switch.
        scale_down_delay_seconds: i32,
    },
}

/// One Rollout of the fleet and what it promises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The Rollout's name; also its pods' `app` label and the prefix of its Services.
    pub name: String,
    /// spec.replicas.
    pub replicas: i32,
    /// Its strategy.
    pub strategy: Strategy,
}

impl Member {
    /// The `i`-th member of a mixed fleet. Five shapes in turn, so that every fleet of five or
    /// more has each: canaries that surge and ones that must make room first (`maxSurge: 0`),
    /// short and long step lists, and blue-green of two and three pods, promoted at once or after
    /// a delay. The longer pauses and the promotion delay are there so that kills a few seconds
    /// apart land inside timers, whose start only the status remembers.
    pub fn mixed(i: usize) -> Self {
        let name = format!("r{i:03}");
        let halves = vec![Step::SetWeight(50), Step::Pause(2), Step::SetWeight(100)];
        let thirds =
            vec![Step::SetWeight(33), Step::Pause(10), Step::SetWeight(66), Step::Pause(20), Step::SetWeight(100)];
        let (replicas, strategy) = match i % 5 {
            0 => (2, Strategy::Canary { steps: halves, max_surge: 1, max_unavailable: 0 }),
            1 => (3, Strategy::Canary { steps: thirds, max_surge: 1, max_unavailable: 1 }),
            2 => {
                (2, Strategy::BlueGreen { max_unavailable: 0, auto_promotion_seconds: 0, scale_down_delay_seconds: 2 })
            }
            3 => (3, Strategy::Canary { steps: halves, max_surge: 0, max_unavailable: 1 }),
            _ => {
                (3, Strategy::BlueGreen { max_unavailable: 0, auto_promotion_seconds: 15, scale_down_delay_seconds: 2 })
            }
        };
        Member { name, replicas, strategy }
    }

    /// Its shape in words, without its name: members of one shape share their promises.
    pub fn shape(&self) -> String {
        match &self.strategy {
            Strategy::Canary { steps, max_surge, max_unavailable } => format!(
                "canary {} steps, replicas {}, maxSurge {max_surge}, maxUnavailable {max_unavailable}",
                steps.len(),
                self.replicas
            ),
            Strategy::BlueGreen { max_unavailable, auto_promotion_seconds, .. } => format!(
                "blue-green autoPromotionSeconds {auto_promotion_seconds}, replicas {}, maxUnavailable {max_unavailable}",
                self.replicas
            ),
        }
    }

    /// The number of canary steps (0 for blue-green).
    pub fn steps(&self) -> usize {
        match &self.strategy {
            Strategy::Canary { steps, .. } => steps.len(),
            Strategy::BlueGreen { .. } => 0,
        }
    }

    /// Its declared `maxUnavailable`.
    pub fn max_unavailable(&self) -> i32 {
        match self.strategy {
            Strategy::Canary { max_unavailable, .. } | Strategy::BlueGreen { max_unavailable, .. } => max_unavailable,
        }
    }

    /// The fewest available pods it may ever have during an update: `replicas - maxUnavailable`.
    pub fn min_available(&self) -> i32 {
        self.replicas - self.max_unavailable()
    }

    /// The blue-green Services it names, (active, preview); none for a canary.
    pub fn services(&self) -> Option<(String, String)> {
        matches!(self.strategy, Strategy::BlueGreen { .. })
            .then(|| (format!("{}-active", self.name), format!("{}-preview", self.name)))
    }

    /// The Rollout running `image`.
    pub fn rollout(&self, image: &str) -> anyhow::Result<Rollout> {
        let strategy = match &self.strategy {
            Strategy::Canary { steps, max_surge, max_unavailable } => {
                let steps: Vec<Value> = steps
                    .iter()
                    .map(|s| match s {
                        Step::SetWeight(w) => json!({"setWeight": w}),
                        Step::Pause(secs) => json!({"pause": {"duration": format!("{secs}s")}}),
                    })
                    .collect();
                json!({"canary": {"maxSurge": max_surge, "maxUnavailable": max_unavailable, "steps": steps}})
            }
            Strategy::BlueGreen { max_unavailable, auto_promotion_seconds, scale_down_delay_seconds } => {
                let (active, preview) = self.services().expect("a blue-green member has Services");
                json!({"blueGreen": {
                    "activeService": active,
                    "previewService": preview,
                    "autoPromotionEnabled": true,
                    "autoPromotionSeconds": auto_promotion_seconds,
                    "scaleDownDelaySeconds": scale_down_delay_seconds,
                    "maxUnavailable": max_unavailable,
                }})
            }
        };
        let rollout = json!({
            "apiVersion": "stepwise.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": self.name},
            "spec": {
                "replicas": self.replicas,
                // A fleet slowed down by its faults on a busy machine is not what a chaos run
                // tests: the deadline stays far out of the way.
                "progressDeadlineSeconds": 3600,
                "selector": {"matchLabels": {"app": self.name}},
                "template": {
                    "metadata": {"labels": {"app": self.name}},
                    "spec": {"containers": [{"name": "app", "image": image}]},
                },
                "strategy": strategy,
            },
        });
        Ok(serde_json::from_value(rollout)?)
    }
}

/// A fleet of Rollouts in one namespace.
#[derive(Clone)]
pub struct Fleet {
    /// Client of the local control plane.
    pub client: Client,
    /// The namespace the fleet lives in.
    pub namespace: String,
    /// Its members, in creation order.
    pub members: Vec<Member>,
}

/// The pod template hash each Rollout was stable on before an update, by name: "on the new
/// version" means on another one.
pub type Versions = BTreeMap<String, String>;

impl Fleet {
    /// `n` members of mixed shapes ([`Member::mixed`]) in `namespace`; nothing is created yet.
    pub fn mixed(client: Client, namespace: &str, n: usize) -> Self {
        Fleet { client, namespace: namespace.to_string(), members: (0..n).map(Member::mixed).collect() }
    }

    fn rollout_api(&self) -> Api<Rollout> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Creates the Services and the Rollouts, all running `image`.
    pub async fn create(&self, image: &str) -> anyhow::Result<()> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let wanted: Vec<String> = self.members.iter().filter_map(Member::services).flat_map(|(a, p)| [a, p]).collect();
        futures::stream::iter(wanted)
            .map(|name| {
                let services = services.clone();
                async move {
                    let app = name.rsplit_once('-').map(|(app, _)| app.to_string()).unwrap_or_default();
                    let svc = json!({"metadata": {"name": name}, "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}});
                    services
                        .create(&PostParams::default(), &serde_json::from_value(svc)?)
                        .await
                        .with_context(|| format!("create Service {name}"))?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        let api = self.rollout_api();
        futures::stream::iter(&self.members)
            .map(|m| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &m.rollout(image)?)
                        .await
                        .with_context(|| format!("create Rollout {}", m.name))?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Changes every Rollout's image to `image`, as close to at once as the API server allows.
    pub async fn set_image(&self, image: &str) -> anyhow::Result<()> {
        let api = self.rollout_api();
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
        futures::stream::iter(&self.members)
            .map(|m| {
                let (api, patch) = (api.clone(), patch.clone());
                async move {
                    api.patch(&m.name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .with_context(|| format!("update Rollout {}", m.name))?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// The fleet's Rollouts as they are now.
    pub async fn rollouts(&self) -> anyhow::Result<Vec<Rollout>> {
        Ok(self.rollout_api().list(&ListParams::default()).await?.items)
    }

    /// The ReplicaSets stepwise made in the namespace (those with a pod template hash label).
    pub async fn replica_sets(&self) -> anyhow::Result<Vec<ReplicaSet>> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api.list(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL)).await?.items)
    }

    /// The stable pod template hash of every Rollout, once all are Healthy; fails naming the
    /// ones that are not within `timeout`.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<Versions> {
        let start = Instant::now();
        loop {
            let rollouts = self.rollouts().await?;
            let lagging = self.lagging(&rollouts, &Versions::new());
            if lagging.is_empty() {
                return Ok(rollouts
                    .iter()
                    .map(|r| (r.name_any(), r.status.as_ref().and_then(|s| s.stable_rs.clone()).unwrap_or_default()))
                    .collect());
            }
            if start.elapsed() > timeout {
                anyhow::bail!("not Healthy after {timeout:?}: {}", describe(&rollouts, &lagging));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The members that have not converged: not Healthy with every pod on one version that is
    /// not the one in `before` (any version when `before` does not name the Rollout), for the
    /// Rollout's latest spec.
    pub fn lagging(&self, rollouts: &[Rollout], before: &Versions) -> Vec<String> {
        let by_name: BTreeMap<String, &Rollout> = rollouts.iter().map(|r| (r.name_any(), r)).collect();
        self.members
            .iter()
            .filter(|m| {
                let Some(ro) = by_name.get(&m.name) else { return true };
                let st = ro.status.clone().unwrap_or_default();
                let converged = st.observed_generation.is_some()
                    && st.observed_generation == ro.metadata.generation
                    && st.phase == Some(RolloutPhase::Healthy)
                    && st.current_pod_hash.is_some()
                    && st.stable_rs == st.current_pod_hash
                    && before.get(&m.name) != st.current_pod_hash.as_ref()
                    && st.updated_replicas == Some(m.replicas)
                    && st.available_replicas.unwrap_or(0) >= m.replicas;
                !converged
            })
            .map(|m| m.name.clone())
            .collect()
    }

    /// Waits until no Rollout of the fleet has a notification pending in its outbox.
    pub async fn wait_notifications_sent(&self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let pending: Vec<String> = self
                .rollouts()
                .await?
                .iter()
                .filter_map(|r| {
                    let outbox = r.status.as_ref()?.notifications.as_ref()?;
                    (!outbox.pending.is_empty()).then(|| format!("{} ({} pending)", r.name_any(), outbox.pending.len()))
                })
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                anyhow::bail!("notifications still pending {timeout:?} after converging: {}", pending.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until every Rollout keeps pods of its current version only (blue-green's previous
    /// version goes after its scale-down delay), all of them available.
    pub async fn wait_old_versions_gone(&self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let rollouts = self.rollouts().await?;
            let current: BTreeMap<String, String> = rollouts
                .iter()
                .map(|r| (r.name_any(), r.status.as_ref().and_then(|s| s.current_pod_hash.clone()).unwrap_or_default()))
                .collect();
            let mut left = Vec::new();
            for rs in self.replica_sets().await? {
                let Some(owner) = owner(&rs) else { continue };
                let Some(member) = self.member(&owner) else { continue };
                let is_current = current.get(&owner) == rs.labels().get(POD_TEMPLATE_HASH_LABEL);
                let spec = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                let st = rs.status.clone().unwrap_or_default();
                let done = if is_current {
                    spec == member.replicas && st.available_replicas == Some(member.replicas)
                } else {
                    spec == 0 && st.replicas == 0
                };
                if !done {
                    left.push(format!(
                        "{} (spec {spec}, pods {}, available {:?})",
                        rs.name_any(),
                        st.replicas,
                        st.available_replicas
                    ));
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                anyhow::bail!("after {timeout:?}, ReplicaSets still not at their final size: {left:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The ReplicaSets of every Rollout against the number of pod templates it was given
    /// (`templates`): one ReplicaSet per pod template hash, as many as templates and never more
    /// than the Rollout's revision, each with its own revision.
    pub async fn replica_set_report(&self, templates: usize) -> anyhow::Result<ReplicaSetReport> {
        let rollouts = self.rollouts().await?;
        let revision: BTreeMap<String, i64> = rollouts
            .iter()
            .map(|r| (r.name_any(), r.status.as_ref().and_then(|s| s.current_revision).unwrap_or(0)))
            .collect();
        let replica_sets = self.replica_sets().await?;
        let mut by_owner: BTreeMap<String, Vec<&ReplicaSet>> = BTreeMap::new();
        let mut problems = Vec::new();
        for rs in &replica_sets {
            match owner(rs) {
                Some(o) => by_owner.entry(o).or_default().push(rs),
                None => problems.push(format!("{} is owned by no Rollout", rs.name_any())),
            }
        }
        for m in &self.members {
            let owned = by_owner.remove(&m.name).unwrap_or_default();
            let hashes: BTreeSet<&str> =
                owned.iter().filter_map(|rs| rs.labels().get(POD_TEMPLATE_HASH_LABEL).map(String::as_str)).collect();
            let revisions: BTreeSet<&str> =
                owned.iter().filter_map(|rs| rs.annotations().get(REVISION_ANNOTATION).map(String::as_str)).collect();
            let names: Vec<String> = owned.iter().map(|rs| rs.name_any()).collect();
            let rev = revision.get(&m.name).copied().unwrap_or(0);
            if hashes.len() != owned.len() {
                problems.push(format!("{}: duplicate ReplicaSet for one pod template hash: {names:?}", m.name));
            }
            if revisions.len() != owned.len() {
                problems.push(format!("{}: two ReplicaSets share a revision: {names:?}", m.name));
            }
            if owned.len() != templates {
                problems.push(format!(
                    "{}: {} ReplicaSets for {templates} pod templates: {names:?}",
                    m.name,
                    owned.len()
                ));
            }
            if owned.len() as i64 > rev {
                problems.push(format!("{}: {} ReplicaSets but revision {rev}: {names:?}", m.name, owned.len()));
            }
        }
        for (o, rss) in by_owner {
            problems.push(format!("{} ReplicaSets owned by {o}, which is not in the fleet", rss.len()));
        }
        Ok(ReplicaSetReport { total: replica_sets.len(), problems })
    }

    /// Every canary member's step history from the controller's events since `since` (names of
    /// Events that existed before, from [`Fleet::event_names`]): each step completed, in order.
    /// A step completed twice in a row is allowed, since a controller killed after recording an
    /// event but before writing the status records it again; a step missing, a step after a
    /// later one, or steps skipped (`SkipSteps`, `StepsChanged`) are problems.
    pub async fn step_report(&self, since: &BTreeSet<String>) -> anyhow::Result<StepReport> {
        let uids: BTreeMap<String, String> =
            self.rollouts().await?.iter().map(|r| (r.uid().unwrap_or_default(), r.name_any())).collect();
        let mut events = self.rollout_events().await?;
        events.retain(|e| !since.contains(&e.name_any()));
        events.sort_by_key(|e| {
            e.event_time.as_ref().map(|t| t.0).or(e.first_timestamp.as_ref().map(|t| t.0)).or(e
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0))
        });
        let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut problems = Vec::new();
        let mut repeated = 0;
        let mut completions = 0;
        for e in &events {
            let Some(name) = e.involved_object.uid.as_ref().and_then(|u| uids.get(u)) else { continue };
            let reason = e.reason.as_deref().unwrap_or_default();
            let message = e.message.as_deref().unwrap_or_default();
            match reason {
                "SkipSteps" | "StepsChanged" => problems.push(format!("{name}: {reason}: {message}")),
                "RolloutStepCompleted" => match completed_step(message) {
                    Some((step, _)) => {
                        completions += 1;
                        seen.entry(name.clone()).or_default().push(step)
                    }
                    None => problems.push(format!("{name}: unreadable step event {message:?}")),
                },
                _ => {}
            }
        }
        let mut canaries = 0;
        for m in self.members.iter().filter(|m| m.steps() > 0) {
            canaries += 1;
            let history = seen.remove(&m.name).unwrap_or_default();
            let mut distinct = history.clone();
            distinct.dedup();
            repeated += history.len() - distinct.len();
            let expected: Vec<usize> = (1..=m.steps()).collect();
            if distinct != expected {
                problems.push(format!("{}: steps completed in the order {history:?}, expected {expected:?}", m.name));
            }
        }
        for (name, history) in seen {
            problems.push(format!("{name} has no steps but completed {history:?}"));
        }
        Ok(StepReport { canaries, completions, repeated, problems })
    }

    /// The names of the Events recorded on the fleet's Rollouts so far, so that a later
    /// [`Fleet::step_report`] reads only what an update recorded.
    pub async fn event_names(&self) -> anyhow::Result<BTreeSet<String>> {
        Ok(self.rollout_events().await?.iter().map(|e| e.name_any()).collect())
    }

    async fn rollout_events(&self) -> anyhow::Result<Vec<Event>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api.list(&ListParams::default().fields("involvedObject.kind=Rollout")).await?.items)
    }
}

/// The step of a `RolloutStepCompleted` message ("Rollout step 2/3 completed (...)"), and the
/// number of steps.
pub fn completed_step(message: &str) -> Option<(usize, usize)> {
    let rest = message.strip_prefix("Rollout step ")?;
    let (step, rest) = rest.split_once('/')?;
    let (of, _) = rest.split_once(" completed")?;
    Some((step.parse().ok()?, of.parse().ok()?))
}

/// The Rollout that controls a ReplicaSet.
fn owner(rs: &ReplicaSet) -> Option<String> {
    rs.owner_references().iter().find(|o| o.kind == "Rollout" && o.controller == Some(true)).map(|o| o.name.clone())
}

/// The status of the named Rollouts (the first ten), for a failure message.
pub fn describe(rollouts: &[Rollout], names: &[String]) -> String {
    let mut out = format!("{} Rollouts:", names.len());
    for name in names.iter().take(10) {
        let st = rollouts.iter().find(|r| &r.name_any() == name).and_then(|r| r.status.clone()).unwrap_or_default();
        out.push_str(&format!(
            "\n  {name}: phase {:?}, step {:?}, stable {:?}, current {:?}, updated {:?}, available {:?}, message {:?}",
            st.phase,
            st.current_step_index,
            st.stable_rs,
            st.current_pod_hash,
            st.updated_replicas,
            st.available_replicas,
            st.message
        ));
    }
    out
}

/// What [`Fleet::replica_set_report`] found.
#[derive(Clone, Debug, Default)]
pub struct ReplicaSetReport {
    /// ReplicaSets in the namespace.
    pub total: usize,
    /// Each broken promise, in words; empty when there is none.
    pub problems: Vec<String>,
}

/// What [`Fleet::step_report`] found.
#[derive(Clone, Debug, Default)]
pub struct StepReport {
    /// Canary Rollouts checked.
    pub canaries: usize,
    /// `RolloutStepCompleted` events read.
    pub completions: usize,
    /// Step events recorded again for a step already recorded (after a crash between the event
    /// and the status write): allowed, counted to show that kills landed there.
    pub repeated: usize,
    /// Each step missing, out of order or skipped, in words; empty when there is none.
    pub problems: Vec<String>,
}

/// What a [`Sampler`] saw.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// Samples taken.
    pub taken: u64,
    /// Samples lost because the API server did not answer.
    pub errors: u64,
    /// The smallest `available - (replicas - maxUnavailable)` seen over every Rollout and sample;
    /// below zero is a violation.
    pub min_margin: Option<i32>,
    /// Where and when the smallest margin was first seen.
    pub min_margin_at: String,
    /// The fewest available pods seen of any member of a shape ([`Member::shape`]), with the
    /// shape's floor `replicas - maxUnavailable`.
    pub min_available_by_shape: BTreeMap<String, (i32, i32)>,
    /// (Rollout, sample) pairs with fewer available pods than `replicas - maxUnavailable`.
    pub availability_violations: u64,
    /// Rollouts seen with two ReplicaSets of one pod template hash.
    pub duplicates: BTreeSet<String>,
    /// The largest step the status moved by between two samples (steps done faster than a
    /// sample are not a skip: the events tell).
    pub max_step_jump: i32,
    /// Times a canary's step index went back on the same version.
    pub step_regressions: u64,
    /// The first violations of each kind, in words.
    pub details: Vec<String>,
}

impl Samples {
    fn note(&mut self, detail: String) {
        if self.details.len() < 20 {
            self.details.push(detail);
        }
    }
}

/// Samples a fleet once a second in the background until stopped.
pub struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Samples>,
}

impl Sampler {
    /// Starts sampling `fleet`; `before` names each Rollout's version before the update, so
    /// that step indices are followed on the new version only.
    pub fn start(fleet: Fleet, before: Versions, period: Duration) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut samples = Samples::default();
            let mut last_step: BTreeMap<String, (String, i32)> = BTreeMap::new();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let at = start.elapsed().as_secs_f64();
                match tokio::try_join!(fleet.replica_sets(), fleet.rollouts()) {
                    Ok((replica_sets, rollouts)) => {
                        samples.taken += 1;
                        sample_availability(&fleet, &replica_sets, at, &mut samples);
                        sample_steps(&fleet, &rollouts, &before, &mut last_step, at, &mut samples);
                    }
                    Err(_) => samples.errors += 1,
                }
            }
            samples
        });
        Sampler { stop, task }
    }

    /// Stops sampling and returns what was seen.
    pub async fn stop(self) -> anyhow::Result<Samples> {
        let _ = self.stop.send(());
        Ok(self.task.await?)
    }
}

fn sample_availability(fleet: &Fleet, replica_sets: &[ReplicaSet], at: f64, samples: &mut Samples) {
    let mut by_owner: BTreeMap<String, Vec<&ReplicaSet>> = BTreeMap::new();
    for rs in replica_sets {
        if let Some(o) = owner(rs) {
            by_owner.entry(o).or_default().push(rs);
        }
    }
    for m in &fleet.members {
        let owned = by_owner.get(&m.name).map(Vec::as_slice).unwrap_or_default();
        let available: i32 = owned.iter().filter_map(|rs| rs.status.as_ref()?.available_replicas).sum();
        let margin = available - m.min_available();
        let seen = samples.min_available_by_shape.entry(m.shape()).or_insert((available, m.min_available()));
        seen.0 = seen.0.min(available);
        let breakdown = || {
            owned
                .iter()
                .map(|rs| {
                    format!(
                        "{} spec {} available {}",
                        rs.name_any(),
                        rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
                        rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if samples.min_margin.is_none_or(|min| margin < min) {
            samples.min_margin = Some(margin);
            samples.min_margin_at = format!("{} at {at:.1}s: {available} available ({})", m.name, breakdown());
        }
        if margin < 0 {
            samples.availability_violations += 1;
            samples.note(format!(
                "{} at {at:.1}s: {available} available < {} (replicas {} - maxUnavailable {}): {}",
                m.name,
                m.min_available(),
                m.replicas,
                m.max_unavailable(),
                breakdown()
            ));
        }
        let hashes: BTreeSet<&String> =
            owned.iter().filter_map(|rs| rs.labels().get(POD_TEMPLATE_HASH_LABEL)).collect();
        if hashes.len() != owned.len() && samples.duplicates.insert(m.name.clone()) {
            samples.note(format!("{} at {at:.1}s: duplicate ReplicaSets: {}", m.name, breakdown()));
        }
    }
}

fn sample_steps(
    fleet: &Fleet,
    rollouts: &[Rollout],
    before: &Versions,
    last_step: &mut BTreeMap<String, (String, i32)>,
    at: f64,
    samples: &mut Samples,
) {
    for ro in rollouts {
        let name = ro.name_any();
        if fleet.member(&name).is_none_or(|m| m.steps() == 0) {
            continue;
        }
        let st = ro.status.clone().unwrap_or_default();
        let (Some(hash), Some(index)) = (st.current_pod_hash, st.current_step_index) else { continue };
        if before.get(&name) == Some(&hash) {
            continue;
        }
        match last_step.get(&name) {
            Some((h, last)) if *h == hash => {
                samples.max_step_jump = samples.max_step_jump.max(index - last);
                if index < *last {
                    samples.step_regressions += 1;
                    samples.note(format!("{name} at {at:.1}s: step index went back from {last} to {index}"));
                }
            }
            _ => {}
        }
        last_step.insert(name, (hash, index));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_kill_intervals_and_they_stay_within_bounds() {
        let draw = |seed| {
            let mut rng = SeededRng::new(seed);
            (0..100).map(|_| rng.duration_between(Duration::from_secs(5), Duration::from_secs(15))).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(draw(7).iter().all(|d| (Duration::from_secs(5)..=Duration::from_secs(15)).contains(d)));
    }

    #[test]
    fn a_step_event_is_read_back_as_its_step_and_step_count() {
        assert_eq!(completed_step("Rollout step 2/5 completed (setWeight 66)"), Some((2, 5)));
        assert_eq!(completed_step("Rollout completed"), None);
    }

    #[test]
    fn every_fleet_of_five_has_every_shape_and_its_blue_green_members_keep_every_active_pod() {
        let fleet: Vec<Member> = (0..5).map(Member::mixed).collect();
        let shapes: BTreeSet<String> = fleet.iter().map(|m| format!("{} {:?}", m.replicas, m.strategy)).collect();
        assert_eq!(shapes.len(), 5);
        for m in &fleet {
            let rollout = m.rollout(&image(1)).expect("a valid Rollout");
            assert_eq!(rollout.spec.replicas, Some(m.replicas));
            if m.services().is_some() {
                assert_eq!(m.min_available(), m.replicas, "blue-green keeps every pod of the active version");
            }
        }
    }
}
