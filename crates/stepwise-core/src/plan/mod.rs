//! `plan`: from a Rollout, what was observed and the time, to the desired state, the actions that
//! reach it, the next status and when to look again.
//!
//! A plan first decides (a new version, a person's abort or retry, the progress deadline, the
//! strategy's steps, analyses and promotion), writing the desired state as it goes; then it
//! derives the actions from the difference between the desired state and what was observed
//! ([`desired::actions`]), and writes the status that tells people where the rollout is.

mod abort;
mod action;
mod analysis;
mod blue_green;
mod canary;
mod context;
mod deadline;
mod desired;
mod message;
mod metadata;
mod notify;
mod pause;
mod recreate;
mod revision;
mod run_history;
mod status;
mod validate;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::Rollout;

pub use action::{Action, EventType, Plan, action_event};
use context::Ctx;
use desired::Draft;
pub use status::weight_text;
pub(crate) use status::{remove_condition, set_condition};

/// The header and mirror routes `status` records as given to the routers.
pub(crate) fn managed_routes(
    canary: &stepwise_api::CanaryStrategy,
    status: &stepwise_api::RolloutStatus,
) -> Vec<stepwise_api::RouteRequest> {
    canary::routes::managed_routes(canary, status).into_iter().map(|(route, _)| route).collect()
}

/// Decides what to do for one Rollout. Pure: the same inputs give the same plan, and planning
/// again once the plan is carried out asks for nothing more.
pub fn plan(rollout: &Rollout, observed: &crate::Observed, now: &Time) -> Plan {
    let prev = rollout.status.clone().unwrap_or_default();
    let mut status = prev.clone();
    status.observed_generation = rollout.metadata.generation;
    let mut draft = Draft::default();

    let (template, selector) = match validate::validate(rollout, observed) {
        Ok(valid) => valid,
        Err(invalid) => {
            status::invalid_spec(&prev, &mut status, &mut draft, &invalid.message, now);
            crate::readiness::report(&mut status, now);
            if invalid.look_again {
                draft.requeue_in(30.0);
            }
            return Plan { requeue_after: draft.requeue_after(), actions: draft.events, status };
        }
    };
    status::remove_condition(&mut status, crate::condition::INVALID_SPEC);
    let ctx = Ctx::new(rollout, observed, now, template, selector);

    revision::start_new_version_if_needed(&ctx, &prev, &mut status, &mut draft);
    abort::take_abort_or_retry(&ctx, &mut status, &mut draft);
    status::count_replicas(&ctx, &mut status);
    deadline::check_progress_deadline(&ctx, &prev, &mut status, &mut draft);
    if let Some(canary) = &rollout.spec.strategy.canary {
        canary::plan(&ctx, canary, &prev, &mut status, &mut draft);
    } else if let Some(bg) = &rollout.spec.strategy.blue_green {
        blue_green::plan(&ctx, bg, &prev, &mut status, &mut draft);
    } else if rollout.spec.strategy.recreate.is_some() {
        recreate::plan(&ctx, &mut status, &mut draft);
    }
    metadata::desire(&ctx, &status, &mut draft);
    let live_runs = analysis::live_runs(&ctx, &status);
    draft.desired.deleted_runs = run_history::runs_beyond_limits(&ctx, &status, &live_runs);
    draft.desired.live_runs = Some(live_runs);
    revision::restart_pods(&ctx, &mut status, &mut draft);
    revision::trim_history(&ctx, &status, &mut draft);
    status::report_scale_selector(&ctx, &draft.desired, &mut status);
    status::summarize(&ctx, &prev, &mut status, &mut draft);
    crate::readiness::report(&mut status, now);
    revision::scale_down_workload(&ctx, &status, &mut draft);
    revision::record_stable_period(&ctx, &prev, &status, &mut draft);
    notify::queue(&ctx, &prev, &mut status, &draft);

    let requeue_after = draft.requeue_after();
    let mut actions = desired::actions(&ctx, draft);
    // Before anything routes: deleting the Rollout from then on sends all traffic back to stable.
    if crate::traffic::lacks_finalizer(rollout) {
        actions.insert(0, Action::AddTrafficFinalizer);
    }
    Plan { actions, status, requeue_after }
}
