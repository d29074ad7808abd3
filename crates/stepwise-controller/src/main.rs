//! `stepwise-controller`: runs the Rollout controller against a Kubernetes API server.

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn main() -> anyhow::Result<()> {
    stepwise_controller::cli::main(stepwise_traffic::Routers::default())
}
