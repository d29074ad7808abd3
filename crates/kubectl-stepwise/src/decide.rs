//! What each operation patches, decided from the Rollout as read, and what it refuses.
//!
//! A refusal is an `Err` with the reason in words: the plugin prints it and changes nothing, so a
//! person (or a CI job) is never left wondering whether a no-op did something.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;
use serde_json::{Value, json};
use stepwise_api::operations::{self, Patches};
use stepwise_api::{Rollout, RolloutPhase};

/// Annotation by which a controller publishes its version on its leader-election Lease, read by
/// `version`. A contract the controller does not fulfil yet (its Lease carries only the holder).
pub const CONTROLLER_VERSION_ANNOTATION: &str = "stepwise.dev/controller-version";

/// An operation's patches and the sentence that says what it did.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The patches to make.
    pub patches: Patches,
    /// What happened, for the person who asked.
    pub done: String,
}

/// Where a rollout stands, for `status`.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The newest version is promoted and available.
    Healthy(String),
    /// Degraded or aborted: a person has to act.
    Failed(String),
    /// Still on its way (or the controller has not caught up with the latest change).
    InProgress(String),
}

impl Verdict {
    /// The exit code of `status`: 0 Healthy, 1 Degraded or aborted, 2 not there (yet).
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Healthy(_) => 0,
            Verdict::Failed(_) => 1,
            Verdict::InProgress(_) => 2,
        }
    }

    /// The reason, in words.
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Healthy(r) | Verdict::Failed(r) | Verdict::InProgress(r) => r,
        }
    }
}

fn name(ro: &Rollout) -> String {
    ro.metadata.name.clone().unwrap_or_default()
}

fn phase(ro: &Rollout) -> Option<RolloutPhase> {
    ro.status.as_ref().and_then(|s| s.phase)
}

fn aborted(ro: &Rollout) -> bool {
    ro.status.as_ref().and_then(|s| s.abort) == Some(true)
}

/// Whether the status describes the current spec; until it does, a phase of Healthy may be the
/// one from before the latest change.
fn observed(ro: &Rollout) -> bool {
    ro.status.as_ref().and_then(|s| s.observed_generation) >= ro.metadata.generation
}

fn not_observed(ro: &Rollout) -> String {
    format!(
        "the controller has not observed the latest change yet (generation {}, status describes {}); is it running? try again in a moment",
        ro.metadata.generation.unwrap_or_default(),
        ro.status.as_ref().and_then(|s| s.observed_generation).map(|g| g.to_string()).unwrap_or_else(|| "none".into())
    )
}

/// The 1-based step shown to people and the number of steps, for a canary.
pub fn step(ro: &Rollout) -> Option<(i32, i32)> {
    let steps = ro.spec.strategy.canary.as_ref()?.steps.as_ref().map(Vec::len).unwrap_or(0) as i32;
    if steps == 0 {
        return None;
    }
    let index = ro.status.as_ref().and_then(|s| s.current_step_index).unwrap_or(0);
    Some(((index + 1).min(steps), steps))
}

fn step_kind(ro: &Rollout, index: i32) -> &'static str {
    let step = ro.spec.strategy.canary.as_ref().and_then(|c| c.steps.as_ref()).and_then(|s| s.get(index as usize));
    match step {
        Some(s) if s.set_weight.is_some() => "setWeight",
        Some(s) if s.pause.is_some() => "pause",
        Some(s) if s.analysis.is_some() => "analysis",
        Some(s) if s.set_canary_scale.is_some() => "setCanaryScale",
        Some(s) if s.set_header_route.is_some() => "setHeaderRoute",
        Some(s) if s.set_mirror_route.is_some() => "setMirrorRoute",
        _ => "step",
    }
}

/// Refuses what needs an update in progress when there is none.
fn update_in_progress(ro: &Rollout, what: &str) -> Result<(), String> {
    if !observed(ro) {
        return Err(not_observed(ro));
    }
    if phase(ro) == Some(RolloutPhase::Healthy) && !aborted(ro) {
        return Err(format!("rollout {:?} is Healthy: there is no update in progress to {what}", name(ro)));
    }
    Ok(())
}

