//! Argo Rollouts' analysis conditions (expr-lang) rewritten to CEL where the rewrite is mechanical:
//! `and`/`or`/`not` → `&&`/`||`/`!`, `len(x)` → `size(x)`, `nil` → `null`, and the closures
//! `all`/`any`/`none`/`one`/`filter`/`map`/`count(list, predicate with #)` → CEL's macros. What
//! has no mechanical CEL form is reported, and the condition left for a person to rewrite.

/// A condition after the rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The condition in CEL (or as far as it could be rewritten).
    pub text: String,
    /// What could not be rewritten, in words; empty when the rewrite is complete.
    pub left: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    /// An identifier or keyword.
    Ident(String),
    /// A string literal, as written.
    Str(String),
    /// An `{{args.x}}` placeholder, as written.
    Placeholder(String),
    /// Anything else, one operator or punctuation mark or number, as written.
    Other(String),
    /// Whitespace, as written.
    Space(String),
}

impl Tok {
    fn text(&self) -> &str {
        match self {
            Tok::Ident(s) | Tok::Str(s) | Tok::Placeholder(s) | Tok::Other(s) | Tok::Space(s) => s,
        }
    }
}

fn tokenize(text: &str) -> Vec<Tok> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let take = |from: usize, to: usize| chars[from..to].iter().collect::<String>();
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            toks.push(Tok::Space(take(start, i)));
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            toks.push(Tok::Ident(take(start, i)));
        } else if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(chars.len());
            toks.push(Tok::Str(take(start, i)));
        } else if c == '{' && chars.get(i + 1) == Some(&'{') {
            let end = text_find(&chars, i, "}}").map(|e| e + 2).unwrap_or(chars.len());
            i = end;
            toks.push(Tok::Placeholder(take(start, i)));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Other(take(start, i)));
        } else {
            let two = take(i, (i + 2).min(chars.len()));
            let len = if ["&&", "||", "==", "!=", "<=", ">=", "**", "??", "?.", ".."].contains(&two.as_str()) {
                2
            } else {
                1
            };
            i += len;
            toks.push(Tok::Other(take(start, i)));
        }
    }
    toks
}

fn text_find(chars: &[char], from: usize, needle: &str) -> Option<usize> {
    let needle: Vec<char> = needle.chars().collect();
    (from..chars.len().saturating_sub(needle.len() - 1)).find(|&i| chars[i..i + needle.len()] == needle[..])
}

/// The index of the `)` that closes the `(` at `open`, and the top-level commas between them.
fn call_bounds(toks: &[Tok], open: usize) -> Option<(usize, Vec<usize>)> {
    let mut depth = 0;
    let mut commas = Vec::new();
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t.text() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return Some((i, commas));
                }
            }
            "," if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    None
}

fn next_non_space(toks: &[Tok], from: usize) -> Option<usize> {
    (from..toks.len()).find(|&i| !matches!(toks[i], Tok::Space(_)))
}

/// Variable names for closures, innermost last; `#` of a closure nested in another gets the next.
const VARS: [&str; 4] = ["x", "y", "z", "w"];

/// Rewrites tokens; `depth` is the number of closures around them, whose innermost variable
/// (`VARS[depth - 1]`) `#` stands for.
fn rewrite_tokens(toks: &[Tok], depth: usize, left: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        match t {
            Tok::Ident(word) => {
                let prev = (0..i).rev().find(|&j| !matches!(toks[j], Tok::Space(_))).map(|j| toks[j].text());
                let member = prev == Some(".");
                let call = next_non_space(toks, i + 1).filter(|&j| toks[j].text() == "(");
                match (word.as_str(), call, member) {
                    ("and", _, false) => out.push_str("&&"),
                    ("or", _, false) => out.push_str("||"),
                    ("not", _, false) => {
                        let next = next_non_space(toks, i + 1).map(|j| toks[j].text());
                        if next == Some("in") {
                            left.push("`not in` has no CEL operator: write `!(a in b)`".into());
                            out.push_str(word);
                        } else {
                            out.push('!');
                            // `not x` → `!x`: the space after the keyword goes with it.
                            if let Some(Tok::Space(_)) = toks.get(i + 1) {
                                i += 1;
                            }
                        }
                    }
                    ("nil", _, false) => out.push_str("null"),
                    ("len", Some(open), false) => {
                        out.push_str("size");
                        i = open - 1;
                    }
                    ("all" | "any" | "none" | "one" | "filter" | "map" | "count", Some(open), false) => {
                        match closure(toks, word, open, depth, left) {
                            Some((text, close)) => {
                                out.push_str(&text);
                                i = close;
                            }
                            None => out.push_str(word),
                        }
                    }
                    ("matches" | "contains" | "startsWith" | "endsWith", None, false) => {
                        left.push(format!("the `{word}` operator: write `a.{word}(b)`"));
                        out.push_str(word);
                    }
                    _ => out.push_str(word),
                }
            }
            Tok::Other(op) if op == "**" || op == "??" || op == "?." || op == ".." => {
                left.push(format!("the `{op}` operator has no CEL equivalent"));
                out.push_str(op);
            }
            Tok::Other(op) if op == "#" => match depth.checked_sub(1).and_then(|d| VARS.get(d)) {
                Some(var) => out.push_str(var),
                None => {
                    left.push("`#` outside a closure".into());
                    out.push('#');
                }
            },
            Tok::Str(s) if s.starts_with('`') => {
                out.push_str(&format!("r\"{}\"", &s[1..s.len().saturating_sub(1)].replace('"', "\\\"")));
            }
            other => out.push_str(other.text()),
        }
        i += 1;
    }
    out
}

