//! Every Rollout in examples/ decodes and plans without an InvalidSpec condition.

mod support;

use stepwise_api::Rollout;
use support::World;

#[test]
fn every_example_rollout_decodes_and_plans_a_first_deploy() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut rollouts = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // Manifests only: examples/plugins holds programs.
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            if value.get("kind").and_then(|k| k.as_str()) != Some("Rollout") {
                continue;
            }
            let ro: Rollout = serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut w = World::new(ro);
            w.settle(20);
            let st = w.status();
            assert!(!st.conditions.iter().any(|c| c.r#type == "InvalidSpec"), "{}: {:?}", path.display(), st.message);
            assert_eq!(st.phase, Some(stepwise_api::RolloutPhase::Healthy), "{}: {:?}", path.display(), st.message);
            rollouts += 1;
        }
    }
    assert!(rollouts >= 4, "found {rollouts} example Rollouts");
}

use serde::Deserialize;
