//! Schema parity with Argo Rollouts: every field of Argo's own `v1alpha1` CRDs (Rollout,
//! AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun, Experiment), taken from Argo's Go module
//! at the version pinned in `tests/cluster/argo-crds.sh`, is either in our schema or listed in
//! `argo_parity.tsv` with its status and the reason. The table at the end of
//! `docs/compatibility.md` is generated from both; `UPDATE_COMPAT=1 cargo test -p stepwise-api
//! --test argo_parity` rewrites it.
//!
//! `argo_parity.tsv`: one row per line, `Kinds:path<TAB>status<TAB>reason`, where
//! - `Kinds` is one kind or several separated by commas (`AnalysisTemplate,AnalysisRun`);
//! - `path` is an Argo field path: `.` between properties, `[]` for the items of an array, `{}`
//!   for the values of a map (`spec.strategy.canary.steps[].setWeight`); `path.*` is that field
//!   and everything under it, and `*` alone the whole kind; the most specific row wins;
//! - `status` is `same`, `differs`, `not-supported` or `not-yet`; every status but `same` needs
//!   a reason. A field our schema has and no row names is `same`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The kinds compared, and the file of each in Argo's `manifests/crds/`.
const KINDS: [(&str, &str); 5] = [
    ("Rollout", "rollout-crd.yaml"),
    ("AnalysisTemplate", "analysis-template-crd.yaml"),
    ("ClusterAnalysisTemplate", "cluster-analysis-template-crd.yaml"),
    ("AnalysisRun", "analysis-run-crd.yaml"),
    ("Experiment", "experiment-crd.yaml"),
];

const BEGIN: &str = "<!-- argo-parity:begin -->";
const END: &str = "<!-- argo-parity:end -->";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn table_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/argo_parity.tsv")
}

// ---------------------------------------------------------------------------------------------
// The rows of argo_parity.tsv.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Same,
    Differs,
    NotSupported,
    NotYet,
}

impl Status {
    fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "same" => Status::Same,
            "differs" => Status::Differs,
            "not-supported" => Status::NotSupported,
            "not-yet" => Status::NotYet,
            _ => return None,
        })
    }

    fn words(self) -> &'static str {
        match self {
            Status::Same => "same",
            Status::Differs => "differs",
            Status::NotSupported => "not supported",
            Status::NotYet => "not yet",
        }
    }
}

#[derive(Debug)]
struct Row {
    line: usize,
    kinds: Vec<String>,
    /// The path without a trailing `.*`; empty for `*` (the whole kind).
    path: String,
    subtree: bool,
    status: Status,
    reason: String,
}

impl Row {
    /// How specific the row is for `path` of `kind`, when it applies: an exact row beats any
    /// subtree, a deeper subtree beats a shallower one.
    fn specificity(&self, kind: &str, path: &str) -> Option<usize> {
        if !self.kinds.iter().any(|k| k == kind) {
            return None;
        }
        if path == self.path {
            return Some(if self.subtree { self.path.len() * 2 } else { usize::MAX });
        }
        let below = self.path.is_empty()
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('[') || rest.starts_with('{'));
        (self.subtree && below).then_some(self.path.len() * 2 + 1)
    }
}

fn parse_rows(text: &str) -> Result<Vec<Row>, Vec<String>> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let known: BTreeSet<&str> = KINDS.iter().map(|(k, _)| *k).collect();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let [target, status, reason] = cols[..] else {
            errors.push(format!("argo_parity.tsv:{line_no}: expected `Kinds:path<TAB>status<TAB>reason`"));
            continue;
        };
        let Some((kinds, path)) = target.split_once(':') else {
            errors.push(format!("argo_parity.tsv:{line_no}: `{target}` has no `Kinds:` prefix"));
            continue;
        };
        let kinds: Vec<String> = kinds.split(',').map(|k| k.trim().to_string()).collect();
        for kind in &kinds {
            if !known.contains(kind.as_str()) {
                errors.push(format!("argo_parity.tsv:{line_no}: unknown kind `{kind}`"));
            }
        }
        let Some(status) = Status::parse(status) else {
            errors.push(format!(
                "argo_parity.tsv:{line_no}: status `{status}` is not one of same, differs, not-supported, not-yet"
            ));
            continue;
        };
        if status != Status::Same && reason.trim().is_empty() {
            errors.push(format!("argo_parity.tsv:{line_no}: a `{}` row needs a reason", status.words()));
        }
        let (path, subtree) = match path {
            "*" => (String::new(), true),
            p => match p.strip_suffix(".*") {
                Some(p) => (p.to_string(), true),
                None => (p.to_string(), false),
            },
        };
        rows.push(Row { line: line_no, kinds, path, subtree, status, reason: reason.trim().to_string() });
    }
    let mut seen = BTreeMap::new();
    for row in &rows {
        for kind in &row.kinds {
            if let Some(first) = seen.insert((kind.clone(), row.path.clone(), row.subtree), row.line) {
                errors.push(format!("argo_parity.tsv:{}: repeats the row of line {first} for {kind}", row.line));
            }
        }
    }
    if errors.is_empty() { Ok(rows) } else { Err(errors) }
}

