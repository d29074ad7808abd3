//! Durations as users write them: Go-style strings (`30s`, `5m`, `1h30m`, `250ms`) or an
//! integer number of seconds (`30` or `"30"`).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration as StdDuration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::Error;

/// A duration as written in a manifest. It keeps the user's spelling so that a round trip
/// through the API does not rewrite the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Duration {
    /// Whole seconds.
    Seconds(i64),
    /// A Go-style duration string, or a decimal number of seconds as a string.
    Text(String),
}

impl Duration {
    /// A duration of whole seconds.
    pub fn seconds(s: i64) -> Self {
        Duration::Seconds(s)
    }

    /// The duration this value stands for.
    pub fn to_std(&self) -> Result<StdDuration, Error> {
        match self {
            Duration::Seconds(s) if *s >= 0 => Ok(StdDuration::from_secs(*s as u64)),
            Duration::Seconds(s) => {
                Err(Error::InvalidDuration { value: s.to_string(), reason: "a duration cannot be negative" })
            }
            Duration::Text(t) => parse_go_duration(t),
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Duration::Seconds(s) => write!(f, "{s}s"),
            Duration::Text(t) => f.write_str(t),
        }
    }
}

impl From<&str> for Duration {
    fn from(s: &str) -> Self {
        Duration::Text(s.to_string())
    }
}

/// The regular expression the API server applies to duration strings. It accepts the same
/// language as [`parse_go_duration`].
pub const DURATION_PATTERN: &str = r"^([0-9]+|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";

/// The value a refused duration had, as the refusal shows it: `"10x"`, or `-5`.
const SHOWN: &str = r#"(type(self) == int ? string(self) : '"' + self + '"')"#;

/// The schema of a duration in an analysis metric: a duration, or a whole `{{args.name}}` that
/// the AnalysisRun controller replaces before it reads the duration (Argo's own examples template
/// `interval` and `initialDelay`).
pub fn templatable_duration_schema(_: &mut SchemaGenerator) -> Schema {
    // Character classes instead of escapes: CEL string literals have no `\{` escape.
    let argument = "^[{][{] *args[.][-._a-zA-Z0-9]+ *[}][}]$";
    let rule = format!(
        "type(self) == int ? self >= 0 : (self.matches('{}') || self.matches('{argument}'))",
        DURATION_PATTERN.replace('\\', "\\\\")
    );
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "maxLength": 64,
        "x-kubernetes-validations": [
            {"rule": rule, "message": "must be a duration such as 30s, 5m or 1h30m, a number of seconds, or {{args.name}}",
             "messageExpression": format!("'must be a duration such as 30s, 5m or 1h30m, a number of seconds, or {{{{args.name}}}}, not ' + {SHOWN}")}
        ],
    })
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // A CEL rule rather than anyOf: the structural schema drops the branch types, after
        // which a pattern no longer applies to strings alone.
        let rule =
            format!("type(self) == int ? self >= 0 : self.matches('{}')", DURATION_PATTERN.replace('\\', "\\\\"));
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "maxLength": 32,
            "x-kubernetes-validations": [
                {"rule": rule, "message": "must be a duration such as 30s, 5m or 1h30m, or a number of seconds",
                 "messageExpression": format!("'must be a duration such as 30s, 5m or 1h30m, or a number of seconds, not ' + {SHOWN}")}
            ],
        })
    }
}

/// Parses a Go `time.ParseDuration` string without a sign, or a bare integer of seconds.
pub fn parse_go_duration(text: &str) -> Result<StdDuration, Error> {
    let err = |reason| Error::InvalidDuration { value: text.to_string(), reason };
    if text.is_empty() {
        return Err(err("empty duration"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text.parse().map_err(|_| err("number too large"))?;
        return Ok(StdDuration::from_secs(secs));
    }
    let mut total_nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit (use ns, us, ms, s, m or h)"))?;
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let (number, after) = rest.split_at(num_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(err("unknown unit (use ns, us, ms, s, m or h)")),
        };
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty() || frac_part.contains('.') || (number.contains('.') && frac_part.is_empty()) {
            return Err(err("malformed number"));
        }
        let int: u128 = int_part.parse().map_err(|_| err("number too large"))?;
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(|| err("duration too large"))?;
        let mut scale = unit_nanos;
        for digit in frac_part.bytes().take(18) {
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(|| err("duration too large"))?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| err("duration too large"))?;
    Ok(StdDuration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> f64 {
        parse_go_duration(text).unwrap().as_secs_f64()
    }

    #[test]
    fn go_style_strings_parse_like_go() {
        assert_eq!(secs("30s"), 30.0);
        assert_eq!(secs("5m"), 300.0);
        assert_eq!(secs("1h30m"), 5400.0);
        assert_eq!(secs("250ms"), 0.25);
        assert_eq!(secs("1.5h"), 5400.0);
        assert_eq!(secs("2m3s"), 123.0);
        assert_eq!(secs("45"), 45.0);
    }

    #[test]
    fn malformed_strings_are_rejected_with_a_reason() {
        for bad in ["", "s", "10x", "1.h", "-5s", "5 s", "1..5s", "m5"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn integer_and_string_forms_deserialize() {
        let d: Duration = serde_json::from_str("30").unwrap();
        assert_eq!(d.to_std().unwrap(), StdDuration::from_secs(30));
        let d: Duration = serde_json::from_str("\"1m\"").unwrap();
        assert_eq!(d.to_std().unwrap(), StdDuration::from_secs(60));
        assert!(Duration::Seconds(-1).to_std().is_err());
    }

    proptest::proptest! {
        #[test]
        fn the_schema_pattern_accepts_exactly_what_the_parser_accepts(s in "[0-9.a-zµ]{0,8}") {
            // The parser is the authority; the pattern must never admit a string the
            // controller would then reject.
            let re_ok = pattern_matches(&s);
            let parse_ok = parse_go_duration(&s).is_ok();
            if re_ok { proptest::prop_assert!(parse_ok, "pattern admits {s:?} but parser rejects it"); }
        }
    }

    /// A tiny matcher for [`DURATION_PATTERN`], to check it against the parser without a regex
    /// dependency.
    fn pattern_matches(s: &str) -> bool {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return true;
        }
        let mut rest = s;
        if rest.is_empty() {
            return false;
        }
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            if int_len == 0 {
                return false;
            }
            rest = &rest[int_len..];
            if let Some(r) = rest.strip_prefix('.') {
                let frac = r.bytes().take_while(u8::is_ascii_digit).count();
                if frac == 0 {
                    return false;
                }
                rest = &r[frac..];
            }
            let unit =
                ["ns", "us", "µs", "ms", "s", "m", "h"].iter().filter(|u| rest.starts_with(*u)).max_by_key(|u| u.len());
            match unit {
                Some(u) => rest = &rest[u.len()..],
                None => return false,
            }
        }
        true
    }
}
