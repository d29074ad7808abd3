//! The blue-green strategy: the new version comes up behind the preview Service, passes its
//! pre-promotion analysis and the pause, takes over the active Service, passes its
//! post-promotion analysis and becomes stable. Decided first, then the desired state.

use stepwise_api::{
    BlueGreenStatus, BlueGreenStrategy, PauseReason, RolloutAnalysis, RolloutAnalysisRunStatus, RolloutStatus,
};

use super::abort::{abort, aborted};
use super::action::EventType;
use super::analysis::{Verdict, analysis_verdict, ensure_run, judge};
use super::context::Ctx;
use super::desired::{Draft, beyond_delay_limit};
use super::message::blue_green_pause_message;
use super::pause::{add_pause, end_all_pauses, end_pause, pause_started, unpausing};
use crate::observed::AnalysisKind;
use crate::replicas::Counts;
use crate::time::seconds_between;

/// The new ReplicaSet as this plan leaves it.
pub(crate) struct NewVersion {
    /// The size it is to have: the preview size until the switch is under way.
    pub target: i32,
    /// Its available pods at the spec this plan gives it (it keeps no more pods than that).
    pub available: i32,
    /// Whether it has all its pods at that size. Judged on the spec this plan gives it, so that
    /// planning again finds the same. With no pods wanted (previewReplicaCount 0, or no
    /// replicas) it is ready at once: waiting for pods that never come would wait for ever.
    pub ready: bool,
}

/// What the decisions of one plan came to.
struct Decision {
    /// The size the new ReplicaSet gets in this plan.
    new_size: i32,
    /// Whether the active Service moves to the new version in this plan.
    switch: bool,
}

/// Whether the active Service selects the new version: as observed, or as this controller last
/// wrote it (the status is written only after the Service was), since the Service cache may not
/// have caught up yet and the switch must not be asked for twice.
fn active_switched(ctx: &Ctx, bg: &BlueGreenStrategy, status: &RolloutStatus) -> bool {
    let observed = ctx.observed.services.get(&bg.active_service).and_then(|h| h.as_deref());
    let written = status.blue_green.as_ref().and_then(|b| b.active_selector.as_deref());
    observed == Some(ctx.hash.as_str()) || (written == Some(ctx.hash.as_str()) && !aborted(status))
}

pub(crate) fn new_version(ctx: &Ctx, bg: &BlueGreenStrategy, status: &RolloutStatus) -> NewVersion {
    let r = ctx.replicas;
    let promote_full = status.promote_full == Some(true) && !aborted(status) && !ctx.promoted(status);
    let check_point = status.blue_green.as_ref().and_then(|b| b.scale_up_preview_check_point) == Some(true);
    let counts = ctx.counts(&ctx.hash);
    let target = if aborted(status) {
        counts.spec
    } else if ctx.promoted(status)
        || active_switched(ctx, bg, status)
        || promote_full
        || check_point
        || ctx.older_stable(status).is_none()
    {
        r
    } else {
        bg.preview_replica_count.unwrap_or(r).min(r)
    };
    let spec = if ctx.user_paused() || aborted(status) { counts.spec } else { counts.reachable(target) };
    let available = Counts { spec, available: counts.available }.kept_available();
    NewVersion { target, available, ready: available >= target && spec == target }
}

pub(crate) fn plan(
    ctx: &Ctx,
    bg: &BlueGreenStrategy,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    draft: &mut Draft,
) {
    let mut bgs = status.blue_green.clone().unwrap_or_default();
    let decision = decide(ctx, bg, prev, status, &mut bgs, draft);
    desire(ctx, bg, status, &mut bgs, &decision, draft);
    status.blue_green = Some(bgs);
}

fn decide(
    ctx: &Ctx,
    bg: &BlueGreenStrategy,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    bgs: &mut BlueGreenStatus,
    draft: &mut Draft,
) -> Decision {
    let r = ctx.replicas;
    let new = new_version(ctx, bg, status);
    let mut decision = Decision { new_size: new.target, switch: false };
    let promoted = ctx.promoted(status);
    if aborted(status) {
        return decision;
    } else if ctx.older_stable(status).is_none() || promoted {
        decision.switch = new.available >= if promoted { r.min(1) } else { r };
    } else if !ctx.user_paused() && new.ready {
        match gates(ctx, bg, prev, status, bgs, draft) {
            Gate::Closed => {}
            Gate::Failed(message) => {
                abort(ctx, status, draft, message);
                return decision;
            }
            Gate::Open => {
                if new.target < r {
                    bgs.scale_up_preview_check_point = Some(true);
                    decision.new_size = r;
                }
                // Judged at the size this plan gives the new ReplicaSet: pods left at full size
                // (a retry after an abort) let the switch happen at once.
                decision.switch = ctx.counts(&ctx.hash).available_once_scaled_to(decision.new_size) >= r;
            }
        }
    }
    if decision.switch
        && let Err(message) = promote_after_switch(ctx, bg, prev, status, bgs, draft)
    {
        abort(ctx, status, draft, message);
        decision.switch = false;
    }
    decision
}