// ---------------------------------------------------------------------------------------------
// The schemas: Argo's, walked field by field, each looked up in ours.

/// The type of a schema node, as far as a manifest is concerned.
fn type_of(schema: &Value) -> &str {
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return "int-or-string";
    }
    schema.get("type").and_then(Value::as_str).unwrap_or("any")
}

/// Whether every value of Argo's type is a value of ours.
fn accepts(ours: &str, argo: &str) -> bool {
    ours == argo
        || ours == "any"
        || (ours == "int-or-string" && matches!(argo, "integer" | "string"))
        || (ours == "number" && argo == "integer")
}

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
        && schema.get("properties").is_none()
}

/// A sub-schema of ours, looking through allOf/anyOf/oneOf.
fn find<'a>(schema: &'a Value, step: &Step) -> Option<&'a Value> {
    let direct = match step {
        Step::Property(name) => schema.get("properties").and_then(|p| p.get(name.as_str())),
        Step::Items => schema.get("items"),
        Step::Values => schema.get("additionalProperties").filter(|v| v.is_object()),
    };
    direct.or_else(|| {
        ["allOf", "anyOf", "oneOf"]
            .iter()
            .filter_map(|key| schema.get(*key).and_then(Value::as_array))
            .flatten()
            .find_map(|sub| find(sub, step))
    })
}

enum Step {
    Property(String),
    Items,
    Values,
}

/// A schema without a type: any value.
static ANY: Value = Value::Null;

/// Where an Argo field stands in our schema.
#[derive(Clone, Copy)]
enum Ours<'a> {
    /// Our schema has the field, with this sub-schema.
    Has(&'a Value),
    /// Inside an object our schema keeps as written (`x-kubernetes-preserve-unknown-fields`).
    Kept,
    /// The API server refuses the field: `unknown field`.
    Refused,
}

impl<'a> Ours<'a> {
    fn step(self, step: &Step) -> Ours<'a> {
        match self {
            Ours::Has(schema) if preserves_unknown(schema) => Ours::Kept,
            Ours::Has(schema) => find(schema, step).map_or(Ours::Refused, Ours::Has),
            other => other,
        }
    }
}

/// What our schema does with one Argo field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Schema {
    Accepted,
    /// Accepted with a narrower type: (Argo's type, ours).
    Narrower(String, String),
    Refused,
}

impl Schema {
    fn words(&self) -> String {
        match self {
            Schema::Accepted => "accepted".to_string(),
            Schema::Narrower(argo, ours) => format!("{ours} only (Argo: {argo})"),
            Schema::Refused => "refused".to_string(),
        }
    }
}

/// One Argo field and its classification.
struct Field {
    path: String,
    /// Inside an object our schema keeps as written (a pod template, a Job spec): Kubernetes'
    /// own fields, counted apart.
    kept: bool,
    schema: Schema,
    status: Status,
    reason: String,
    children: Vec<Field>,
}

impl Field {
    fn key(&self) -> (Status, Schema, &str) {
        (self.status, self.schema.clone(), &self.reason)
    }

    fn all(&self) -> Vec<&Field> {
        let mut out = vec![self];
        for child in &self.children {
            out.extend(child.all());
        }
        out
    }
}

struct Walk<'r> {
    kind: &'r str,
    rows: &'r [Row],
    used: BTreeSet<usize>,
    errors: Vec<String>,
}