/// `promote` and `promote --full`.
pub fn promote(ro: &Rollout, full: bool) -> Result<Decision, String> {
    update_in_progress(ro, "promote")?;
    if aborted(ro) {
        return Err(format!("rollout {:?} is aborted: `retry` starts the update again from step 1", name(ro)));
    }
    let n = name(ro);
    if full {
        if ro.status.as_ref().and_then(|s| s.promote_full) == Some(true) {
            return Err(format!("rollout {n:?} is already being promoted fully"));
        }
        return Ok(Decision {
            patches: operations::promote_full(ro),
            done: format!("rollout {n:?} fully promoted: every remaining step, pause and analysis is skipped"),
        });
    }
    let patches = operations::promote(ro);
    let status = ro.status.clone().unwrap_or_default();
    let done = if patches.spec.is_some() {
        format!("rollout {n:?} resumed: it was paused by hand")
    } else if !status.pause_conditions.is_empty() {
        let reasons: Vec<String> = status.pause_conditions.iter().map(|c| format!("{:?}", c.reason)).collect();
        match step(ro) {
            Some((shown, total)) => {
                format!("rollout {n:?} promoted: pause at step {shown}/{total} ended ({})", reasons.join(", "))
            }
            None => format!("rollout {n:?} promoted: pause ended ({})", reasons.join(", ")),
        }
    } else if patches.status.is_some() {
        let index = status.current_step_index.unwrap_or(0);
        let (shown, total) = step(ro).unwrap_or((index + 1, index + 1));
        format!("rollout {n:?} promoted: step {shown}/{total} ({}) skipped", step_kind(ro, index))
    } else if ro.spec.strategy.blue_green.is_some() {
        return Err(format!(
            "rollout {n:?} is not paused: blue-green promotes on its own once the new version is available; `promote --full` skips the wait"
        ));
    } else {
        return Err(format!("rollout {n:?} is past its last step: nothing holds it; `promote --full` ends the update"));
    };
    Ok(Decision { patches, done })
}

/// `abort`.
pub fn abort(ro: &Rollout) -> Result<Decision, String> {
    update_in_progress(ro, "abort")?;
    if aborted(ro) {
        return Err(format!("rollout {:?} is already aborted", name(ro)));
    }
    Ok(Decision {
        patches: operations::abort(),
        done: format!("rollout {:?} aborted: traffic and pods go back to the stable version", name(ro)),
    })
}

/// `retry`.
pub fn retry(ro: &Rollout) -> Result<Decision, String> {
    if !aborted(ro) {
        let state = phase(ro).map(|p| p.to_string()).unwrap_or_else(|| "without a status".into());
        return Err(format!(
            "rollout {:?} is not aborted (it is {state}): retry only restarts an aborted update",
            name(ro)
        ));
    }
    Ok(Decision {
        patches: operations::retry(),
        done: format!("rollout {:?} retried: the update starts again from step 1", name(ro)),
    })
}

/// `pause` (true) and `resume` (false).
pub fn set_paused(ro: &Rollout, paused: bool) -> Result<Decision, String> {
    let n = name(ro);
    let is_paused = ro.spec.paused == Some(true);
    match (paused, is_paused) {
        (true, true) => Err(format!("rollout {n:?} is already paused by hand; `resume` continues it")),
        (false, false) if !ro.status.as_ref().map(|s| s.pause_conditions.is_empty()).unwrap_or(true) => Err(format!(
            "rollout {n:?} was not paused by hand but by the controller (a pause step or an inconclusive analysis): `promote` continues it"
        )),
        (false, false) => Err(format!("rollout {n:?} is not paused")),
        (true, false) => Ok(Decision {
            patches: operations::set_paused(true),
            done: format!("rollout {n:?} paused: nothing scales and no step advances until `resume`"),
        }),
        (false, true) => {
            Ok(Decision { patches: operations::set_paused(false), done: format!("rollout {n:?} resumed") })
        }
    }
}

