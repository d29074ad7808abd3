//! A line diff of two texts (pod templates as YAML), with a few lines of context around each
//! change, as `diff -u` shows it.

use serde::Serialize;

/// Lines of context kept around a change.
const CONTEXT: usize = 3;
/// Texts longer than this (in lines) are compared line by line without realignment: a template
/// that long is not read as a diff anyway, and the table below grows with the product.
const MAX_LINES: usize = 2_000;

/// One line of a diff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// `+` added, `-` removed, ` ` unchanged, `…` unchanged lines left out.
    pub op: &'static str,
    /// The line.
    pub text: String,
}

/// The lines that differ between `old` and `new`, with context; empty when they are the same.
pub fn diff(old: &str, new: &str) -> Vec<Line> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let all = if a.len() > MAX_LINES || b.len() > MAX_LINES { naive(&a, &b) } else { aligned(&a, &b) };
    with_context(all)
}

/// The longest common subsequence, then the edits around it.
fn aligned(a: &[&str], b: &[&str]) -> Vec<Line> {
    let (n, m) = (a.len(), b.len());
    // common[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] = if a[i] == b[j] { common[i + 1][j + 1] + 1 } else { common[i + 1][j].max(common[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, vec![]);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(line(" ", a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || common[i + 1][j] >= common[i][j + 1]) {
            out.push(line("-", a[i]));
            i += 1;
        } else {
            out.push(line("+", b[j]));
            j += 1;
        }
    }
    out
}

fn naive(a: &[&str], b: &[&str]) -> Vec<Line> {
    let mut out = vec![];
    for k in 0..a.len().max(b.len()) {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x == y => out.push(line(" ", x)),
            (x, y) => {
                out.extend(x.map(|x| line("-", x)));
                out.extend(y.map(|y| line("+", y)));
            }
        }
    }
    out
}

fn line(op: &'static str, text: &str) -> Line {
    Line { op, text: text.to_string() }
}

/// Keeps the changed lines and `CONTEXT` lines around each; a run of left-out lines is one `…`.
fn with_context(all: Vec<Line>) -> Vec<Line> {
    let changed: Vec<usize> = all.iter().enumerate().filter(|(_, l)| l.op != " ").map(|(i, _)| i).collect();
    if changed.is_empty() {
        return vec![];
    }
    let near = |i: usize| changed.iter().any(|&c| c.abs_diff(i) <= CONTEXT);
    let mut out = vec![];
    for (i, l) in all.into_iter().enumerate() {
        if near(i) {
            out.push(l);
        } else if out.last().is_none_or(|last: &Line| last.op != "…") {
            out.push(line("…", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(lines: &[Line]) -> String {
        lines.iter().map(|l| format!("{}{}", l.op, l.text)).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn the_same_text_has_no_diff() {
        assert!(diff("a\nb\n", "a\nb\n").is_empty());
    }

    #[test]
    fn a_changed_line_is_removed_then_added_among_its_context() {
        let old = "spec:\n  containers:\n  - name: app\n    image: app:1\n    ports: []\n";
        let new = "spec:\n  containers:\n  - name: app\n    image: app:2\n    ports: []\n";
        assert_eq!(
            ops(&diff(old, new)),
            " spec:\n   containers:\n   - name: app\n-    image: app:1\n+    image: app:2\n     ports: []"
        );
    }

    #[test]
    fn lines_far_from_a_change_are_left_out_once() {
        let old: String = (0..20).map(|i| format!("l{i}\n")).collect();
        let new = old.replace("l10\n", "changed\n");
        let d = diff(&old, &new);
        assert_eq!(d.first().map(|l| l.op), Some("…"));
        assert_eq!(d.last().map(|l| l.op), Some("…"));
        assert_eq!(d.iter().filter(|l| l.op == "…").count(), 2);
        assert_eq!(d.iter().filter(|l| l.op == " ").count(), 2 * CONTEXT);
    }

    #[test]
    fn an_inserted_line_is_only_added() {
        assert_eq!(ops(&diff("a\nc\n", "a\nb\nc\n")), " a\n+b\n c");
    }
}
