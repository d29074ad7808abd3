//! The thresholds a chart can draw from an analysis condition: each comparison of the measured
//! `result` with a number, in any CEL condition made of such comparisons joined by `&&` or `||`
//! (`result[0] < 0.05`, `0.9 <= result && result <= 1.1`, `double(result.p99) > 250.0`). A
//! comparison with anything else (another field, a function of two values) has no line to draw
//! and is left out; the condition's text is shown beside the chart anyway.

use serde::Serialize;

/// Which side of a line a condition holds on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The condition holds below (or at) the value.
    Upper,
    /// The condition holds above (or at) the value.
    Lower,
    /// The condition holds at the value only.
    Equal,
}

/// Whether the line comes from the success or the failure condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Of {
    /// The metric's successCondition.
    Success,
    /// The metric's failureCondition.
    Failure,
}

/// One line on a metric's chart.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bound {
    /// Where the line is.
    pub value: f64,
    /// Which side of it the condition holds on.
    pub kind: Side,
    /// Which condition it comes from.
    pub of: Of,
}

/// The lines of `condition`, in the order they are written.
pub fn bounds(condition: &str, of: Of) -> Vec<Bound> {
    terms(strip_parens(condition.trim())).into_iter().filter_map(|term| comparison(term, of)).collect()
}

/// The operands of the top-level `&&` and `||`, recursively through parentheses.
fn terms(expr: &str) -> Vec<&str> {
    let parts = split_top_level(expr);
    if parts.len() == 1 {
        let inner = strip_parens(expr);
        return if inner.len() < expr.len() { terms(inner) } else { vec![expr] };
    }
    parts.into_iter().flat_map(|p| terms(strip_parens(p.trim()))).collect()
}

fn split_top_level(expr: &str) -> Vec<&str> {
    let bytes = expr.as_bytes();
    let (mut depth, mut start, mut parts, mut i) = (0i32, 0, vec![], 0);
    let mut quote = None;
    while i < bytes.len() {
        let c = bytes[i];
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(c),
            (None, b'(' | b'[' | b'{') => depth += 1,
            (None, b')' | b']' | b'}') => depth -= 1,
            (None, b'&' | b'|') if depth == 0 && bytes.get(i + 1) == Some(&c) => {
                parts.push(&expr[start..i]);
                start = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&expr[start..]);
    parts
}

/// `expr` without parentheses around the whole of it.
fn strip_parens(expr: &str) -> &str {
    let Some(inner) = expr.strip_prefix('(').and_then(|e| e.strip_suffix(')')) else { return expr };
    let mut depth = 0;
    for c in inner.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth < 0 {
            return expr; // `(a) && (b)`: the first parenthesis closes before the end
        }
    }
    strip_parens(inner.trim())
}

const OPERATORS: [&str; 6] = ["<=", ">=", "==", "<", ">", "!="];

/// `result-expression OP number` or `number OP result-expression` as a line.
fn comparison(term: &str, of: Of) -> Option<Bound> {
    let (at, op) = OPERATORS.iter().filter_map(|op| term.find(op).map(|at| (at, *op))).min_by_key(|(at, _)| *at)?;
    let (left, right) = (term[..at].trim(), term[at + op.len()..].trim());
    let (value, op) = match (number(left), number(right)) {
        (None, Some(v)) if measures_result(left) => (v, op),
        (Some(v), None) if measures_result(right) => (v, mirrored(op)),
        _ => return None,
    };
    let kind = match op {
        "<" | "<=" => Side::Upper,
        ">" | ">=" => Side::Lower,
        "==" => Side::Equal,
        _ => return None,
    };
    Some(Bound { value, kind, of })
}

fn mirrored(op: &str) -> &str {
    match op {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        ">=" => "<=",
        other => other,
    }
}

/// A numeric literal, CEL's `double(...)`/`int(...)` of one too.
fn number(text: &str) -> Option<f64> {
    let text = text.trim();
    let inner = ["double(", "int(", "float("]
        .iter()
        .find_map(|f| text.strip_prefix(f).and_then(|t| t.strip_suffix(')')))
        .unwrap_or(text);
    inner.trim().trim_end_matches(['u', 'U']).parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Whether an operand is the measured value (`result`, `result[0]`, `double(result.p99)`), and
/// nothing but it: no second comparison, no other variable.
fn measures_result(text: &str) -> bool {
    let identifiers: Vec<&str> =
        text.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
    !identifiers.is_empty()
        && identifiers.contains(&"result")
        && identifiers.iter().all(|w| {
            *w == "result" || w.chars().all(|c| c.is_ascii_digit()) || ["double", "int", "float"].contains(w)
                // a field of the result (`result.p99`): follows a dot
                || text.contains(&format!(".{w}"))
        })
}

/// The number a measurement's value stands for: the value itself (`0.12`), or the first element
/// of a vector (`[0.12]`, `[0.12 0.3]`, Prometheus' form). None when it holds no number (`[]`,
/// `NaN`, a map).
pub fn measured_number(value: &str) -> Option<f64> {
    let value = value.trim();
    let first = value.trim_start_matches('[').split([' ', ',', ']']).find(|s| !s.is_empty())?;
    first.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(condition: &str) -> Vec<(f64, Side)> {
        bounds(condition, Of::Success).into_iter().map(|b| (b.value, b.kind)).collect()
    }

    #[test]
    fn a_comparison_of_the_first_result_with_a_number_is_one_line() {
        assert_eq!(lines("result[0] < 0.05"), vec![(0.05, Side::Upper)]);
        assert_eq!(lines("result >= 0.95"), vec![(0.95, Side::Lower)]);
    }

    #[test]
    fn a_number_on_the_left_is_read_the_other_way_round() {
        assert_eq!(lines("0.9 <= result[0]"), vec![(0.9, Side::Lower)]);
        assert_eq!(lines("250 > double(result.p99)"), vec![(250.0, Side::Upper)]);
    }

    #[test]
    fn a_range_is_two_lines_and_parentheses_do_not_matter() {
        assert_eq!(lines("(result[0] >= 0.9) && (result[0] <= 1.1)"), vec![(0.9, Side::Lower), (1.1, Side::Upper)]);
        assert_eq!(lines("((result > 1 || result < -1))"), vec![(1.0, Side::Lower), (-1.0, Side::Upper)]);
    }

    #[test]
    fn comparisons_without_the_result_or_a_number_are_left_out() {
        assert_eq!(lines("size(result) > 0 && result[0] < 5"), vec![(5.0, Side::Upper)]);
        assert!(lines("result[0] < result[1]").is_empty());
        assert!(lines("other > 3").is_empty());
        assert!(lines("isNaN(result[0])").is_empty());
        assert!(lines("result.phase == 'ok'").is_empty());
    }

    #[test]
    fn the_failure_condition_is_marked_as_such() {
        assert_eq!(
            bounds("result[0] > 0.1", Of::Failure),
            vec![Bound { value: 0.1, kind: Side::Lower, of: Of::Failure }]
        );
    }

    #[test]
    fn a_measured_value_is_the_number_or_the_first_of_a_vector() {
        assert_eq!(measured_number("0.12"), Some(0.12));
        assert_eq!(measured_number("[0.12]"), Some(0.12));
        assert_eq!(measured_number("[0.5 0.3]"), Some(0.5));
        assert_eq!(measured_number("[]"), None);
        assert_eq!(measured_number("NaN"), None);
        assert_eq!(measured_number("{\"a\":1}"), None);
    }
}
