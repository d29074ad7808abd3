//! The canary strategy: decide how far the rollout gets (steps, analyses, promotion, abort),
//! then the desired state that follows: pods per ReplicaSet, Services, the traffic weight.

mod pods;
pub(crate) mod routes;
mod traffic;
mod walk;

use stepwise_api::{CanaryStatus, CanaryStrategy, PauseReason, PingPong, RolloutStatus};

use super::abort::{abort, aborted};
use super::action::EventType;
use super::analysis::{Verdict, analysis_verdict, ensure_run, judge};
use super::context::Ctx;
use super::desired::Draft;
use super::pause::{add_pause, end_all_pauses, held_by_inconclusive_analysis};
use crate::observed::AnalysisKind;
use pods::Canary;

/// What the decisions of one plan came to.
pub(crate) struct Decision {
    /// The current step once the plan is carried out.
    pub idx: i32,
    pub aborted: bool,
    pub promoted: bool,
    /// A promote full that is still under way.
    pub promote_full: bool,
    /// See `walk::Walked::completed_weight`.
    pub completed_weight: Option<i32>,
}

pub(crate) fn plan(
    ctx: &Ctx,
    spec: &CanaryStrategy,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    draft: &mut Draft,
) {
    let mut c = Canary::new(ctx, spec, prev);
    let mut canary_status = status.canary.clone().unwrap_or_default();
    // Ping is stable until a promotion makes pong stable; without pingPong nothing is recorded.
    canary_status.stable_ping_pong =
        spec.ping_pong.as_ref().map(|_| canary_status.stable_ping_pong.unwrap_or(PingPong::Ping));
    c.set_roles(canary_status.stable_ping_pong);
    let decision = decide(&c, prev, status, &mut canary_status, draft);
    c.set_roles(canary_status.stable_ping_pong);
    traffic::desire(&c, &decision, status, &mut canary_status, draft);
    status.canary = if canary_status == CanaryStatus::default() { None } else { Some(canary_status) };
}

/// Walks the steps, judges the background analysis and promotes, in that order; an abort on the
/// way ends the decisions.
fn decide(
    c: &Canary,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    canary_status: &mut CanaryStatus,
    draft: &mut Draft,
) -> Decision {
    let ctx = c.ctx;
    let promoted = ctx.promoted(status);
    let promote_full = status.promote_full == Some(true) && !aborted(status) && !promoted;
    if promote_full {
        end_all_pauses(status);
    }
    let mut decision = Decision {
        idx: if promoted || promote_full { c.n } else { status.current_step_index.unwrap_or(0).clamp(0, c.n) },
        aborted: aborted(status),
        promoted,
        promote_full,
        completed_weight: None,
    };
    if !decision.aborted && !promoted && !promote_full && !ctx.user_paused() {
        let walked = walk::walk(c, decision.idx, prev, status, canary_status, draft);
        decision.idx = walked.idx;
        decision.completed_weight = walked.completed_weight;
        if let Some(message) = walked.failure {
            return aborted_by(c, status, draft, message);
        }
    }
    status.current_step_index = Some(decision.idx);
    if !decision.aborted
        && let Some(message) = judge_background(c, &decision, prev, status, canary_status, draft)
    {
        return aborted_by(c, status, draft, message);
    }
    if !decision.aborted && !promoted {
        promote_if_done(c, &mut decision, status, canary_status, draft);
    }
    decision
}

fn aborted_by(c: &Canary, status: &mut RolloutStatus, draft: &mut Draft, message: String) -> Decision {
    abort(c.ctx, status, draft, message);
    Decision {
        idx: status.current_step_index.unwrap_or(0),
        aborted: true,
        promoted: false,
        promote_full: false,
        completed_weight: None,
    }
}

/// Background analysis runs from startingStep until promotion. Returns the abort message when it
/// failed.
fn judge_background(
    c: &Canary,
    d: &Decision,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    canary_status: &mut CanaryStatus,
    draft: &mut Draft,
) -> Option<String> {
    let ctx = c.ctx;
    let bg = c.spec.analysis.as_ref()?;
    let has_stable = ctx.older_stable(status).is_some();
    // No run is started for a canary that is promoted in this very plan: nobody would stop it.
    let full = ctx.counts(&ctx.hash);
    let promoting_now = d.idx >= c.n && full.spec >= ctx.replicas && full.kept_available() >= ctx.replicas;
    let recorded = canary_status.current_background_analysis_run_status.clone();
    if d.promoted || !has_stable || d.idx < bg.starting_step.unwrap_or(0) || d.promote_full {
        return None;
    }
    if recorded.is_none() && promoting_now {
        return None;
    }
    let revision = status.current_revision.unwrap_or(1);
    let mut run = ensure_run(ctx, draft, recorded.as_ref(), AnalysisKind::Background, &bg.analysis, revision);
    let seen = prev.canary.as_ref().and_then(|c| c.current_background_analysis_run_status.as_ref());
    let was_inconclusive = run.status == stepwise_api::AnalysisPhase::Inconclusive;
    match judge(&mut run, prev, seen, status) {
        Verdict::Fail => {
            let message = analysis_verdict(&run, "Background");
            canary_status.current_background_analysis_run_status = Some(run);
            return Some(message);
        }
        // Accepted; while steps remain the canary keeps running: judge it again with a fresh run.
        Verdict::Pass if was_inconclusive && d.idx < c.n => {
            run = ensure_run(ctx, draft, None, AnalysisKind::Background, &bg.analysis, revision);
        }
        Verdict::Hold => {
            let message = analysis_verdict(&run, "Background");
            add_pause(ctx, status, draft, PauseReason::InconclusiveAnalysisRun, message);
        }
        Verdict::Pass | Verdict::Waiting => {}
    }
    canary_status.current_background_analysis_run_status = Some(run);
    None
}

/// Promotes once all steps are done (or promote full was asked) and the new version is fully
/// available, with all the traffic when there is a router.
fn promote_if_done(
    c: &Canary,
    d: &mut Decision,
    status: &mut RolloutStatus,
    canary_status: &mut CanaryStatus,
    draft: &mut Draft,
) {
    let ctx = c.ctx;
    let r = ctx.replicas;
    if !(d.idx >= c.n || d.promote_full) || ctx.user_paused() || held_by_inconclusive_analysis(status) {
        return;
    }
    let new = ctx.counts(&ctx.hash);
    let canary_full = new.spec >= r && new.kept_available() >= r;
    let has_stable = ctx.older_stable(status).is_some();
    let weight_full = !c.routed || !has_stable || r == 0 || c.weight_reached(c.max_weight, canary_full);
    if !(canary_full && weight_full) {
        return;
    }
    let reason = if d.promote_full {
        "Full promotion requested".to_string()
    } else {
        format!("Completed all {} canary steps", c.n)
    };
    status.stable_rs = Some(ctx.hash.clone());
    // The Service that carries all the traffic now (the canary's) becomes the stable one, so the
    // stable selector never moves under live traffic; the other one, which carries nothing,
    // becomes the canary's. A first version has no older stable to swap with.
    if has_stable {
        canary_status.stable_ping_pong = canary_status.stable_ping_pong.map(PingPong::other);
    }
    status.promote_full = None;
    end_all_pauses(status);
    d.promoted = true;
    d.promote_full = false;
    d.idx = c.n;
    status.current_step_index = Some(c.n);
    canary_status.current_background_analysis_run_status = None;
    let revision = status.current_revision.unwrap_or(1);
    let message = format!("Rollout completed update to revision {revision} ({}): {reason}", ctx.hash);
    draft.event(EventType::Normal, "RolloutCompleted", message);
}
