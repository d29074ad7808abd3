//! A router over a made-up object, `spec.weight` being the canary's weight: for tests of the
//! code that reads objects and applies patches, without the shape of a real router.

use serde_json::{Value, json};

use crate::{Desired, Error, JsonPatch, Target, TrafficRouter, guarded, set_weight};

/// Drives `spec.weight` of the objects it names (kind `FakeRoute`, group `example.invalid`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FakeRouter {
    /// The objects, as (namespace, name).
    pub objects: Vec<(String, String)>,
}

impl TrafficRouter for FakeRouter {
    fn targets(&self) -> Vec<Target> {
        self.objects
            .iter()
            .map(|(namespace, name)| Target {
                group: "example.invalid",
                version: "v1",
                kind: "FakeRoute",
                plural: "fakeroutes",
                namespace: namespace.clone(),
                name: name.clone(),
            })
            .collect()
    }

    fn patch(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        if current.get("spec").is_none() {
            return Err(Error::Malformed { object: target.to_string(), message: "has no spec".into() });
        }
        let mut ops = Vec::new();
        set_weight(&mut ops, "/spec/weight".into(), current.pointer("/spec/weight"), desired.canary_weight);
        Ok(guarded(current, ops))
    }

    fn canary_weight(&self, _: &Target, current: &Value, _: &Desired) -> Result<Option<i32>, Error> {
        Ok(current.pointer("/spec/weight").and_then(Value::as_i64).and_then(|w| i32::try_from(w).ok()))
    }
}

/// A FakeRoute object carrying `weight`.
pub fn fake_route(name: &str, weight: i32) -> Value {
    json!({"apiVersion": "example.invalid/v1", "kind": "FakeRoute", "metadata": {"name": name}, "spec": {"weight": weight}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::apply;

    #[test]
    fn a_weight_is_patched_then_read_back() {
        let router = FakeRouter { objects: vec![("ns".into(), "r".into())] };
        let target = &router.targets()[0];
        let desired = crate::testing::desired(20);
        let before = fake_route("r", 0);
        let after = apply(&before, &router.patch(target, &before, &desired).unwrap().unwrap());
        assert_eq!(router.canary_weight(target, &after, &desired).unwrap(), Some(20));
        assert_eq!(router.patch(target, &after, &desired).unwrap(), None);
    }
}
