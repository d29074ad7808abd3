//! Arguments: their values (literal or from a Secret), `{{args.name}}` substitution over the
//! JSON of a whole metric, and redaction of secret values from everything written to status.

use std::collections::BTreeMap;

use stepwise_api::{AnalysisRunSpec, Argument, Metric};

use super::SecretValues;

/// The Secrets (name, key) the run's args read through `valueFrom.secretKeyRef`, each once, in
/// the order the args name them.
pub fn secrets_needed(spec: &AnalysisRunSpec) -> Vec<(String, String)> {
    let mut needed: Vec<(String, String)> = Vec::new();
    for arg in spec.args.iter().flatten() {
        if let Some(r) = arg.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) {
            let pair = (r.name.clone(), r.key.clone());
            if !needed.contains(&pair) {
                needed.push(pair);
            }
        }
    }
    needed
}

/// Each argument's value, or why it has none. An argument is only an error where a metric uses
/// it, so an unused argument that cannot be resolved does not break the run.
#[derive(Clone, Debug, Default)]
pub(crate) struct ArgValues {
    values: BTreeMap<String, Result<String, String>>,
}

impl ArgValues {
    /// Resolves the run's arguments against the Secret values the controller read. Also returns
    /// the secret values, which must never be written to status.
    pub(crate) fn resolve(args: &[Argument], secrets: &SecretValues) -> (ArgValues, Vec<String>) {
        let mut values = BTreeMap::new();
        let mut secret = Vec::new();
        for arg in args {
            let value = resolve_one(arg, secrets);
            if let (Ok(v), true) = (&value, from_secret(arg)) {
                secret.push(v.clone());
            }
            values.insert(arg.name.clone(), value);
        }
        (ArgValues { values }, secret)
    }

    /// The value of `args.<name>`, or an error that names it.
    fn get(&self, name: &str) -> Result<&str, String> {
        match self.values.get(name) {
            Some(Ok(v)) => Ok(v),
            Some(Err(why)) => Err(format!("args.{name} was not resolved: {why}")),
            None => Err(format!("args.{name} was not resolved: the run has no argument {name}")),
        }
    }
}

fn from_secret(arg: &Argument) -> bool {
    arg.value_from.as_ref().is_some_and(|v| v.secret_key_ref.is_some())
}

fn resolve_one(arg: &Argument, secrets: &SecretValues) -> Result<String, String> {
    if let Some(v) = &arg.value {
        return Ok(v.clone());
    }
    let from = arg.value_from.as_ref();
    if let Some(r) = from.and_then(|f| f.secret_key_ref.as_ref()) {
        return secrets
            .get(&(r.name.clone(), r.key.clone()))
            .cloned()
            .ok_or_else(|| format!("key {} of Secret {} was not found", r.key, r.name));
    }
    if let Some(f) = from.and_then(|f| f.field_ref.as_ref()) {
        // The Rollout side resolves fieldRef before it creates the run; one left here is a run
        // created by hand or by another tool.
        return Err(format!("valueFrom.fieldRef {} is only resolved when a Rollout creates the run", f.field_path));
    }
    Err("it has neither a value nor a valueFrom".into())
}

/// The metric with every `{{args.name}}` replaced, wherever it appears: the substitution runs
/// over the metric's JSON, so durations, counts and limits can be templated too. Values are
/// JSON-escaped, so a quote in a value cannot change the metric's shape.
pub(crate) fn substitute(metric: &Metric, args: &ArgValues) -> Result<Metric, String> {
    let json = serde_json::to_string(metric).map_err(|e| e.to_string())?;
    if !json.contains("{{") {
        return Ok(metric.clone());
    }
    let replaced = replace_tags(&json, args)?;
    serde_json::from_str(&replaced).map_err(|e| format!("after substituting arguments: {e}"))
}

/// Replaces each `{{ tag }}`; like Argo, a tag that is not a known argument is an error.
fn replace_tags(text: &str, args: &ArgValues) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else { break };
        let tag = rest[open + 2..open + 2 + close].trim();
        out.push_str(&rest[..open]);
        out.push_str(&json_escape(lookup(tag, args)?));
        rest = &rest[open + 2 + close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup<'a>(tag: &str, args: &'a ArgValues) -> Result<&'a str, String> {
    match tag.strip_prefix("args.") {
        Some(name) => args.get(name.trim()),
        None => Err(format!("{{{{{tag}}}}} is not an argument: only {{{{args.NAME}}}} can be substituted")),
    }
}

/// The text of a JSON string literal, without its quotes.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// Replaces secret values by `*****` in text bound for status, events or logs.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secret values)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor for these values and their JSON-escaped spelling (as they appear in a value's
    /// JSON text).
    pub(crate) fn new(values: &[String]) -> Redactor {
        let mut secrets: Vec<String> = Vec::new();
        for v in values.iter().filter(|v| !v.is_empty()) {
            for form in [v.clone(), json_escape(v)] {
                if !secrets.contains(&form) {
                    secrets.push(form);
                }
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    /// The text with every secret value replaced.
    pub(crate) fn text(&self, s: &str) -> String {
        self.secrets.iter().fold(s.to_string(), |acc, secret| acc.replace(secret.as_str(), "*****"))
    }

    /// The same, for optional text.
    pub(crate) fn opt(&self, s: Option<String>) -> Option<String> {
        s.map(|s| self.text(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> ArgValues {
        let list: Vec<Argument> = pairs
            .iter()
            .map(|(n, v)| Argument { name: n.to_string(), value: Some(v.to_string()), value_from: None })
            .collect();
        ArgValues::resolve(&list, &SecretValues::new()).0
    }

    #[test]
    fn whitespace_inside_the_braces_is_ignored() {
        let a = args(&[("svc", "web")]);
        assert_eq!(replace_tags("up{job=\"{{ args.svc }}\"} {{args.svc}}", &a).unwrap(), "up{job=\"web\"} web");
    }

    #[test]
    fn a_value_with_quotes_is_escaped_for_json() {
        let a = args(&[("q", "a\"b")]);
        assert_eq!(replace_tags("\"{{args.q}}\"", &a).unwrap(), "\"a\\\"b\"");
    }

    #[test]
    fn an_unknown_tag_is_an_error_naming_it() {
        let err = replace_tags("{{ arg.x }}", &args(&[])).unwrap_err();
        assert!(err.contains("{{arg.x}} is not an argument"), "{err}");
    }

    #[test]
    fn an_unclosed_tag_is_left_alone() {
        assert_eq!(replace_tags("a {{ b", &args(&[])).unwrap(), "a {{ b");
    }

    #[test]
    fn redaction_replaces_the_longest_secret_first() {
        let r = Redactor::new(&["ab".into(), "abcd".into(), String::new()]);
        assert_eq!(r.text("xabcdx ab"), "x*****x *****");
    }
}
