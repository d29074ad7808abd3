//! The stepwise controller with one more router: the built-in table, plus the example's row.

fn main() -> anyhow::Result<()> {
    let mut routers = stepwise_traffic::Routers::default();
    routers.register(stepwise_example_router::entry())?;
    stepwise_controller::cli::main(routers)
}
