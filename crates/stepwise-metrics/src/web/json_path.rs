//! The subset of kubectl's JSONPath that web metrics use: one value picked by keys and indexes,
//! e.g. `{$.data.items[0].ok}`. Wildcards, slices, filters and recursive descent are refused
//! with a clear message rather than half-supported.

use std::fmt;

use serde_json::Value;

/// One step down into a document.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// An object's member.
    Key(String),
    /// An array's element.
    Index(usize),
}

/// A parsed path, keeping its text for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

impl JsonPath {
    /// The path that selects the whole document (`{$}`).
    pub(crate) fn whole() -> Self {
        JsonPath { text: "{$}".into(), steps: Vec::new() }
    }

    /// Parses `{$.a.b[0]}`, `$.a.b[0]`, `{.a.b}`, `a.b` or `$['key.with.dots']`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let inner = match (trimmed.strip_prefix('{'), trimmed.ends_with('}')) {
            (Some(rest), true) => &rest[..rest.len() - 1],
            (None, false) => trimmed,
            _ => return Err(format!("{text:?} has unbalanced braces")),
        };
        let inner = inner.trim();
        let mut rest = inner.strip_prefix('$').unwrap_or(inner);
        let mut steps = Vec::new();
        // A path may start with a bare key (`a.b`), as kubectl's does after the `$`.
        if !rest.is_empty() && !rest.starts_with(['.', '[']) {
            let (key, after) = bare_key(rest);
            steps.push(Step::Key(key.to_string()));
            rest = after;
        }
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                if after.starts_with('.') {
                    return Err(format!("{text:?}: recursive descent (..) is not supported"));
                }
                let (key, after) = bare_key(after);
                if key.is_empty() {
                    return Err(format!("{text:?}: a '.' must be followed by a key"));
                }
                if key == "*" {
                    return Err(format!("{text:?}: wildcards are not supported"));
                }
                steps.push(Step::Key(key.to_string()));
                rest = after;
            } else if let Some(after) = rest.strip_prefix('[') {
                let close = after.find(']').ok_or_else(|| format!("{text:?}: '[' without ']'"))?;
                let (inside, after) = (after[..close].trim(), &after[close + 1..]);
                steps.push(bracket(text, inside)?);
                rest = after;
            } else {
                return Err(format!("{text:?}: unexpected {:?}", rest.chars().next().unwrap_or_default()));
            }
        }
        Ok(JsonPath { text: text.to_string(), steps })
    }

    /// The value the path selects, or `None` when a key or index is missing.
    pub(crate) fn select<'a>(&self, document: &'a Value) -> Option<&'a Value> {
        self.steps.iter().try_fold(document, |value, step| match step {
            Step::Key(key) => value.as_object()?.get(key),
            Step::Index(i) => value.as_array()?.get(*i),
        })
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits a key that ends at the next `.` or `[`.
fn bare_key(s: &str) -> (&str, &str) {
    let end = s.find(['.', '[']).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// `[3]`, `['key']` or `["key"]`.
fn bracket(text: &str, inside: &str) -> Result<Step, String> {
    for quote in ['\'', '"'] {
        if let Some(key) = inside.strip_prefix(quote).and_then(|s| s.strip_suffix(quote)) {
            return Ok(Step::Key(key.to_string()));
        }
    }
    inside.parse::<usize>().map(Step::Index).map_err(|_| {
        format!("{text:?}: [{inside}] is not supported (use an index like [0] or a quoted key like ['a.b'])")
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pick(path: &str, doc: &Value) -> Option<Value> {
        JsonPath::parse(path).unwrap().select(doc).cloned()
    }

    #[test]
    fn braces_dollar_and_leading_dot_are_all_optional() {
        let doc = json!({"data": {"ok": true}});
        for path in ["{$.data.ok}", "$.data.ok", "{.data.ok}", ".data.ok", "data.ok", " { $.data.ok } "] {
            assert_eq!(pick(path, &doc), Some(json!(true)), "{path}");
        }
    }

    #[test]
    fn the_root_selects_the_whole_document() {
        let doc = json!({"a": [1, 2]});
        for path in ["{$}", "$", "{}", ""] {
            assert_eq!(pick(path, &doc), Some(doc.clone()), "{path}");
        }
        assert_eq!(JsonPath::whole().select(&doc), Some(&doc));
    }

    #[test]
    fn indexes_and_quoted_keys_reach_into_arrays_and_dotted_names() {
        let doc = json!({"items": [{"v": 1.5}, {"v": 2}], "a.b": {"c": "x"}});
        assert_eq!(pick("{$.items[1].v}", &doc), Some(json!(2)));
        assert_eq!(pick("$.items[0]", &doc), Some(json!({"v": 1.5})));
        assert_eq!(pick("$['a.b'].c", &doc), Some(json!("x")));
        assert_eq!(pick("$[\"a.b\"][\"c\"]", &doc), Some(json!("x")));
        assert_eq!(pick("$.items", &json!({"items": []})), Some(json!([])));
    }

    #[test]
    fn missing_keys_out_of_range_indexes_and_wrong_types_select_nothing() {
        let doc = json!({"items": [1], "n": 3});
        assert_eq!(pick("$.nope", &doc), None);
        assert_eq!(pick("$.items[1]", &doc), None);
        assert_eq!(pick("$.n.x", &doc), None);
        assert_eq!(pick("$.n[0]", &doc), None);
        assert_eq!(pick("$.items.x", &doc), None);
    }

    #[test]
    fn a_null_member_is_selected_as_null() {
        assert_eq!(pick("$.a", &json!({"a": null})), Some(Value::Null));
    }

    #[test]
    fn unsupported_syntax_is_refused_with_the_path_in_the_message() {
        for path in ["{$.a", "$.a}", "$..a", "$.a.*", "$.a[*]", "$.a[-1]", "$.a[0:2]", "$.a[?(@.x)]", "$.", "$.a[0"] {
            let err = JsonPath::parse(path).unwrap_err();
            assert!(err.contains(&format!("{path:?}")), "{path}: {err}");
        }
    }
}
