//! The notifications ConfigMap: `trigger.<name>`, `template.<name>` and `service.<type>[.<name>]`
//! keys, read once into a [`Config`] so that a bad key is reported when the configuration is
//! read, not when a Rollout first needs it. Other keys (`subscriptions`, `context`,
//! `defaultTriggers`) are the controller's and are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::when::{Verdict, When};
use crate::{Error, Message, Service, service_type, template};

/// One condition of a trigger: when (a CEL expression over the template's variables) to send
/// which templates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The expression deciding whether the condition's templates are sent; always when absent.
    #[serde(default)]
    pub when: Option<String>,
    /// The templates sent, by name.
    pub send: Vec<String>,
    /// An expression whose value changing lets the trigger fire again (Argo's `oncePer`). Read, not
    /// evaluated: a notification is sent once per revision, trigger and step already.
    #[serde(default)]
    pub once_per: Option<String>,
    /// What the condition is for.
    #[serde(default)]
    pub description: Option<String>,
}

/// A parsed template: its `message`, and its sections by service kind, kept as JSON and rendered
/// for each message.
#[derive(Debug)]
struct TemplateSpec {
    message: String,
    sections: serde_json::Map<String, Value>,
}

/// A condition with its `when` compiled.
struct CompiledCondition {
    condition: Condition,
    when: Option<When>,
}

/// The parsed notifications configuration: triggers, templates and services with their secrets
/// resolved.
pub struct Config {
    triggers: BTreeMap<String, Vec<CompiledCondition>>,
    templates: BTreeMap<String, TemplateSpec>,
    services: BTreeMap<String, Box<dyn Service>>,
}

impl Config {
    /// Reads the ConfigMap's data `config`, resolving `$key` references of service configs from
    /// the Secret's data `secrets`.
    ///
    /// Errors name the key (`template.on-abort: ...`, `service.webhook.ci: url is missing`).
    pub fn parse(config: &BTreeMap<String, String>, secrets: &BTreeMap<String, String>) -> Result<Config, Error> {
        let templates = keys(config, "template.")
            .map(|(n, k, v)| Ok((n, parse_template(k, v)?)))
            .collect::<Result<BTreeMap<_, _>, Error>>()?;
        let triggers = keys(config, "trigger.")
            .map(|(n, k, v)| Ok((n, parse_trigger(k, v, &templates)?)))
            .collect::<Result<BTreeMap<_, _>, Error>>()?;
        let mut services = BTreeMap::new();
        for (rest, key, value) in keys(config, "service.") {
            let (name, service) = build_service(&rest, key, value, secrets)?;
            if services.insert(name.clone(), service).is_some() {
                return Err(Error::Config {
                    key: key.to_string(),
                    message: format!("another service is named {name}"),
                });
            }
        }
        Ok(Config { triggers, templates, services })
    }

    /// The configuration of a namespace's own ConfigMap `own` (Argo's self-service
    /// notifications): its services, whose `$key`s resolve from its own Secret `own_secrets` only
    /// (never the controller's, which a team could otherwise send to a receiver of its choosing),
    /// and its triggers and templates over those of the controller's ConfigMap `controller`, so
    /// that a team can use the platform's templates with its own Slack token.
    pub fn for_namespace(
        controller: &BTreeMap<String, String>,
        own: &BTreeMap<String, String>,
        own_secrets: &BTreeMap<String, String>,
    ) -> Result<Config, Error> {
        let shared = controller.iter().filter(|(key, _)| !key.starts_with("service."));
        let merged: BTreeMap<String, String> =
            shared.chain(own).map(|(key, value)| (key.clone(), value.clone())).collect();
        Config::parse(&merged, own_secrets)
    }

    /// Whether the ConfigMap data `config` configures a service named `name`, without building it.
    pub fn configures(config: &BTreeMap<String, String>, name: &str) -> bool {
        keys(config, "service.").any(|(rest, _, _)| service_name(&rest) == name)
    }

    /// The names of the triggers configured.
    pub fn triggers(&self) -> Vec<&str> {
        self.triggers.keys().map(String::as_str).collect()
    }

    /// Every condition of `trigger`, in order; None when it is not configured.
    pub fn conditions(&self, trigger: &str) -> Option<Vec<&Condition>> {
        Some(self.triggers.get(trigger)?.iter().map(|c| &c.condition).collect())
    }