enum Gate {
    Open,
    Closed,
    Failed(String),
}

/// Before the switch: the pre-promotion analysis, then the pause.
fn gates(
    ctx: &Ctx,
    bg: &BlueGreenStrategy,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    bgs: &mut BlueGreenStatus,
    draft: &mut Draft,
) -> Gate {
    let promote_full = status.promote_full == Some(true);
    let switched = active_switched(ctx, bg, status);
    // A promote that accepted an inconclusive analysis also ends the pause: one promote, one "go on".
    let mut analysis_accepted = false;
    if let Some(analysis) = bg.pre_promotion_analysis.as_ref().filter(|_| !promote_full && !switched) {
        let (verdict, run) = judge_gate(ctx, prev, status, bgs, draft, AnalysisKind::PrePromotion, analysis);
        match verdict {
            Verdict::Pass => analysis_accepted = run.status == stepwise_api::AnalysisPhase::Inconclusive,
            Verdict::Fail => return Gate::Failed(analysis_verdict(&run, gate_name(AnalysisKind::PrePromotion))),
            Verdict::Hold | Verdict::Waiting => return Gate::Closed,
        }
    }
    let auto = bg.auto_promotion_enabled.unwrap_or(true);
    let auto_secs = bg.auto_promotion_seconds.unwrap_or(0);
    let pauses =
        !promote_full && !switched && bgs.scale_up_preview_check_point != Some(true) && (!auto || auto_secs > 0);
    if !pauses {
        return Gate::Open;
    }
    if unpausing(status) || analysis_accepted {
        end_pause(status, PauseReason::BlueGreenPause);
        return Gate::Open;
    }
    match pause_started(status, PauseReason::BlueGreenPause).cloned() {
        None => {
            add_pause(ctx, status, draft, PauseReason::BlueGreenPause, blue_green_pause_message(ctx, None));
            if auto {
                draft.requeue_in(f64::from(auto_secs));
            }
            Gate::Closed
        }
        Some(start) => {
            let left = f64::from(auto_secs) - seconds_between(&start, ctx.now);
            if auto && left <= 0.0 {
                end_pause(status, PauseReason::BlueGreenPause);
                status.controller_pause = None;
                return Gate::Open;
            }
            if auto {
                draft.requeue_in(left);
            }
            Gate::Closed
        }
    }
}

/// After the switch has been seen, the post-promotion analysis; the new version becomes stable
/// once it passes (at once without one). Err is the abort message of a failed analysis.
fn promote_after_switch(
    ctx: &Ctx,
    bg: &BlueGreenStrategy,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    bgs: &mut BlueGreenStatus,
    draft: &mut Draft,
) -> Result<(), String> {
    let has_stable = ctx.older_stable(status).is_some();
    let promoted = ctx.promoted(status);
    let promote_full = status.promote_full == Some(true);
    let mut stable_now = !has_stable || promoted || promote_full;
    match bg.post_promotion_analysis.as_ref() {
        _ if stable_now => {}
        None => stable_now = true,
        Some(analysis) if active_switched(ctx, bg, status) => {
            let (verdict, run) = judge_gate(ctx, prev, status, bgs, draft, AnalysisKind::PostPromotion, analysis);
            match verdict {
                Verdict::Pass => stable_now = true,
                Verdict::Fail => return Err(analysis_verdict(&run, gate_name(AnalysisKind::PostPromotion))),
                Verdict::Hold | Verdict::Waiting => {}
            }
        }
        Some(_) => {}
    }
    if stable_now && !promoted {
        let reason = if promote_full { "Full promotion requested" } else { "Completed blue-green update" };
        status.stable_rs = Some(ctx.hash.clone());
        status.promote_full = None;
        end_all_pauses(status);
        bgs.scale_up_preview_check_point = None;
        if has_stable {
            let revision = status.current_revision.unwrap_or(1);
            let message = format!("Rollout completed update to revision {revision} ({}): {reason}", ctx.hash);
            draft.event(EventType::Normal, "RolloutCompleted", message);
        }
    }
    Ok(())
}

/// Where the status records the run of a gate.
fn gate_run(bgs: &mut BlueGreenStatus, kind: AnalysisKind) -> &mut Option<RolloutAnalysisRunStatus> {
    if kind == AnalysisKind::PrePromotion {
        &mut bgs.pre_promotion_analysis_run_status
    } else {
        &mut bgs.post_promotion_analysis_run_status
    }
}

fn gate_name(kind: AnalysisKind) -> &'static str {
    if kind == AnalysisKind::PrePromotion { "Pre-promotion" } else { "Post-promotion" }
}

