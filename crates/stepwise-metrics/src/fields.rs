//! Reading the configuration of Argo's providers, which the API keeps as written: each field on
//! its own first, so that an error names it, and the secrets a provider used kept out of its
//! errors.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;

/// Deserializes one field as `T` (when present), naming `path` in the error.
pub(crate) fn check_field<T: DeserializeOwned>(
    fields: &Map<String, Value>,
    key: &str,
    path: &'static str,
) -> Result<(), Error> {
    match fields.get(key) {
        None => Ok(()),
        Some(value) => {
            T::deserialize(value.clone()).map(drop).map_err(|e| Error::Config { field: path, message: e.to_string() })
        }
    }
}

/// A measured value as JSON: a number, or Prometheus' spelling of NaN and the infinities
/// (`"NaN"`, `"+Inf"`, `"-Inf"`), which JSON cannot hold and conditions read as numbers again.
pub(crate) fn json_number(v: f64) -> Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::from("NaN"),
        None if v > 0.0 => Value::from("+Inf"),
        None => Value::from("-Inf"),
    }
}

/// What a JSON value is, for messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl Error {
    /// This error with every one of `secrets` (a token, an API key) replaced by `*****`, should
    /// the service have echoed it. Shorter than 4 characters, a secret is left: replacing it
    /// would garble the message and hide nothing.
    pub(crate) fn without_secrets(self, secrets: &[&str]) -> Error {
        let clean = |text: String| {
            secrets.iter().filter(|s| s.len() >= 4).fold(text, |text, secret| text.replace(secret, "*****"))
        };
        match self {
            Error::Source { target, message } => Error::Source { target: clean(target), message: clean(message) },
            Error::Answer { message } => Error::Answer { message: clean(message) },
            Error::Timeout { seconds, target } => Error::Timeout { seconds, target: clean(target) },
            Error::Config { field, message } => Error::Config { field, message: clean(message) },
            other => other,
        }
    }
}
