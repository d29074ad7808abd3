//! A router that records what it is asked, for tests of the controller.

use crate::{Error, TrafficRouter};

/// Records every weight it is given and reports it verified.
#[derive(Debug, Default)]
pub struct FakeRouter {
    /// Every weight set, in order.
    pub weights: Vec<i32>,
    /// How many times managed routes were removed.
    pub removals: usize,
}

impl TrafficRouter for FakeRouter {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn set_weight(&mut self, canary_weight: i32) -> Result<(), Error> {
        self.weights.push(canary_weight);
        Ok(())
    }
    fn verify_weight(&mut self, canary_weight: i32) -> Result<Option<bool>, Error> {
        Ok(Some(self.weights.last() == Some(&canary_weight)))
    }
    fn remove_managed_routes(&mut self) -> Result<(), Error> {
        self.removals += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_is_verified_only_once_it_was_set() {
        let mut router = FakeRouter::default();
        assert_eq!(router.verify_weight(20).unwrap(), Some(false));
        router.set_weight(20).unwrap();
        assert_eq!(router.verify_weight(20).unwrap(), Some(true));
        assert_eq!(router.weights, vec![20]);
    }
}
