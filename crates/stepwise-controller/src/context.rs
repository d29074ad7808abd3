//! What every reconcile shares: the client, the caches, the event recorder, metrics and the
//! write limiter.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use stepwise_api::{AnalysisTemplate, ClusterAnalysisTemplate};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::observe::Stores;
use crate::router_plugin::RouterPlugins;

/// The analysis templates, read when an AnalysisRun is created.
#[derive(Clone)]
pub struct AnalysisStores {
    /// AnalysisTemplates.
    pub templates: Store<AnalysisTemplate>,
    /// ClusterAnalysisTemplates.
    pub cluster_templates: Store<ClusterAnalysisTemplate>,
}

/// Shared by all reconciles.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The caches of the objects a Rollout owns or names.
    pub stores: Stores,
    /// The caches of analysis templates.
    pub stores_analysis: AnalysisStores,
    /// Records Kubernetes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Limits API writes to the configured QPS and burst.
    pub limiter: Limiter,
    /// The router plugins the controller was started with (`--router-plugin`).
    pub router_plugins: Arc<RouterPlugins>,
    /// Every router the controller drives, by kind: built in, registered at start, and the
    /// router plugins.
    pub routers: Arc<stepwise_traffic::Routers>,
}

/// A token bucket: at most `burst` writes at once, refilled at `qps` per second.
pub struct Limiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// A limiter for `qps` writes per second with bursts of `burst`.
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Limiter { qps: qps.max(0.1), burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self.state.lock().await;
                let now = Instant::now();
                let refill = now.duration_since(state.1).as_secs_f64() * self.qps;
                state.0 = (state.0 + refill).min(self.burst);
                state.1 = now;
                if state.0 >= 1.0 {
                    state.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - state.0) / self.qps)
            };
            tokio::time::sleep(wait).await;
        }
    }
}