    /// The messages `trigger` sends to the service named `service`: one per template the `send`
    /// lists of its conditions that hold name (once each, in order), rendered with `vars`, a JSON
    /// object (`rollout`: the Rollout; `notification`: trigger, revision, step, message, key; and
    /// what else the caller puts in). A condition holds when it has no `when`, or its `when`,
    /// evaluated with the same variables, is true.
    ///
    /// Errors when the trigger or the service is not configured, when no condition holds
    /// ([`Error::Unmet`], saying why), when a `when` cannot be evaluated, or when a template
    /// fails to render (naming the template and the field: `template.rollout-aborted:
    /// slack.attachments: ...`).
    pub fn render(&self, trigger: &str, service: &str, vars: &Value) -> Result<Vec<Message>, Error> {
        let conditions =
            self.triggers.get(trigger).ok_or_else(|| Error::UnknownTrigger { trigger: trigger.to_string() })?;
        let kind = self.service(service)?.kind();
        let mut sent = Vec::new();
        let mut unmet = Vec::new();
        for (index, compiled) in conditions.iter().enumerate() {
            let verdict = compiled.when.as_ref().map(|when| when.evaluate(vars)).transpose();
            match verdict.map_err(|message| Error::Condition { key: format!("trigger.{trigger}"), index, message })? {
                None | Some(Verdict::Holds) => sent.extend(&compiled.condition.send),
                Some(Verdict::Unmet(why)) => unmet.push(why),
            }
        }
        if sent.is_empty() {
            return Err(Error::Unmet { trigger: trigger.to_string(), why: unmet.join("; ") });
        }
        let vars = template::to_gtmpl(vars);
        let mut seen = BTreeSet::new();
        let names = sent.into_iter().filter(|name| seen.insert(name.as_str()));
        // Every name was checked against the templates by `parse`.
        names.map(|name| self.render_one(name, &self.templates[name], kind, service, &vars)).collect()
    }

    /// The service named `name` as subscriptions name it: `slack` for the key `service.slack`,
    /// `ci` for the key `service.webhook.ci`.
    pub fn service(&self, name: &str) -> Result<&dyn Service, Error> {
        self.services.get(name).map(Box::as_ref).ok_or_else(|| Error::UnknownService { name: name.to_string() })
    }

    /// Renders the template `name` for the service `service` of kind `kind`.
    fn render_one(
        &self,
        name: &str,
        spec: &TemplateSpec,
        kind: &str,
        service: &str,
        vars: &gtmpl::Value,
    ) -> Result<Message, Error> {
        let failed =
            |field: String, message: String| Error::Template { key: format!("template.{name}"), field, message };
        let text = template::render(&spec.message, vars).map_err(|e| failed("message".into(), e))?;
        let mut fields = BTreeMap::new();
        let service_type = service_type(kind).expect("every configured service has a type of SERVICES");
        let part = spec.sections.get(kind).and_then(|section| (service_type.section)(section, service));
        if let Some((path, part)) = part {
            let rendered = template::render_section(&part, &path, vars).map_err(|(f, e)| failed(f, e))?;
            let finished = (service_type.finish)(rendered).map_err(|(f, e)| failed(f, e))?;
            fields.insert(kind.to_string(), finished);
        }
        Ok(Message { template: name.to_string(), text, fields })
    }
}

impl fmt::Debug for Config {
    /// Names only: the services hold secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let services: BTreeMap<&str, &str> = self.services.iter().map(|(n, s)| (n.as_str(), s.kind())).collect();
        f.debug_struct("Config")
            .field("triggers", &self.triggers.keys().collect::<Vec<_>>())
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .field("services", &services)
            .finish()
    }
}

/// The keys of `config` starting with `prefix`: (the rest of the key, the key, its value).
fn keys<'a>(
    config: &'a BTreeMap<String, String>,
    prefix: &'a str,
) -> impl Iterator<Item = (String, &'a str, &'a str)> + 'a {
    config
        .iter()
        .filter_map(move |(key, value)| Some((key.strip_prefix(prefix)?.to_string(), key.as_str(), value.as_str())))
}

/// A `template.<name>` value: a YAML map of `message` and sections by service kind, every string
/// of which must parse as a Go template.
fn parse_template(key: &str, text: &str) -> Result<TemplateSpec, Error> {
    let invalid = |message: String| Error::Config { key: key.to_string(), message };
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| invalid(format!("not YAML: {e}")))?;
    let Value::Object(mut sections) =
        serde_json::to_value(&yaml).map_err(|e| invalid(format!("not a map of string keys: {e}")))?
    else {
        return Err(invalid("not a map (message, and a section per service)".into()));
    };
    let message = match sections.remove("message") {
        None => String::new(),
        Some(Value::String(text)) => text,
        Some(_) => return Err(invalid("message is not a string".into())),
    };
    let failed = |field: String, message: String| Error::Template { key: key.to_string(), field, message };
    template::check(&message).map_err(|e| failed("message".into(), e))?;
    for (kind, section) in &sections {
        template::check_section(section, kind).map_err(|(f, e)| failed(f, e))?;
    }
    Ok(TemplateSpec { message, sections })
}

