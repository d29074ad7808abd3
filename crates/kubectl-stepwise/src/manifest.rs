//! Multi-document YAML as people write it: the documents of a file, where each starts, and the
//! line of a field inside one, so that `lint` and `convert` can point at what they report.

/// One non-empty document of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// 1-based position among the file's non-empty documents.
    pub number: usize,
    /// 1-based line of the file on which the document's text starts.
    pub first_line: usize,
    /// The document's text, without its `---` separator.
    pub text: String,
}

impl Document {
    /// The line of the file that holds `path` (e.g. `spec.strategy.canary.steps[1].setWeight`),
    /// or of its deepest ancestor written in block style; None when not even the first key is.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        locate(&self.text, path).map(|l| self.first_line + l - 1)
    }
}

/// The non-empty documents of a multi-document YAML text (separated by `---` lines). A document of
/// only comments and blank lines is no document, as for kubectl.
pub fn split(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    let mut push = |text: &mut String, first_line: usize| {
        let blank = text.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        });
        if !blank {
            docs.push(Document { number: docs.len() + 1, first_line, text: std::mem::take(text) });
        }
        text.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let is_separator = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_separator {
            push(&mut current, first_line);
            first_line = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    push(&mut current, first_line);
    docs
}

/// A segment of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_once('[').map(|(k, r)| (k, Some(r))).unwrap_or((part, None));
        if !key.is_empty() {
            out.push(Segment::Key(key.to_string()));
        }
        while let Some(r) = rest {
            let (index, after) = r.split_once(']').unwrap_or((r, ""));
            if let Ok(i) = index.parse() {
                out.push(Segment::Index(i));
            }
            rest = after.strip_prefix('[');
        }
    }
    out
}

/// A content line: the columns of its `- ` item markers, the column of what follows them, and
/// that text.
struct Line<'a> {
    dashes: Vec<usize>,
    column: usize,
    rest: &'a str,
}

fn parse_line(raw: &str) -> Option<Line<'_>> {
    let mut column = raw.len() - raw.trim_start_matches(' ').len();
    let mut rest = &raw[column..];
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    let mut dashes = Vec::new();
    while rest == "-" || rest.starts_with("- ") {
        dashes.push(column);
        let after = rest[1..].trim_start_matches(' ');
        column += rest.len() - after.len();
        rest = after;
    }
    Some(Line { dashes, column, rest })
}

fn first_column(line: &Line<'_>) -> usize {
    line.dashes.first().copied().unwrap_or(line.column)
}

fn key_of<'a>(line: &Line<'a>) -> Option<&'a str> {
    let rest = line.rest;
    let (key, _) = rest.split_once(':')?;
    Some(key.trim().trim_matches(|c| c == '"' || c == '\''))
}

/// 1-based line of `path` in a document, or of its deepest ancestor found (block style only).
fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<Option<Line<'_>>> = text.lines().map(parse_line).collect();
    // The scope being searched: lines [start, end) whose keys sit right of `parent`.
    let (mut start, mut end, mut parent): (usize, usize, Option<usize>) = (0, lines.len(), None);
    let mut found = None;
    for segment in segments(path) {
        match segment {
            Segment::Key(key) => {
                let candidates = (start..end).filter_map(|i| lines[i].as_ref().map(|l| (i, l)));
                let mut child_column = None;
                let mut hit = None;
                for (i, line) in candidates {
                    if parent.is_some_and(|p| line.column <= p) {
                        continue;
                    }
                    let column = *child_column.get_or_insert(line.column);
                    if line.column == column && key_of(line) == Some(key.as_str()) {
                        hit = Some((i, column));
                        break;
                    }
                }
                let Some((i, column)) = hit else { return found };
                found = Some(i + 1);
                // The value: following lines right of the key, or a sequence at its column.
                let mut j = i + 1;
                while j < end {
                    if let Some(l) = &lines[j] {
                        let first = first_column(l);
                        if first < column || (first == column && l.dashes.is_empty()) {
                            break;
                        }
                    }
                    j += 1;
                }
                (start, end, parent) = (i + 1, j, Some(column));
            }
            Segment::Index(index) => {
                let items: Vec<usize> =
                    (start..end).filter(|&i| lines[i].as_ref().is_some_and(|l| !l.dashes.is_empty())).collect();
                let Some(dash) = items.first().and_then(|&i| lines[i].as_ref()).map(|l| l.dashes[0]) else {
                    return found;
                };
                let items: Vec<usize> = items
                    .into_iter()
                    .filter(|&i| lines[i].as_ref().is_some_and(|l| l.dashes.first() == Some(&dash)))
                    .collect();
                let Some(&i) = items.get(index) else { return found };
                let next = items.get(index + 1).copied().unwrap_or(end);
                found = Some(i + 1);
                (start, end, parent) = (i, next, Some(dash));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLLOUT: &str = "apiVersion: stepwise.dev/v1alpha1
kind: Rollout
metadata:
  name: api
spec:
  strategy:
    canary:
      steps:
      - setWeight: 20
      - pause: {}
      - setWeight: 150
        pause:
          duration: 10s
  template:
    spec: {}
";

    #[test]
    fn finds_a_key_nested_in_the_third_step() {
        assert_eq!(locate(ROLLOUT, "spec.strategy.canary.steps[2].setWeight"), Some(11));
        assert_eq!(locate(ROLLOUT, "spec.strategy.canary.steps[2].pause.duration"), Some(13));
    }

    #[test]
    fn a_field_written_in_flow_style_is_found_at_its_deepest_block_ancestor() {
        assert_eq!(locate(ROLLOUT, "spec.strategy.canary.steps[1].pause.duration"), Some(10));
    }

    #[test]
    fn a_key_of_a_sibling_subtree_is_not_taken() {
        // `spec` of template, not the Rollout's spec.
        assert_eq!(locate(ROLLOUT, "spec.template.spec"), Some(15));
        assert_eq!(locate(ROLLOUT, "spec.nothing"), Some(5));
    }

    #[test]
    fn documents_are_numbered_and_placed_skipping_empty_ones() {
        let docs = split("---\n# only a comment\n---\na: 1\n---\nb: 2\nc: 3\n");
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].number, docs[0].first_line, docs[0].text.as_str()), (1, 4, "a: 1\n"));
        assert_eq!((docs[1].number, docs[1].first_line), (2, 6));
        assert_eq!(docs[1].line_of("c"), Some(7));
    }
}
