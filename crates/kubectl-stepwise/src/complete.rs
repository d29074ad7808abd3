//! Answers kubectl's completion requests for `kubectl stepwise …`.
//!
//! Since 1.26 kubectl completes a plugin's arguments by running `kubectl_complete-<plugin>` from
//! PATH with the words typed after the plugin's name (the last one, possibly empty, is the word
//! being completed) and reading Cobra's `__complete` answer: one candidate per line (with a tab
//! and a description), then `:<directive>`. The same binary answers when it is called by that name
//! (a link to `kubectl-stepwise`) or as `kubectl-stepwise __complete WORDS…`.

use clap::{ArgAction, Command};

/// Cobra's directive: do not complete file names.
pub const NO_FILE_COMP: u32 = 4;
/// Cobra's directive: the shell's default (file names).
pub const DEFAULT: u32 = 0;

/// The name under which kubectl looks for the completion helper of the `stepwise` plugin.
pub const HELPER_NAME: &str = "kubectl_complete-stepwise";

fn takes_value(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Set | ArgAction::Append)
}

fn find_long<'a>(cmds: &[&'a Command], name: &str) -> Option<&'a clap::Arg> {
    cmds.iter().rev().flat_map(|c| c.get_arguments()).find(|a| a.get_long() == Some(name))
}

fn find_short<'a>(cmds: &[&'a Command], short: char) -> Option<&'a clap::Arg> {
    cmds.iter().rev().flat_map(|c| c.get_arguments()).find(|a| a.get_short() == Some(short))
}

fn possible_values(arg: &clap::Arg) -> Vec<String> {
    arg.get_possible_values().iter().filter(|v| !v.is_hide_set()).map(|v| v.get_name().to_string()).collect()
}

fn describe(text: Option<&clap::builder::StyledStr>) -> String {
    text.map(|t| t.to_string().lines().next().unwrap_or_default().trim_end_matches('.').to_string()).unwrap_or_default()
}

/// The candidates (`value` or `value\tdescription`) and the directive for `words`, the words after
/// `kubectl stepwise`; the last is the one being completed. `root` must be built
/// (`Command::build`), so that global flags are known to every subcommand.
pub fn complete(root: &Command, words: &[String]) -> (Vec<String>, u32) {
    let (current, before) = match words.split_last() {
        Some((last, before)) => (last.as_str(), before),
        None => ("", &[][..]),
    };
    let mut path: Vec<&Command> = vec![root];
    let mut positionals = 0;
    let mut pending: Option<&clap::Arg> = None;
    for word in before {
        if pending.take().is_some() {
            continue;
        }
        let cmd = *path.last().expect("root");
        if let Some(long) = word.strip_prefix("--") {
            if !long.contains('=') {
                pending = find_long(&path, long).filter(|a| takes_value(a));
            }
        } else if let Some(shorts) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            let last = shorts.chars().last().unwrap_or_default();
            pending = find_short(&path, last).filter(|a| takes_value(a) && shorts.len() == 1);
        } else if let Some(sub) = cmd.find_subcommand(word) {
            path.push(sub);
            positionals = 0;
        } else {
            positionals += 1;
        }
    }
    let cmd = *path.last().expect("root");
    // The value of a flag: its possible values, else file names for a file flag.
    if let Some(arg) = pending {
        let values = possible_values(arg);
        let files = arg.get_long() == Some("filename") || arg.get_long() == Some("kubeconfig");
        let directive = if values.is_empty() && files { DEFAULT } else { NO_FILE_COMP };
        return (values.into_iter().filter(|v| v.starts_with(current)).collect(), directive);
    }
    if current.starts_with('-') {
        // After `Command::build`, the global flags are among every subcommand's arguments.
        let flags = cmd
            .get_arguments()
            .filter(|a| !a.is_positional() && !a.is_hide_set())
            .filter_map(|a| Some((format!("--{}", a.get_long()?), a)))
            .filter(|(flag, _)| flag.starts_with(current))
            .map(|(flag, a)| format!("{flag}\t{}", describe(a.get_help())))
            .collect();
        return (flags, NO_FILE_COMP);
    }
    let mut candidates: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name().starts_with(current))
        .map(|s| format!("{}\t{}", s.get_name(), describe(s.get_about())))
        .collect();
    let positional = cmd.get_positionals().nth(positionals);
    if let Some(arg) = positional {
        candidates.extend(possible_values(arg).into_iter().filter(|v| v.starts_with(current)));
    }
    (candidates, NO_FILE_COMP)
}

/// The answer as kubectl reads it.
pub fn answer(root: &Command, words: &[String]) -> String {
    let (candidates, directive) = complete(root, words);
    let mut out = String::new();
    for c in candidates {
        out.push_str(&c);
        out.push('\n');
    }
    out.push_str(&format!(":{directive}\n"));
    out
}