/// A `trigger.<name>` value: a YAML list of conditions, each sending templates that exist, each
/// `when` compiled.
fn parse_trigger(
    key: &str,
    text: &str,
    templates: &BTreeMap<String, TemplateSpec>,
) -> Result<Vec<CompiledCondition>, Error> {
    let invalid = |message: String| Error::Config { key: key.to_string(), message };
    let conditions: Vec<Condition> =
        serde_yaml::from_str(text).map_err(|e| invalid(format!("not a list of conditions: {e}")))?;
    if conditions.is_empty() {
        return Err(invalid("no condition".into()));
    }
    for (i, condition) in conditions.iter().enumerate() {
        if condition.send.is_empty() {
            return Err(invalid(format!("condition {i} sends no template")));
        }
        if let Some(missing) = condition.send.iter().find(|name| !templates.contains_key(*name)) {
            return Err(invalid(format!("condition {i} sends template.{missing}, which is not configured")));
        }
    }
    conditions
        .into_iter()
        .enumerate()
        .map(|(index, condition)| {
            let when = condition.when.as_deref().map(str::trim).filter(|w| !w.is_empty());
            let when = when
                .map(|text| When::compile(text).map_err(|e| format!("`{text}` does not compile: {e}")))
                .transpose()
                .map_err(|message| Error::Condition { key: key.to_string(), index, message })?;
            Ok(CompiledCondition { condition, when })
        })
        .collect()
}

/// The service of the key `service.<rest>`, under its name: `<name>` of `<type>.<name>`, or
/// `<type>` alone.
fn build_service(
    rest: &str,
    key: &str,
    config: &str,
    secrets: &BTreeMap<String, String>,
) -> Result<(String, Box<dyn Service>), Error> {
    let (kind, name) = (rest.split_once('.').map_or(rest, |(kind, _)| kind), service_name(rest));
    let Some(service_type) = service_type(kind) else {
        let known: Vec<&str> = crate::SERVICES.iter().map(|t| t.kind).collect();
        let message = format!("the service type {kind} is not supported (only {})", known.join(", "));
        return Err(Error::Config { key: key.to_string(), message });
    };
    if name.is_empty() {
        return Err(Error::Config { key: key.to_string(), message: "the service has no name after the dot".into() });
    }
    Ok((name.to_string(), (service_type.build)(key, config, secrets)?))
}

/// The name of the service of the key `service.<rest>`: `<name>` of `<type>.<name>`, or `<type>`
/// alone.
fn service_name(rest: &str) -> &str {
    rest.split_once('.').map_or(rest, |(_, name)| name)
}

/// `$key` references in service configs, resolved from the Secret's data.
///
/// Every value resolved is remembered, so that the service can scrub it from the receiver's
/// answers before quoting them in errors.
pub(crate) struct Secrets<'a> {
    key: &'a str,
    values: &'a BTreeMap<String, String>,
    used: Vec<String>,
}

impl<'a> Secrets<'a> {
    /// Resolves references of the config under the ConfigMap key `key`.
    pub(crate) fn new(key: &'a str, values: &'a BTreeMap<String, String>) -> Self {
        Secrets { key, values, used: Vec::new() }
    }

    /// `text` with every `$name` replaced by the Secret's value of `name` (letters, digits, `-`,
    /// `_` and `.`, as Secret keys are); a `$` not followed by one is kept.
    pub(crate) fn resolve(&mut self, text: &str) -> Result<String, Error> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c))).unwrap_or(after.len());
            // A trailing dot ends a sentence more often than it ends a key.
            let name = after[..end].trim_end_matches('.');
            if name.is_empty() {
                out.push('$');
            } else {
                let value = self
                    .values
                    .get(name)
                    .ok_or_else(|| Error::MissingSecret { key: self.key.to_string(), secret: name.to_string() })?;
                out.push_str(value);
                self.used.push(value.clone());
            }
            rest = &after[name.len()..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Marks `value` as secret although it was written in the ConfigMap (a Slack webhook URL is a
    /// credential wherever it is kept).
    pub(crate) fn treat_as_secret(&mut self, value: &str) {
        self.used.push(value.to_string());
    }

    /// The secret values resolved, for [`crate::http::Redactor`].
    pub(crate) fn into_used(self) -> Vec<String> {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn references_are_replaced_anywhere_in_a_value_and_remembered() {
        let values = map(&[("token", "s3cr3t"), ("slack-path", "T0/B0/x"), ("a.b", "dotted")]);
        let mut secrets = Secrets::new("service.x", &values);
        assert_eq!(secrets.resolve("$token").unwrap(), "s3cr3t");
        assert_eq!(secrets.resolve("https://h/services/$slack-path?x=1").unwrap(), "https://h/services/T0/B0/x?x=1");
        assert_eq!(secrets.resolve("Bearer $a.b.").unwrap(), "Bearer dotted.");
        assert_eq!(secrets.resolve("costs $ 5 or $").unwrap(), "costs $ 5 or $");
        assert_eq!(secrets.into_used(), ["s3cr3t", "T0/B0/x", "dotted"]);
    }

    #[test]
    fn a_missing_reference_names_the_config_key_and_the_secret_key() {
        let values = map(&[("token", "s3cr3t")]);
        let err = Secrets::new("service.slack", &values).resolve("$tokn").unwrap_err();
        assert_eq!(err.to_string(), "service.slack: $tokn is not a key of the Secret");
    }
}
