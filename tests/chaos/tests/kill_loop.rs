//! The kill loop: a fleet of Rollouts is updated at once while its controller is killed with
//! SIGKILL every 5 to 15 seconds and started again at once. Nothing may be lost: every Rollout
//! converges on the new version, with one ReplicaSet per pod template, every canary step in order,
//! never fewer available pods than `replicas - maxUnavailable`, and each subscribed notification
//! delivered under exactly one key (a repeat under the same key, which a receiver drops, is
//! counted). The same fleet is first updated without kills, to compare the time to converge.
//!
//! `CHAOS_ROLLOUTS` (default 20) sizes the fleet, `CHAOS_SEED` (default 1) seeds the kill times;
//! `scripts/just chaos` runs it with 200 Rollouts. See docs/reliability.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::ResourceExt as _;
use stepwise_chaos::fleet::{Fleet, Sampler, Samples, SeededRng, describe, env_or, image};
use stepwise_chaos::notifications::{self, Receiver};
use stepwise_e2e::Env;

const DEFAULT_ROLLOUTS: u64 = 20;
const DEFAULT_SEED: u64 = 1;
const KILL_EVERY: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(15));

/// One update of a fleet, measured.
struct Run {
    converge: Duration,
    kills: u32,
    samples: Samples,
    replica_sets: usize,
    repeated_step_events: usize,
    step_events: usize,
    canaries: usize,
    notifications: usize,
    repeated_notifications: usize,
    problems: Vec<String>,
}