impl Walk<'_> {
    fn row(&self, path: &str) -> Option<&Row> {
        self.rows
            .iter()
            .filter_map(|r| r.specificity(self.kind, path).map(|s| (s, r)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, r)| r)
    }

    fn field(&mut self, path: String, argo: &Value, ours: Ours) -> Field {
        let schema = match ours {
            Ours::Refused => Schema::Refused,
            Ours::Kept => Schema::Accepted,
            Ours::Has(s) if accepts(type_of(s), type_of(argo)) => Schema::Accepted,
            Ours::Has(s) => Schema::Narrower(type_of(argo).to_string(), type_of(s).to_string()),
        };
        let (status, reason) = match self.row(&path).map(|r| (r.line, r.status, r.reason.clone())) {
            Some((line, status, reason)) => {
                self.used.insert(line);
                (status, reason)
            }
            None => (Status::Same, String::new()),
        };
        let at = format!("{}:{}", self.kind, if path.is_empty() { "*" } else { &path });
        match (&schema, status) {
            (Schema::Refused, Status::Same) => self.errors.push(format!(
                "{at}: Argo has it, our schema refuses it (unknown field), and argo_parity.tsv does not say why"
            )),
            (Schema::Narrower(argo, ours), Status::Same) => self
                .errors
                .push(format!("{at}: Argo's type is {argo}, ours {ours}, and argo_parity.tsv does not say why")),
            _ => {}
        }
        let mut children = Vec::new();
        if let Some(props) = argo.get("properties").and_then(Value::as_object) {
            let names: BTreeSet<&String> = props.keys().collect();
            for name in names {
                let child = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                // The API server takes apiVersion, kind and metadata of every resource it serves.
                let ours = match ours {
                    Ours::Has(_) if path.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") => {
                        Ours::Has(&ANY)
                    }
                    ours => ours.step(&Step::Property(name.clone())),
                };
                children.push(self.field(child, &props[name], ours));
            }
        }
        if let Some(items) = argo.get("items") {
            children.extend(self.field(format!("{path}[]"), items, ours.step(&Step::Items)).children);
        }
        if let Some(values) = argo.get("additionalProperties").filter(|v| v.get("properties").is_some()) {
            children.extend(self.field(format!("{path}{{}}"), values, ours.step(&Step::Values)).children);
        }
        Field { path, kept: matches!(ours, Ours::Kept), schema, status, reason, children }
    }
}

fn open_api_schema(crd: &Value) -> Value {
    let versions = crd["spec"]["versions"].as_array().expect("spec.versions");
    let v1alpha1 = versions.iter().find(|v| v["name"] == "v1alpha1").expect("a v1alpha1 version");
    v1alpha1["schema"]["openAPIV3Schema"].clone()
}

/// Runs `tests/cluster/argo-crds.sh` (instant once cached), which prints the directory of Argo's
/// CRDs, named after the version.
fn argo_crds() -> PathBuf {
    let script = repo_root().join("tests/cluster/argo-crds.sh");
    let output = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}): it fetches Argo Rollouts' CRDs from Argo's Go module; run it by hand to see why",
        script.display(),
        output.status
    );
    PathBuf::from(String::from_utf8(output.stdout).expect("a UTF-8 path").trim())
}

struct Parity {
    /// The Argo version compared with, such as v1.9.1.
    version: String,
    kinds: Vec<(&'static str, Field)>,
    errors: Vec<String>,
    unused_rows: Vec<String>,
}

fn compare(argo_dir: &Path, table: &str) -> Parity {
    let version = argo_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("argo-crds-"))
        .unwrap_or("(unknown version)")
        .to_string();
    let rows = match parse_rows(table) {
        Ok(rows) => rows,
        Err(errors) => return Parity { version, kinds: Vec::new(), errors, unused_rows: Vec::new() },
    };
    let ours: BTreeMap<String, Value> = stepwise_api::crd::all()
        .into_iter()
        .map(|crd| {
            let schema = &crd.spec.versions[0].schema.as_ref().expect("a schema").open_api_v3_schema;
            (crd.spec.names.kind.clone(), serde_json::to_value(schema).expect("a JSON schema"))
        })
        .collect();
    let mut used = BTreeSet::new();
    let mut errors = Vec::new();
    let mut kinds = Vec::new();
    for (kind, file) in KINDS {
        let path = argo_dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let crd: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let argo = open_api_schema(&crd);
        let mut walk = Walk { kind, rows: &rows, used: BTreeSet::new(), errors: Vec::new() };
        let root = walk.field(String::new(), &argo, ours.get(kind).map_or(Ours::Refused, Ours::Has));
        used.extend(walk.used);
        errors.extend(walk.errors);
        kinds.push((kind, root));
    }
    let unused_rows = rows
        .iter()
        .filter(|r| !used.contains(&r.line))
        .map(|r| {
            let path =
                if r.path.is_empty() { "*".to_string() } else { r.path.clone() + if r.subtree { ".*" } else { "" } };
            format!(
                "argo_parity.tsv:{}: {}:{path} names no Argo {version} field, or more specific rows cover all of it",
                r.line,
                r.kinds.join(",")
            )
        })
        .collect();
    Parity { version, kinds, errors, unused_rows }
}

