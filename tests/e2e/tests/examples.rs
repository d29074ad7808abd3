//! Every manifest in examples/ applies with kubectl as a user would, and each of its Rollouts
//! reaches Healthy: the examples the docs point to work as written.

use std::path::PathBuf;
use std::process::Command;

use kube::Api;
use stepwise_api::{Rollout, RolloutPhase};
use stepwise_e2e::{Env, eventually, kubeconfig_path, kubectl_path, repo_root, secs};

#[tokio::test(flavor = "multi_thread")]
async fn every_example_applies_and_its_rollouts_become_healthy() -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(repo_root().join("examples"))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"));
    files.sort();
    assert!(files.len() >= 8, "examples found: {files:?}");
    for file in files {
        let name = file.file_stem().unwrap_or_default().to_string_lossy().to_string();
        let env = Env::new(&format!("ex-{}", name.chars().take(20).collect::<String>())).await?;
        let out = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(["apply", "-n", &env.ns, "-f"])
            .arg(&file)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl apply -f {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let rollouts: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
        let names: Vec<String> =
            rollouts.list(&Default::default()).await?.items.into_iter().filter_map(|r| r.metadata.name).collect();
        anyhow::ensure!(!names.is_empty(), "{} has no Rollout", file.display());
        for rollout in names {
            eventually(&format!("{name}: Rollout {rollout} Healthy"), secs(60), || async {
                let ro = rollouts.get(&rollout).await?;
                Ok(ro.status.and_then(|s| s.phase) == Some(RolloutPhase::Healthy))
            })
            .await?;
        }
        env.cleanup().await?;
    }
    Ok(())
}