/// `all(list, pred)` → `list.all(x, pred)` with `#` → `x`; returns the text and the index of the
/// closing parenthesis.
fn closure(toks: &[Tok], word: &str, open: usize, depth: usize, left: &mut Vec<String>) -> Option<(String, usize)> {
    let (close, commas) = call_bounds(toks, open)?;
    let [comma] = commas[..] else { return None };
    let var = *VARS.get(depth)?;
    let list = rewrite_tokens(&toks[open + 1..comma], depth, left);
    // In the body `#` (alone, or `#.field`) is `var`; a closure nested in it takes the next one.
    let inner = rewrite_tokens(&toks[comma + 1..close], depth + 1, left);
    let (list, inner) = (list.trim(), inner.trim());
    // `a.b[0]` is a receiver as it is; `a + b` needs parentheses.
    let operator = |t: &Tok| matches!(t, Tok::Other(o) if ![".", "[", "]", "(", ")", "#"].contains(&o.as_str()) && !o.starts_with(|c: char| c.is_ascii_digit()));
    let list = if toks[open + 1..comma].iter().any(operator) { format!("({list})") } else { list.to_string() };
    let text = match word {
        "all" => format!("{list}.all({var}, {inner})"),
        "any" => format!("{list}.exists({var}, {inner})"),
        "none" => format!("!{list}.exists({var}, {inner})"),
        "one" => format!("{list}.exists_one({var}, {inner})"),
        "filter" => format!("{list}.filter({var}, {inner})"),
        "map" => format!("{list}.map({var}, {inner})"),
        "count" => format!("size({list}.filter({var}, {inner}))"),
        _ => return None,
    };
    Some((text, close))
}

/// Rewrites one expr-lang condition to CEL.
pub fn to_cel(condition: &str) -> Rewritten {
    let mut left = Vec::new();
    let text = rewrite_tokens(&tokenize(condition), 0, &mut left);
    left.dedup();
    Rewritten { text, left }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cel(expr: &str) -> String {
        let r = to_cel(expr);
        assert!(r.left.is_empty(), "{expr}: {:?}", r.left);
        r.text
    }

    #[test]
    fn a_closure_over_the_result_becomes_a_cel_macro() {
        assert_eq!(cel("all(result, # < 1)"), "result.all(x, x < 1)");
        assert_eq!(cel("any(result, # > 0.5)"), "result.exists(x, x > 0.5)");
        assert_eq!(cel("none(result, # == 0)"), "!result.exists(x, x == 0)");
        assert_eq!(cel("one(result, # >= 1)"), "result.exists_one(x, x >= 1)");
        assert_eq!(cel("count(result, # > 1) >= 2"), "size(result.filter(x, x > 1)) >= 2");
    }

    #[test]
    fn a_closure_over_fields_and_a_nested_closure_get_their_own_variables() {
        assert_eq!(cel("all(result.items, #.ok == true)"), "result.items.all(x, x.ok == true)");
        assert_eq!(cel("all(result, all(#, # > 0))"), "result.all(x, x.all(y, y > 0))");
    }

    #[test]
    fn word_operators_len_and_nil_become_cel() {
        assert_eq!(
            cel("len(result) > 0 and result[0] >= 0.95 or not isNil(result)"),
            "size(result) > 0 && result[0] >= 0.95 || !isNil(result)"
        );
        assert_eq!(cel("result != nil"), "result != null");
    }

    #[test]
    fn what_is_already_cel_is_left_as_it_is() {
        for same in ["result[0] >= 0.95", "result == 1", "isNaN(result[0]) || result[0] >= {{args.threshold}}"] {
            assert_eq!(cel(same), same);
        }
    }

    #[test]
    fn words_inside_strings_are_not_operators() {
        assert_eq!(cel("result.status == 'and or not'"), "result.status == 'and or not'");
    }

    #[test]
    fn what_has_no_mechanical_form_is_reported_and_kept() {
        let r = to_cel("result matches '^ok'");
        assert_eq!(r.text, "result matches '^ok'");
        assert_eq!(r.left, vec!["the `matches` operator: write `a.matches(b)`".to_string()]);
        assert!(!to_cel("result[0] ?? 0 > 1").left.is_empty());
        assert!(!to_cel("result not in [1, 2]").left.is_empty());
    }

    #[test]
    fn every_rewrite_compiles_as_cel() {
        for expr in ["all(result, # < 1)", "len(result) > 0 and not (result[0] < 0.9)", "count(result, # > 1) >= 2"] {
            let text = cel(expr);
            assert_eq!(stepwise_core::measure::check_condition(&text), Ok(()), "{text}");
        }
    }
}