fn parity() -> &'static Parity {
    static PARITY: OnceLock<Parity> = OnceLock::new();
    PARITY.get_or_init(|| {
        let table = std::fs::read_to_string(table_file()).expect("crates/stepwise-api/tests/argo_parity.tsv");
        compare(&argo_crds(), &table)
    })
}

// ---------------------------------------------------------------------------------------------
// The generated section of docs/compatibility.md.

/// The rows of a kind's table: a field whose whole subtree shares one classification is one row
/// (`path.*`); otherwise the field has its row and each child is considered in turn.
fn collapse<'f>(field: &'f Field, out: &mut Vec<(String, &'f Field)>) {
    let uniform = field.all().iter().all(|f| f.key() == field.key());
    if uniform {
        let shown = match (field.path.as_str(), field.children.is_empty()) {
            ("", _) => "* (every field)".to_string(),
            (p, true) => p.to_string(),
            (p, false) => format!("{p}.*"),
        };
        out.push((shown, field));
        return;
    }
    if !field.path.is_empty() {
        out.push((field.path.clone(), field));
    }
    for child in &field.children {
        collapse(child, out);
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// How many of a kind's fields have each status, Kubernetes' own fields kept as written apart.
fn counts(root: &Field) -> (BTreeMap<Status, usize>, usize) {
    let mut counts = BTreeMap::new();
    let fields: Vec<&Field> = root.all().into_iter().filter(|f| !f.path.is_empty()).collect();
    for f in fields.iter().filter(|f| !f.kept) {
        *counts.entry(f.status).or_insert(0) += 1;
    }
    (counts, fields.iter().filter(|f| f.kept).count())
}

fn render(parity: &Parity) -> String {
    let mut md = String::new();
    md.push_str(BEGIN);
    md.push_str("\n\n## Every Argo Rollouts field\n\n");
    md.push_str(&format!(
        "Generated by `crates/stepwise-api/tests/argo_parity.rs` from Argo Rollouts {}'s own CRDs \
         (fetched from Argo's Go module by `tests/cluster/argo-crds.sh`), stepwise's CRDs and the \
         reasons in `crates/stepwise-api/tests/argo_parity.tsv`; do not edit it here. The test fails \
         when an Argo field is neither in stepwise's schema nor explained there, and when this section \
         is stale: `UPDATE_COMPAT=1 cargo test -p stepwise-api --test argo_parity` rewrites it.\n\n",
        parity.version
    ));
    md.push_str(
        "- **same**: same name and meaning. **differs**: accepted, with the difference said. **not supported**: \
         stepwise does not intend to do it, and says why. **not yet**: planned; accepted but not acted on, or \
         refused, as the schema column says.\n\
         - **schema**: *accepted* — stepwise's schema has the field (or keeps the object it is in as written); \
         *refused* — `kubectl apply` fails with `unknown field`, so a manifest using it must drop it; \
         *X only* — the field is there but takes fewer forms than Argo's.\n\
         - `path.*` is a field and everything under it; `[]` are the items of a list, `{}` the values of a map.\n\n",
    );
    md.push_str(
        "| kind | Argo fields | same | differs | not supported | not yet | and inside a pod template or Job spec, kept as written |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let statuses = [Status::Same, Status::Differs, Status::NotSupported, Status::NotYet];
    for (kind, root) in &parity.kinds {
        let (c, kept) = counts(root);
        let total: usize = c.values().sum();
        let cols: Vec<String> = statuses.iter().map(|s| c.get(s).copied().unwrap_or(0).to_string()).collect();
        md.push_str(&format!("| {kind} | {total} | {} | {kept} |\n", cols.join(" | ")));
    }
    let mut tables: Vec<(&str, String)> = Vec::new();
    for (kind, root) in &parity.kinds {
        let mut rows = Vec::new();
        collapse(root, &mut rows);
        let mut table = String::from("| Argo field | stepwise | schema | how and why |\n|---|---|---|---|\n");
        for (shown, f) in rows {
            table.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                shown,
                f.status.words(),
                f.schema.words(),
                cell(&f.reason)
            ));
        }
        let same_as = tables.iter().find(|(_, t)| *t == table).map(|(k, _)| *k);
        md.push_str(&format!("\n### {kind}\n\n"));
        match same_as {
            Some(other) => md.push_str(&format!("The same fields, statuses and reasons as {other}.\n")),
            None => md.push_str(&table),
        }
        tables.push((kind, table));
    }
    md.push('\n');
    md.push_str(END);
    md.push('\n');
    md
}

/// `docs/compatibility.md` with its generated section replaced by `section` (appended at the end
/// when it has none yet).
fn with_section(doc: &str, section: &str) -> String {
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            let after = doc[end + END.len()..].trim_start_matches('\n');
            format!("{}{section}{after}", &doc[..begin])
        }
        _ => format!("{}\n\n{section}", doc.trim_end()),
    }
}