/// Creates the fleet in a namespace of its own, waits for its first version, updates every
/// Rollout at once and, with `kills`, kills the controller at the seeded intervals until all
/// have converged. Returns what was measured; a timeout is an error.
async fn update_fleet(name: &str, rollouts: usize, mut kills: Option<SeededRng>) -> anyhow::Result<Run> {
    let mut env = Env::without_controller(name).await?;
    let (receiver, url) = Receiver::start().await?;
    notifications::configure(&env.client, &env.ns, &url).await?;
    let home = format!("--lease-namespace={}", env.ns);
    let flags = ["--leader-elect=false", home.as_str()];
    env.start_controller(&flags)?;
    let fleet = Fleet::mixed(env.client.clone(), &env.ns, rollouts);
    // Slower machines and larger fleets need longer; none of this is a claim about speed.
    let timeout = Duration::from_secs(300 + 6 * rollouts as u64);

    fleet.create(&image(1)).await?;
    let before = fleet.wait_healthy(timeout).await?;
    let names: Vec<String> = fleet.rollouts().await?.iter().map(|r| r.name_any()).collect();
    notifications::subscribe(&env.client, &env.ns, &names).await?;
    let old_events = fleet.event_names().await?;
    let sampler = Sampler::start(fleet.clone(), before.clone(), Duration::from_secs(1));

    let start = Instant::now();
    fleet.set_image(&image(2)).await?;
    let mut next_kill = kills.as_mut().map(|rng| start + rng.duration_between(KILL_EVERY.0, KILL_EVERY.1));
    let mut killed = 0;
    let converge = loop {
        let now = fleet.rollouts().await?;
        let lagging = fleet.lagging(&now, &before);
        if lagging.is_empty() {
            break start.elapsed();
        }
        if start.elapsed() > timeout {
            let logs = env.controllers.last().map(|c| c.log_tail()).unwrap_or_default();
            anyhow::bail!(
                "{name}: not converged {timeout:?} after the update ({killed} kills): {}\nlast controller log:\n{logs}",
                describe(&now, &lagging)
            );
        }
        if let (Some(at), Some(rng)) = (next_kill, kills.as_mut())
            && Instant::now() >= at
        {
            let controller = env.controllers.last_mut().expect("a controller runs");
            let pid = controller.pid();
            controller.kill_hard();
            env.start_controller(&flags)?;
            killed += 1;
            let mut phases: BTreeMap<String, usize> = BTreeMap::new();
            for ro in now.iter().filter(|r| lagging.contains(&r.name_any())) {
                let phase = ro.status.as_ref().and_then(|s| s.phase).map_or("none".into(), |p| p.to_string());
                *phases.entry(phase).or_default() += 1;
            }
            println!(
                "  kill {killed} at {:.1}s: SIGKILL pid {pid}, restarted; {}/{rollouts} Rollouts not converged {phases:?}",
                start.elapsed().as_secs_f64(),
                lagging.len()
            );
            next_kill = Some(Instant::now() + rng.duration_between(KILL_EVERY.0, KILL_EVERY.1));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // A blue-green Rollout is Healthy before its scale-down delay ends; the sampling goes on
    // until the previous versions are gone, since that is when old pods go.
    fleet.wait_old_versions_gone(Duration::from_secs(120)).await?;
    let samples = sampler.stop().await?;
    let outboxes_empty = fleet.wait_notifications_sent(Duration::from_secs(120)).await;

    let replica_sets = fleet.replica_set_report(2).await?;
    let steps = fleet.step_report(&old_events).await?;
    let mut problems = replica_sets.problems;
    problems.extend(steps.problems);
    problems.extend(samples.details.iter().cloned());
    if let Err(e) = outboxes_empty {
        problems.push(e.to_string());
    }
    let received = receiver.received();
    let (told, repeated_notifications) = notifications::check(&received, &names);
    problems.extend(told);
    if problems.is_empty() {
        env.cleanup().await?;
    } else {
        // Kept for a post-mortem: the namespace and target/e2e-logs/<namespace>-controller-*.log.
        println!("  {name}: namespace {} kept for inspection", env.ns);
    }
    Ok(Run {
        converge,
        kills: killed,
        samples,
        replica_sets: replica_sets.total,
        repeated_step_events: steps.repeated,
        step_events: steps.completions,
        canaries: steps.canaries,
        notifications: received.len(),
        repeated_notifications,
        problems,
    })
}

fn report(label: &str, run: &Run) {
    let s = &run.samples;
    println!(
        "  {label}: converged in {:.1}s, {} kills, {} ReplicaSets, {} samples ({} lost), min available margin {:?} ({}), {} availability violations, {} duplicate, {} step regressions, largest step jump between samples {}, {} step events on {} canaries ({} recorded twice), {} notifications ({} repeated under their key)",
        run.converge.as_secs_f64(),
        run.kills,
        run.replica_sets,
        s.taken,
        s.errors,
        s.min_margin,
        s.min_margin_at,
        s.availability_violations,
        s.duplicates.len(),
        s.step_regressions,
        s.max_step_jump,
        run.step_events,
        run.canaries,
        run.repeated_step_events,
        run.notifications,
        run.repeated_notifications,
    );
    for (shape, (min, floor)) in &s.min_available_by_shape {
        println!("    {label}: {shape}: fewest available {min} (floor {floor})");
    }
    for p in &run.problems {
        println!("    {label} problem: {p}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_updated_while_the_controller_is_killed_every_few_seconds_converges_without_duplicates_or_skipped_steps()
-> anyhow::Result<()> {
    let rollouts = env_or("CHAOS_ROLLOUTS", DEFAULT_ROLLOUTS)? as usize;
    let seed = env_or("CHAOS_SEED", DEFAULT_SEED)?;
    println!("kill_loop: {rollouts} Rollouts, seed {seed} (CHAOS_ROLLOUTS, CHAOS_SEED)");

    let baseline = update_fleet("chaos-base", rollouts, None).await?;
    report("without kills", &baseline);
    let chaos = update_fleet("chaos-kill", rollouts, Some(SeededRng::new(seed))).await?;
    report("with kills", &chaos);

    let violations = baseline.problems.len() + chaos.problems.len();
    let min_margin = [baseline.samples.min_margin, chaos.samples.min_margin].into_iter().flatten().min();
    println!(
        "kill_loop summary: N={rollouts} seed={seed} kills={} converge_with_kills={:.1}s converge_without_kills={:.1}s min_available_margin={} replica_sets={} (expected {}) violations={violations}",
        chaos.kills,
        chaos.converge.as_secs_f64(),
        baseline.converge.as_secs_f64(),
        min_margin.map_or("n/a".to_string(), |m| m.to_string()),
        chaos.replica_sets,
        2 * rollouts,
    );

    assert!(baseline.problems.is_empty(), "without any kill: {:#?}", baseline.problems);
    assert!(chaos.problems.is_empty(), "with {} kills: {:#?}", chaos.kills, chaos.problems);
    assert!(chaos.kills > 0, "the controller was never killed: the fleet converged before the first kill");
    assert!(baseline.samples.taken > 0 && chaos.samples.taken > 0, "availability was never sampled");
    assert_eq!(chaos.replica_sets, 2 * rollouts, "two ReplicaSets per Rollout: one per pod template");
    Ok(())
}
