//! The chaos suite's shared parts: a fleet of Rollouts and what is sampled of it while faults
//! happen (`fleet`), a fault-injecting proxy between the controller and the API server
//! (`proxy`), and a webhook receiver that checks each notification arrives once
//! (`notifications`). The scenarios are in `tests/`; `scripts/just chaos` runs their full versions.

pub mod fleet;
pub mod notifications;
pub mod proxy;
