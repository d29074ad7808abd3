//! The stepwise controller: observe → plan → execute → status, for every Rollout.

pub mod analysis;
pub mod cli;
pub mod context;
pub mod error;
pub mod execute;
pub mod finalizer;
pub mod http;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod reconcile;
pub mod route;
pub mod router_plugin;
pub mod run;
pub mod shard;
pub mod telemetry;
