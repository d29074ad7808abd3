//! `kubectl stepwise history` through the real kubectl against the local control plane and a
//! controller: three versions released one after the other, each with the change-cause it was
//! deployed with (as a GitOps commit brings them, in the same change as the image), an undo, then
//! an aborted update; the table, one revision in detail, and the data for scripts.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use stepwise_api::RolloutPhase;
use stepwise_api::operations::revision_of;
use stepwise_e2e::plugin_cli::{ok, stepwise};
use stepwise_e2e::{Env, secs};

const STEPS: &str = "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {}\n";

/// The image and its change-cause in one change, as an apply of a commit makes it.
async fn deploy(env: &Env, image: &str, cause: &str) -> anyhow::Result<()> {
    let patch = json!({
        "metadata": {"annotations": {"kubernetes.io/change-cause": cause}},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
    });
    let changed = env.rollouts().patch(&env.rollout, &PatchParams::default(), &Patch::Merge(patch)).await?;
    let generation = changed.metadata.generation;
    env.then("the controller to observe the change", secs(30), |ro| {
        ro.status.as_ref().and_then(|s| s.observed_generation) >= generation
    })
    .await?;
    env.then_paused_at_step(1, secs(60)).await
}

/// Promotes fully and waits until the new version is the stable one.
async fn promote(env: &Env) -> anyhow::Result<()> {
    env.when_promote_full().await?;
    env.then("promoted", secs(60), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.stable_rs.is_some() && st.stable_rs == st.current_pod_hash && st.phase == Some(RolloutPhase::Healthy)
    })
    .await
}

/// The table's rows, split on the runs of spaces between its columns (no cell has two spaces).
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|line| line.split("   ").map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect())
        .collect()
}

/// When each revision's ReplicaSet records it became stable, to the second, as the table shows it.
async fn recorded(env: &Env) -> anyhow::Result<Vec<(i64, Option<String>)>> {
    let mut records: Vec<(i64, Option<String>)> = env
        .replica_sets()
        .await?
        .iter()
        .map(|rs| {
            let since = rs.annotations().get("stepwise.dev/stable-since").map(|t| {
                let t: Timestamp = t.parse().expect("an RFC 3339 time");
                Timestamp::from_second(t.as_second()).unwrap().to_string()
            });
            (revision_of(rs.annotations()), since)
        })
        .collect();
    records.sort();
    Ok(records)
}

#[tokio::test(flavor = "multi_thread")]
async fn history_lists_each_revision_with_its_images_change_cause_and_when_it_was_stable() -> anyhow::Result<()> {
    let env = Env::new("history").await?;
    let started = Timestamp::from_second(Timestamp::now().as_second())?;
    env.given_rollout(2, STEPS).await?;

    deploy(&env, "example.invalid/demo:2", "deploy demo:2 (commit 2b7e)").await?;
    let midway = rows(&ok(&env.ns, &["history", "app"]).await?);
    assert_eq!(midway[0], ["REVISION", "STATUS", "STABLE-FROM", "STABLE-UNTIL", "IMAGES", "CHANGE-CAUSE"]);
    assert_eq!(midway[1][..2], ["1", "stable"], "{midway:?}");
    assert_eq!(midway[2], ["2", "canary", "-", "-", "app=example.invalid/demo:2", "deploy demo:2 (commit 2b7e)"]);
    promote(&env).await?;

    // Creation times have a resolution of one second: the versions a second apart at least.
    tokio::time::sleep(secs(1)).await;
    deploy(&env, "example.invalid/demo:3", "deploy demo:3 (commit 3c1d)").await?;
    promote(&env).await?;

    let records = recorded(&env).await?;
    let at = |revision: usize| records[revision - 1].1.clone().expect("every released revision recorded it");
    let (t1, t2, t3) = (at(1), at(2), at(3));
    assert!(started.to_string() <= t1 && t1 <= t2 && t2 <= t3, "in the order of the releases: {records:?}");
    let table = rows(&ok(&env.ns, &["history", "app"]).await?);
    assert_eq!(
        table[1..],
        [
            ["1", "-", t1.as_str(), t2.as_str(), "app=example.invalid/demo:1", "<none>"],
            ["2", "-", t2.as_str(), t3.as_str(), "app=example.invalid/demo:2", "deploy demo:2 (commit 2b7e)"],
            ["3", "stable", t3.as_str(), "-", "app=example.invalid/demo:3", "deploy demo:3 (commit 3c1d)"],
        ]
    );

    let detail = ok(&env.ns, &["history", "app", "--revision", "2"]).await?;
    assert!(detail.starts_with("Rollout app with revision #2\nReplicaSet:   app-"), "{detail}");
    assert!(detail.contains(&format!("Stable from:  {t2}\nStable until: {t3}\n")), "{detail}");
    assert!(detail.contains("Change-cause: deploy demo:2 (commit 2b7e)\nPod Template:\n"), "{detail}");
    assert!(detail.contains("\n    - image: example.invalid/demo:2\n"), "{detail}");
    let missing = stepwise(&env.ns, &["history", "app", "--revision", "9"]).await?;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("rollout \"app\" has no revision 9 (its revisions: 1, 2, 3)"),
        "{}",
        missing.stderr
    );

    // Back to demo:2: its ReplicaSet becomes revision 4, stable anew; demo:1 keeps its time.
    tokio::time::sleep(secs(1)).await;
    ok(&env.ns, &["undo", "app"]).await?;
    env.then_paused_at_step(1, secs(60)).await?;
    promote(&env).await?;
    let t4 = recorded(&env).await?.last().and_then(|(_, since)| since.clone()).expect("recorded");
    assert!(t3 <= t4, "{t3} then {t4}");
    let table = rows(&ok(&env.ns, &["history", "app"]).await?);
    assert_eq!(
        table[1..],
        [
            ["1", "-", t1.as_str(), t2.as_str(), "app=example.invalid/demo:1", "<none>"],
            ["3", "-", t3.as_str(), t4.as_str(), "app=example.invalid/demo:3", "deploy demo:3 (commit 3c1d)"],
            ["4", "stable", t4.as_str(), "-", "app=example.invalid/demo:2", "deploy demo:2 (commit 2b7e)"],
        ]
    );

    // An update aborted at its pause: the canary was never stable, demo:2 still is.
    deploy(&env, "example.invalid/demo:5", "deploy demo:5 (commit 5e0b)").await?;
    env.when_abort().await?;
    env.then_phase(RolloutPhase::Degraded, secs(60)).await?;
    let table = rows(&ok(&env.ns, &["history", "app"]).await?);
    assert_eq!(table[3][..4], ["4", "stable", t4.as_str(), "-"], "{table:?}");
    assert_eq!(table[4][..4], ["5", "canary,aborted", "-", "-"], "{table:?}");

    let data: serde_json::Value = serde_json::from_str(&ok(&env.ns, &["history", "app", "-o", "json"]).await?)?;
    let revisions = data["revisions"].as_array().cloned().unwrap_or_default();
    assert_eq!(revisions.iter().map(|r| r["revision"].as_i64()).collect::<Vec<_>>(), [1, 3, 4, 5].map(Some));
    assert_eq!(revisions[0]["stableFrom"], json!(t1));
    assert_eq!(revisions[0]["stableUntil"], json!(t2));
    assert_eq!(revisions[3]["changeCause"], "deploy demo:5 (commit 5e0b)");
    env.cleanup().await
}
