//! GitOps neutrality: what a user applies is what stays. The controller writes a Rollout's status
//! and nothing else, so a GitOps tool never sees drift it did not cause.

use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use stepwise_api::{Rollout, RolloutPhase};
use stepwise_e2e::{Env, secs};

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_without_replicas_is_defaulted_by_the_api_server_and_the_controller_never_writes_its_spec_or_metadata()
-> anyhow::Result<()> {
    let env = Env::new("gitops").await?;
    let rollout = json!({
        "apiVersion": "stepwise.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "app", "labels": {"team": "payments"}, "annotations": {"owner": "gitops"}},
        "spec": {
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {"metadata": {"labels": {"app": "demo"}}, "spec": {"containers": [{"name": "app", "image": "example.invalid/demo:1"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}}
        }
    });
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    let created = api.create(&PostParams::default(), &serde_json::from_value(rollout)?).await?;
    // The schema's default, so that the scale subresource (and an HPA) finds a value.
    assert_eq!(created.spec.replicas, Some(1));
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then("the new version promoted", secs(60), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.phase == Some(RolloutPhase::Healthy) && st.stable_rs == st.current_pod_hash
    })
    .await?;

    let after = env.get().await?;
    // Two generations: the create and the user's image change. A spec write by the controller
    // would be a third.
    assert_eq!(after.metadata.generation, Some(2), "the controller wrote the spec");
    assert_eq!(after.spec, { created.spec.clone() }.with_image("example.invalid/demo:2"));
    assert_eq!(after.metadata.labels, created.metadata.labels, "labels as applied");
    assert_eq!(after.metadata.annotations, created.metadata.annotations, "annotations as applied");
    assert_eq!(after.metadata.finalizers, created.metadata.finalizers, "no finalizer added");
    env.cleanup().await
}

trait WithImage {
    fn with_image(self, image: &str) -> Self;
}

impl WithImage for stepwise_api::RolloutSpec {
    fn with_image(mut self, image: &str) -> Self {
        if let Some(c) = self.template.as_mut().and_then(|t| t.spec.as_mut()).and_then(|s| s.containers.first_mut()) {
            c.image = Some(image.to_string());
        }
        self
    }
}