/// `restart` at `at` (RFC 3339).
pub fn restart(ro: &Rollout, at: &str) -> Decision {
    Decision {
        patches: operations::restart(at),
        done: format!("rollout {:?} restarting: pods created before {at} are replaced one at a time", name(ro)),
    }
}

/// `set image NAME CONTAINER=IMAGE`: a JSON patch that tests the container's name at its index,
/// so that a template changed meanwhile makes the patch fail rather than change another container.
pub fn set_image(ro: &Rollout, container: &str, image: &str) -> Result<(Value, String), String> {
    let n = name(ro);
    let containers =
        ro.spec.template.as_ref().and_then(|t| t.spec.as_ref()).map(|s| s.containers.as_slice()).unwrap_or_default();
    let Some(index) = containers.iter().position(|c| c.name == container) else {
        let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
        return Err(format!("rollout {n:?} has no container {container:?}; its containers: {}", names.join(", ")));
    };
    if containers[index].image.as_deref() == Some(image) {
        return Err(format!("container {container:?} of rollout {n:?} already runs {image}"));
    }
    let path = format!("/spec/template/spec/containers/{index}");
    let patch = json!([
        {"op": "test", "path": format!("{path}/name"), "value": container},
        {"op": "add", "path": format!("{path}/image"), "value": image},
    ]);
    Ok((patch, format!("rollout {n:?}: container {container:?} set to {image}; a new update starts")))
}

/// A Rollout's ReplicaSets as `undo` takes them: `(revision, pod template)`.
pub fn revision_templates<'a>(replica_sets: impl IntoIterator<Item = &'a ReplicaSet>) -> Vec<(i64, Value)> {
    replica_sets
        .into_iter()
        .map(|rs| {
            let template = rs.spec.as_ref().and_then(|s| s.template.clone());
            (operations::revision_of(rs.annotations()), serde_json::to_value(template).unwrap_or(Value::Null))
        })
        .collect()
}

/// `undo [--to-revision N]`: `replica_sets` as `(revision, template)`.
pub fn undo(ro: &Rollout, replica_sets: &[(i64, Value)], to: Option<i64>) -> Result<(Value, String), String> {
    let n = name(ro);
    let mut revisions: Vec<i64> = replica_sets.iter().map(|(r, _)| *r).collect();
    revisions.sort_unstable_by(|a, b| b.cmp(a));
    let target = to.or_else(|| revisions.get(1).copied());
    match operations::undo(ro, replica_sets, to) {
        Err(e) => {
            let known: Vec<String> = revisions.iter().map(i64::to_string).collect();
            Err(format!("cannot undo rollout {n:?}: {e} (its revisions: {})", known.join(", ")))
        }
        Ok(None) => Err(format!("rollout {n:?} already runs the template of revision {}", target.unwrap_or_default())),
        Ok(Some(patch)) => {
            Ok((patch, format!("rollout {n:?} rolled back to the template of revision {}", target.unwrap_or_default())))
        }
    }
}

/// Where the rollout stands, for `status`.
pub fn verdict(ro: &Rollout) -> Verdict {
    if !observed(ro) {
        return Verdict::InProgress(not_observed(ro));
    }
    let message = ro.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    let said = |fallback: &str| if message.is_empty() { fallback.to_string() } else { message.clone() };
    match phase(ro) {
        Some(RolloutPhase::Degraded) if aborted(ro) => Verdict::Failed(said("Aborted")),
        // The abort is decided; the controller's message may not say so yet.
        _ if aborted(ro) => {
            Verdict::Failed("Aborted: the controller is taking traffic and pods back to the stable version".into())
        }
        Some(RolloutPhase::Degraded) => Verdict::Failed(said("Degraded")),
        Some(RolloutPhase::Healthy) => Verdict::Healthy(said("Healthy")),
        Some(p) => Verdict::InProgress(said(&p.to_string())),
        None => Verdict::InProgress("the controller has not written a status yet".into()),
    }
}
