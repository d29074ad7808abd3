//! The chaos suite's shared parts: a fleet of Rollouts and what is sampled of it while faults
//! happen (`fleet`), and a fault-injecting proxy between the controller and the API server
//! (`proxy`). The scenarios are in `tests/`; `scripts/just chaos` runs their full versions.

pub mod fleet;
pub mod proxy;