// ---------------------------------------------------------------------------------------------
// The specification.

#[test]
fn every_argo_field_is_in_our_schema_or_explained_in_the_table() {
    let parity = parity();
    assert!(
        parity.errors.is_empty(),
        "{} Argo {} field(s) without an explanation; add a row to crates/stepwise-api/tests/argo_parity.tsv \
         (status differs, not-supported or not-yet, and the reason):\n{}",
        parity.errors.len(),
        parity.version,
        parity.errors.join("\n")
    );
}

#[test]
fn every_row_of_the_table_names_an_argo_field() {
    let parity = parity();
    assert!(
        parity.unused_rows.is_empty(),
        "rows of crates/stepwise-api/tests/argo_parity.tsv that explain nothing:\n{}",
        parity.unused_rows.join("\n")
    );
}

#[test]
fn docs_compatibility_md_ends_with_the_generated_table() {
    let parity = parity();
    assert!(parity.errors.is_empty(), "fix the parity errors first: {:#?}", parity.errors);
    let path = repo_root().join("docs/compatibility.md");
    let doc = std::fs::read_to_string(&path).expect("docs/compatibility.md");
    let expected = with_section(&doc, &render(parity));
    if std::env::var_os("UPDATE_COMPAT").is_some() && expected != doc {
        std::fs::write(&path, &expected).expect("write docs/compatibility.md");
        return;
    }
    assert!(
        doc == expected,
        "the Argo parity table in docs/compatibility.md is stale: run \
         `UPDATE_COMPAT=1 cargo test -p stepwise-api --test argo_parity` and commit the result"
    );
}

#[test]
fn a_field_our_schema_lacks_fails_the_test_until_a_row_explains_it() {
    // Argo's schema of a made-up kind: one field stepwise's Rollout has, one it does not.
    let dir = std::env::temp_dir().join(format!("argo-crds-vtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let crd = |kind: &str| {
        format!(
            "spec:\n  names: {{kind: {kind}}}\n  versions:\n  - name: v1alpha1\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              replicas: {{type: integer}}\n              madeUpWindow:\n                type: object\n                properties:\n                  revisions: {{type: integer}}\n"
        )
    };
    for (kind, file) in KINDS {
        std::fs::write(dir.join(file), crd(kind)).unwrap();
    }
    let without =
        compare(&dir, "Experiment,AnalysisTemplate,ClusterAnalysisTemplate,AnalysisRun:*\tnot-supported\tno\n");
    assert_eq!(
        without.errors,
        vec![
            "Rollout:spec.madeUpWindow: Argo has it, our schema refuses it (unknown field), and argo_parity.tsv does not say why",
            "Rollout:spec.madeUpWindow.revisions: Argo has it, our schema refuses it (unknown field), and argo_parity.tsv does not say why",
        ]
    );
    let with = compare(
        &dir,
        "Experiment,AnalysisTemplate,ClusterAnalysisTemplate,AnalysisRun:*\tnot-supported\tno\n\
         Rollout:spec.madeUpWindow.*\tnot-yet\trefused by the schema: unknown field\n\
         Rollout:spec.selector\tdiffers\tnames nothing Argo has\n",
    );
    assert!(with.errors.is_empty(), "{:?}", with.errors);
    assert_eq!(with.unused_rows.len(), 1, "the selector row explains nothing: {:?}", with.unused_rows);
    let md = render(&with);
    assert!(
        md.contains("| `spec.madeUpWindow.*` | not yet | refused | refused by the schema: unknown field |"),
        "{md}"
    );
    assert!(md.contains("| `spec.replicas` | same | accepted |  |"), "{md}");
    std::fs::remove_dir_all(&dir).unwrap();
}