/// Judges the run of a gate, starting it when there is none, and records it; an inconclusive
/// result pauses for a person.
fn judge_gate(
    ctx: &Ctx,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    bgs: &mut BlueGreenStatus,
    draft: &mut Draft,
    kind: AnalysisKind,
    analysis: &RolloutAnalysis,
) -> (Verdict, RolloutAnalysisRunStatus) {
    let revision = status.current_revision.unwrap_or(1);
    let recorded = gate_run(bgs, kind).clone();
    let mut run = ensure_run(ctx, draft, recorded.as_ref(), kind, analysis, revision);
    let mut seen_before = prev.blue_green.clone().unwrap_or_default();
    let verdict = judge(&mut run, prev, gate_run(&mut seen_before, kind).as_ref(), status);
    *gate_run(bgs, kind) = Some(run.clone());
    if verdict == Verdict::Hold {
        let message = analysis_verdict(&run, gate_name(kind));
        add_pause(ctx, status, draft, PauseReason::InconclusiveAnalysisRun, message);
    }
    (verdict, run)
}

fn desire(
    ctx: &Ctx,
    bg: &BlueGreenStrategy,
    status: &RolloutStatus,
    bgs: &mut BlueGreenStatus,
    decision: &Decision,
    draft: &mut Draft,
) {
    let r = ctx.replicas;
    let aborted = aborted(status);
    let stable = ctx.older_stable(status);
    if aborted && let Some(sh) = stable.as_deref() {
        draft.desired.select(&bg.active_service, sh);
        bgs.active_selector = Some(sh.to_string());
    }
    if !ctx.user_paused() && !aborted {
        draft.desired.scale(ctx, &ctx.hash, decision.new_size);
        draft.desired.clear_deadline(&ctx.hash);
    }
    if decision.switch && !aborted {
        draft.desired.select(&bg.active_service, &ctx.hash);
        bgs.active_selector = Some(ctx.hash.clone());
    }
    // The stable version keeps all its pods while it is the stable one (a promotion in this plan
    // has made it an older version). On abort the new pods go once the active Service is back on
    // the stable pods and they are all available.
    if let Some(sh) = stable.as_deref() {
        draft.desired.scale(ctx, sh, r);
        draft.desired.clear_deadline(sh);
        let back_on_stable = draft.desired.selected(ctx, &bg.active_service).as_deref() == Some(sh);
        if aborted && back_on_stable && draft.desired.available(ctx, sh) >= r {
            let delay = match bg.abort_scale_down_delay_seconds {
                Some(0) => None,
                Some(d) => Some(d),
                None => Some(stepwise_api::DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS),
            };
            draft.scale_down_after(ctx, &ctx.hash, delay);
        }
    }
    point_preview(ctx, bg, status, bgs, draft);
    scale_down_older(ctx, bg, status, draft);
}

/// The preview Service: the new version once it has available pods (stable on abort), or at
/// once when no pods are wanted at all, as for the active Service: it must not hold on to an
/// older version's pods for ever.
fn point_preview(
    ctx: &Ctx,
    bg: &BlueGreenStrategy,
    status: &RolloutStatus,
    bgs: &mut BlueGreenStatus,
    draft: &mut Draft,
) {
    let Some(preview) = &bg.preview_service else { return };
    let target = if aborted(status) { status.stable_rs.clone() } else { Some(ctx.hash.clone()) };
    if let Some(t) = target
        && (draft.desired.available(ctx, &t) > 0 || ctx.replicas == 0)
    {
        draft.desired.select(preview, &t);
        bgs.preview_selector = Some(t);
    }
}

/// Older versions go after scaleDownDelaySeconds once nothing selects them. All of them get the
/// delay (see the canary case): a stale cache must not make a just-switched version look like
/// one that never served.
fn scale_down_older(ctx: &Ctx, bg: &BlueGreenStrategy, status: &RolloutStatus, draft: &mut Draft) {
    let active_after = draft.desired.selected(ctx, &bg.active_service);
    let preview_after = bg.preview_service.as_deref().and_then(|p| draft.desired.selected(ctx, p));
    let delay = bg.scale_down_delay_seconds.unwrap_or(stepwise_api::DEFAULT_SCALE_DOWN_DELAY_SECONDS);
    let selected = |hash: &str| active_after.as_deref() == Some(hash) || preview_after.as_deref() == Some(hash);
    let older: Vec<&String> = ctx
        .observed
        .replica_sets
        .iter()
        .map(|rs| &rs.hash)
        .filter(|h| **h != ctx.hash && Some(*h) != status.stable_rs.as_ref())
        .collect();
    // Beyond scaleDownDelayRevisionLimit an older version goes at once, once nothing selects it.
    let beyond =
        beyond_delay_limit(ctx, older.iter().copied().filter(|h| !selected(h)), bg.scale_down_delay_revision_limit);
    for hash in older {
        let Some(rs) = ctx.rs(hash) else { continue };
        if beyond.contains(hash) {
            draft.desired.scale(ctx, hash, 0);
            continue;
        }
        // The deadline may be set while the switch is under way; pods go only once nothing
        // selects them.
        if !selected(hash) || (rs.scale_down_deadline.is_none() && delay > 0) {
            draft.scale_down_after(ctx, hash, Some(delay));
        }
    }
}
