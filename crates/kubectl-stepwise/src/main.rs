//! `kubectl stepwise`: the command-line plugin. Its commands (get, promote, abort, retry, undo,
//! status) arrive with the plugin issue; until then it names them and says where they stand.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("version") => println!(
            "kubectl-stepwise {} (API {}/{})",
            env!("CARGO_PKG_VERSION"),
            stepwise_api::GROUP,
            stepwise_api::VERSION
        ),
        _ => {
            eprintln!(
                "kubectl stepwise: the plugin's commands are not built yet; see docs/operations.md for the fields to patch"
            );
            std::process::exit(2);
        }
    }
}
