//! Go text/template, as Argo's templates are written (`{{.rollout.metadata.name}}`), by gtmpl.
//!
//! The variables are JSON objects, which become gtmpl maps: as in Go with a
//! `map[string]interface{}`, a missing key renders `<no value>` and a field of a missing key
//! (`{{.rollout.missing.name}}`) is an error. JSON null becomes gtmpl's nil, which renders `nil`
//! (Go renders `<no value>`). gtmpl has Go's built-in functions (`eq`, `len`, `index`, `printf`,
//! …) but none of Sprig's.

use gtmpl::{Context, Template};
use serde_json::Value;

/// Parses `text`, to report a template that can never render when the configuration is read.
pub(crate) fn check(text: &str) -> Result<(), String> {
    if !needs_engine(text) {
        return Ok(());
    }
    Template::default().parse(text).map_err(|e| e.to_string())
}

/// Renders `text` with `vars` as the root (`.`).
pub(crate) fn render(text: &str, vars: &gtmpl::Value) -> Result<String, String> {
    if !needs_engine(text) {
        return Ok(text.to_string());
    }
    let mut template = Template::default();
    template.parse(text).map_err(|e| e.to_string())?;
    template.render(&Context::from(vars.clone())).map_err(|e| e.to_string())
}

/// Renders every string in `section` (a template's service section), keeping its shape: booleans
/// stay booleans. An error gives the path of the string, below `path`.
pub(crate) fn render_section(section: &Value, path: &str, vars: &gtmpl::Value) -> Result<Value, (String, String)> {
    match section {
        Value::String(text) => render(text, vars).map(Value::String).map_err(|e| (path.to_string(), e)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| render_section(item, &format!("{path}[{i}]"), vars))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| Ok((k.clone(), render_section(v, &format!("{path}.{k}"), vars)?)))
            .collect::<Result<_, _>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// Checks every string of `section` as [`check`] does; an error gives the string's path.
pub(crate) fn check_section(section: &Value, path: &str) -> Result<(), (String, String)> {
    match section {
        Value::String(text) => check(text).map_err(|e| (path.to_string(), e)),
        Value::Array(items) => {
            items.iter().enumerate().try_for_each(|(i, item)| check_section(item, &format!("{path}[{i}]")))
        }
        Value::Object(fields) => fields.iter().try_for_each(|(k, v)| check_section(v, &format!("{path}.{k}"))),
        _ => Ok(()),
    }
}

/// Text without an action is its own rendering; gtmpl also refuses an empty template.
fn needs_engine(text: &str) -> bool {
    text.contains("{{")
}

/// The JSON `value` as a gtmpl value: objects become maps (missing keys render `<no value>`, as
/// Go's maps do), null becomes nil.
pub(crate) fn to_gtmpl(value: &Value) -> gtmpl::Value {
    match value {
        Value::Null => gtmpl::Value::Nil,
        Value::Bool(b) => gtmpl::Value::Bool(*b),
        Value::Number(n) => number(n),
        Value::String(s) => gtmpl::Value::String(s.clone()),
        Value::Array(items) => gtmpl::Value::Array(items.iter().map(to_gtmpl).collect()),
        Value::Object(fields) => gtmpl::Value::Map(fields.iter().map(|(k, v)| (k.clone(), to_gtmpl(v))).collect()),
    }
}

/// A JSON number as the gtmpl number of the same kind, so that `3` prints `3`, not `3.0`.
fn number(n: &serde_json::Number) -> gtmpl::Value {
    if let Some(i) = n.as_i64() {
        gtmpl::Value::from(i)
    } else if let Some(u) = n.as_u64() {
        gtmpl::Value::from(u)
    } else {
        gtmpl::Value::from(n.as_f64().unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rendered(text: &str, vars: Value) -> Result<String, String> {
        render(text, &to_gtmpl(&vars))
    }

    #[test]
    fn argo_s_abort_message_renders_the_rollout_name() {
        let vars = json!({"rollout": {"metadata": {"name": "guestbook", "namespace": "shop"}}});
        let text = "Rollout {{.rollout.metadata.name}} has been aborted.";
        assert_eq!(rendered(text, vars).unwrap(), "Rollout guestbook has been aborted.");
    }

    #[test]
    fn numbers_booleans_lists_and_conditions_render_as_go_renders_them() {
        let vars = json!({"n": 3, "big": 18446744073709551615u64, "f": 0.5, "ok": true, "xs": ["a", "b"]});
        let text = "{{.n}} {{.big}} {{.f}} {{.ok}} {{len .xs}} {{index .xs 1}} {{if .ok}}yes{{else}}no{{end}}";
        assert_eq!(rendered(text, vars).unwrap(), "3 18446744073709551615 0.5 true 2 b yes");
        let text = "{{range .xs}}[{{.}}]{{end}}";
        assert_eq!(rendered(text, json!({"xs": ["a", "b"]})).unwrap(), "[a][b]");
    }

    #[test]
    fn a_missing_field_renders_no_value_and_a_field_of_it_is_an_error() {
        let vars = json!({"rollout": {"metadata": {}}});
        assert_eq!(rendered("[{{.rollout.metadata.name}}]", vars.clone()).unwrap(), "[<no value>]");
        assert!(rendered("{{.rollout.status.phase}}", vars).is_err());
    }

    #[test]
    fn null_renders_nil() {
        assert_eq!(rendered("{{.x}}", json!({"x": null})).unwrap(), "nil");
    }

    #[test]
    fn text_without_actions_is_kept_even_when_empty() {
        assert_eq!(rendered("", json!({})).unwrap(), "");
        assert_eq!(rendered("plain $text", json!({})).unwrap(), "plain $text");
        assert!(check("").is_ok());
    }

    #[test]
    fn a_template_that_does_not_parse_is_found_by_check() {
        assert!(check("{{.rollout.metadata.name").is_err());
        assert!(check("{{if .x}}open").is_err());
        assert!(check("{{.rollout.metadata.name}}").is_ok());
    }

    #[test]
    fn a_section_keeps_its_shape_and_an_error_gives_the_path_of_the_string() {
        let vars = to_gtmpl(&json!({"name": "guestbook"}));
        let section = json!({"ci": {"body": "{\"n\":\"{{.name}}\"}", "flag": true}});
        let out = render_section(&section, "webhook", &vars).unwrap();
        assert_eq!(out, json!({"ci": {"body": "{\"n\":\"guestbook\"}", "flag": true}}));
        let bad = json!({"ci": {"body": "{{.name.first}}"}});
        let (path, _) = render_section(&bad, "webhook", &vars).unwrap_err();
        assert_eq!(path, "webhook.ci.body");
        let (path, _) = check_section(&json!({"xs": ["ok", "{{"]}), "slack").unwrap_err();
        assert_eq!(path, "slack.xs[1]");
    }
}
