//! The New Relic provider against a stand-in for NerdGraph on 127.0.0.1 that holds every request
//! to New Relic's published API: `POST /graphql` with the personal key in `API-Key`, a JSON body
//! `{query, variables}` whose GraphQL document is parsed and checked against the part of
//! NerdGraph's schema it reaches (`actor { account(id: Int!) { nrql(query: Nrql!, timeout:
//! Seconds) { results } } }`, variables declared with those types and given values of them). Any
//! deviation is recorded and fails the test. Its answers are NerdGraph's documented shapes:
//! `{"data":{"actor":{"account":{"nrql":{"results":[…]}}}}}`, and `{"errors":[{"message":…}]}`.
//!
//! The metrics are Argo Rollouts' own example (docs/analysis/newrelic.md), read from its YAML.
//!
//! The same measurement against the real NerdGraph, with a user key of an account:
//!
//! ```sh
//! STEPWISE_NEWRELIC_API_KEY=NRAK-… STEPWISE_NEWRELIC_ACCOUNT_ID=1234567 \
//! STEPWISE_NEWRELIC_REGION=us \
//! STEPWISE_NEWRELIC_QUERY="FROM Transaction SELECT count(*) AS total SINCE 1 hour ago" \
//!   cargo test -p stepwise-metrics --test newrelic -- --ignored --nocapture against_the_real_nerdgraph
//! ```
//!
//! (region and query are optional; the query defaults to a count of the account's transactions.)

mod common;

use std::sync::Arc;

use common::{Answer, Refusal, Request, StandIn};
use serde_json::{Value, json};
use stepwise_api::Metric;
use stepwise_metrics::newrelic::{NewRelicMetric, NewRelicProvider, QUERY_KEY, nerdgraph_url};
use stepwise_metrics::secrets::FixedSecrets;
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef, Taken};

const NAMESPACE: &str = "stepwise-system";
const API_KEY: &str = "NRAK-TESTKEY0123456789ABCDEFGHIJ";
const ACCOUNT_ID: i64 = 1234567;

/// Argo Rollouts' New Relic example, docs/analysis/newrelic.md, as written there.
const ARGO_TEMPLATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  args:
  - name: application-name
  metrics:
  - name: success-rate
    successCondition: result.successRate >= 0.95
    provider:
      newRelic:
        profile: my-newrelic-secret  # optional, defaults to 'newrelic'
        query: |
          FROM Transaction SELECT percentage(count(*), WHERE httpResponseCode != 500) as successRate where appName = '{{ args.application-name }}'
        timeout: 10 # NRQL query timeout in seconds. Optional, defaults to 5
"#;

/// The NRQL of the example once the controller substituted `application-name: checkout`.
const ARGO_NRQL: &str = "FROM Transaction SELECT percentage(count(*), WHERE httpResponseCode != 500) as successRate \
                         where appName = 'checkout'\n";

/// The example's metric, its argument substituted as the controller does, with `edit` applied to
/// the YAML (to drop the optional fields).
fn argo_metric(edit: impl Fn(&str) -> String) -> Metric {
    let yaml = edit(&ARGO_TEMPLATE.replace("{{ args.application-name }}", "checkout"));
    let template: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    serde_yaml::from_value(template["spec"]["metrics"][0].clone()).unwrap()
}

/// Argo's own example metric, with its profile and timeout.
fn example() -> Metric {
    argo_metric(str::to_string)
}

/// The example without `profile` and `timeout`: Argo's defaults apply.
fn example_with_defaults() -> Metric {
    argo_metric(|y| {
        y.lines().filter(|l| !l.contains("profile:") && !l.contains("timeout:")).collect::<Vec<_>>().join("\n")
    })
}

// ---------------------------------------------------------------------------------------------
// The NerdGraph stand-in.

/// What a request asked, once it passed every check.
#[derive(Clone, Debug, PartialEq)]
struct Call {
    account_id: i64,
    nrql: String,
    /// The NRQL `timeout` argument, if the document passed one.
    timeout: Option<i64>,
}

/// A NerdGraph on 127.0.0.1 that checks every request and answers valid ones with `answer`.
type NerdGraph = StandIn<Call>;

impl NerdGraph {
    async fn start(answer: impl Fn(&Call) -> (u16, String) + Send + Sync + 'static) -> NerdGraph {
        let refuse = |problems: Vec<String>| {
            Refusal::off_spec(&problems, |text| {
                Answer::json(400, json!({"errors": [{"message": format!("off the NerdGraph spec: {text}")}]}))
            })
        };
        StandIn::serve(
            "the NerdGraph spec",
            move |request| check(request).map_err(refuse),
            move |call| {
                let (status, body) = answer(call);
                Answer::new(status, "application/json", body)
            },
        )
        .await
    }

    /// The endpoint, `http://127.0.0.1:PORT/graphql`.
    fn url(&self) -> String {
        format!("{}/graphql", self.address)
    }

    /// The Secret data of a profile pointing at this stand-in.
    fn profile(&self) -> Vec<(&'static str, String)> {
        vec![
            ("personal-api-key", API_KEY.to_string()),
            ("account-id", ACCOUNT_ID.to_string()),
            ("base-url-nerdgraph", self.url()),
        ]
    }
}

/// Every rule of NerdGraph's HTTP API and schema that the request must follow.
fn check(request: &Request) -> Result<Call, Vec<String>> {
    let mut problems = Vec::new();
    if request.method != "POST" {
        problems.push(format!("method {} (NerdGraph takes POST)", request.method));
    }
    if request.target != "/graphql" {
        problems.push(format!("target {} (the endpoint is /graphql, without a query string)", request.target));
    }
    match request.headers("api-key").as_slice() {
        [key] if *key == API_KEY => {}
        [_] => problems.push("API-Key is not the profile's personal-api-key".into()),
        keys => problems.push(format!("{} API-Key headers (one is needed)", keys.len())),
    }
    if !request.headers("authorization").is_empty() {
        problems.push("an Authorization header (NerdGraph takes the key in API-Key)".into());
    }
    match request.headers("content-type").as_slice() {
        [ct] if ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) => {}
        other => problems.push(format!("Content-Type {other:?} (the body is application/json)")),
    }
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(body) => body,
        Err(e) => {
            problems.push(format!("the body is not JSON: {e}"));
            return Err(problems);
        }
    };
    let Some(fields) = body.as_object() else {
        problems.push("the body is not a JSON object".into());
        return Err(problems);
    };
    for key in fields.keys() {
        if !matches!(key.as_str(), "query" | "variables" | "operationName" | "extensions") {
            problems.push(format!("body field {key:?} (a GraphQL request has query, variables, operationName)"));
        }
    }
    let variables = match fields.get("variables") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(v)) => v.clone(),
        Some(other) => {
            problems.push(format!("variables is {other}, not an object"));
            serde_json::Map::new()
        }
    };
    let Some(document) = fields.get("query").and_then(Value::as_str) else {
        problems.push("no GraphQL document in `query`".into());
        return Err(problems);
    };
    match graphql::parse(document) {
        Err(e) => problems.push(format!("the GraphQL document does not parse: {e}")),
        Ok(operation) => match schema::resolve(&operation, &variables) {
            Ok(call) if problems.is_empty() => return Ok(call),
            Ok(_) => {}
            Err(mut more) => problems.append(&mut more),
        },
    }
    Err(problems)
}

/// Just enough GraphQL (the executable-document grammar of the October 2021 spec, without
/// fragments and directives) to read what a client sends.
mod graphql {
    #[derive(Clone, Debug, PartialEq)]
    pub enum Val {
        Var(String),
        Int(i64),
        Float(f64),
        Str(String),
        Bool(bool),
        Null,
        Enum(String),
        List(Vec<Val>),
        Object(Vec<(String, Val)>),
    }

    #[derive(Debug)]
    pub struct Field {
        pub name: String,
        pub args: Vec<(String, Val)>,
        pub selection: Vec<Field>,
    }

    #[derive(Debug)]
    pub struct Operation {
        pub kind: String,
        /// `$name` and its type as written, e.g. `Int!`.
        pub variables: Vec<(String, String)>,
        pub selection: Vec<Field>,
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Token {
        Punct(char),
        Name(String),
        Int(i64),
        Float(f64),
        Str(String),
    }

    fn tokens(text: &str) -> Result<Vec<Token>, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                // Commas are insignificant in GraphQL, like white space.
                ' ' | '\t' | '\n' | '\r' | ',' | '\u{feff}' => i += 1,
                '#' => {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                }
                '{' | '}' | '(' | ')' | '[' | ']' | ':' | '!' | '$' | '=' | '@' | '|' | '&' => {
                    out.push(Token::Punct(c));
                    i += 1;
                }
                '"' => {
                    if chars[i..].starts_with(&['"', '"', '"']) {
                        return Err("block strings are not expected here".into());
                    }
                    let mut s = String::new();
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None | Some('\n') => return Err("unterminated string".into()),
                            Some('"') => break,
                            Some('\\') => {
                                let escaped = chars.get(i + 1).ok_or("unterminated escape")?;
                                s.push(match escaped {
                                    '"' => '"',
                                    '\\' => '\\',
                                    '/' => '/',
                                    'b' => '\u{8}',
                                    'f' => '\u{c}',
                                    'n' => '\n',
                                    'r' => '\r',
                                    't' => '\t',
                                    'u' => {
                                        let hex: String = chars.get(i + 2..i + 6).ok_or("short \\u")?.iter().collect();
                                        i += 4;
                                        char::from_u32(u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?)
                                            .ok_or("bad \\u")?
                                    }
                                    other => return Err(format!("bad escape \\{other}")),
                                });
                                i += 2;
                            }
                            Some(ch) => {
                                s.push(*ch);
                                i += 1;
                            }
                        }
                    }
                    i += 1;
                    out.push(Token::Str(s));
                }
                '-' | '0'..='9' => {
                    let start = i;
                    i += 1;
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '-' | '+')) {
                        i += 1;
                    }
                    let text: String = chars[start..i].iter().collect();
                    out.push(match text.parse::<i64>() {
                        Ok(n) => Token::Int(n),
                        Err(_) => Token::Float(text.parse().map_err(|_| format!("bad number {text}"))?),
                    });
                }
                c if c == '_' || c.is_ascii_alphabetic() => {
                    let start = i;
                    while i < chars.len() && (chars[i] == '_' || chars[i].is_ascii_alphanumeric()) {
                        i += 1;
                    }
                    out.push(Token::Name(chars[start..i].iter().collect()));
                }
                '.' => return Err("fragments are not expected here".into()),
                other => return Err(format!("unexpected character {other:?}")),
            }
        }
        Ok(out)
    }

    struct Parser {
        tokens: Vec<Token>,
        at: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<&Token> {
            self.tokens.get(self.at)
        }
        fn next(&mut self) -> Result<Token, String> {
            let t = self.tokens.get(self.at).cloned().ok_or("unexpected end of the document")?;
            self.at += 1;
            Ok(t)
        }
        fn punct(&mut self, c: char) -> Result<(), String> {
            match self.next()? {
                Token::Punct(p) if p == c => Ok(()),
                other => Err(format!("expected {c:?}, found {other:?}")),
            }
        }
        fn eat(&mut self, c: char) -> bool {
            if self.peek() == Some(&Token::Punct(c)) {
                self.at += 1;
                true
            } else {
                false
            }
        }
        fn name(&mut self) -> Result<String, String> {
            match self.next()? {
                Token::Name(n) => Ok(n),
                other => Err(format!("expected a name, found {other:?}")),
            }
        }
        fn type_ref(&mut self) -> Result<String, String> {
            let mut text = if self.eat('[') {
                let inner = self.type_ref()?;
                self.punct(']')?;
                format!("[{inner}]")
            } else {
                self.name()?
            };
            if self.eat('!') {
                text.push('!');
            }
            Ok(text)
        }
        fn value(&mut self) -> Result<Val, String> {
            Ok(match self.next()? {
                Token::Punct('$') => Val::Var(self.name()?),
                Token::Int(n) => Val::Int(n),
                Token::Float(f) => Val::Float(f),
                Token::Str(s) => Val::Str(s),
                Token::Name(n) if n == "true" => Val::Bool(true),
                Token::Name(n) if n == "false" => Val::Bool(false),
                Token::Name(n) if n == "null" => Val::Null,
                Token::Name(n) => Val::Enum(n),
                Token::Punct('[') => {
                    let mut items = Vec::new();
                    while !self.eat(']') {
                        items.push(self.value()?);
                    }
                    Val::List(items)
                }
                Token::Punct('{') => {
                    let mut fields = Vec::new();
                    while !self.eat('}') {
                        let name = self.name()?;
                        self.punct(':')?;
                        fields.push((name, self.value()?));
                    }
                    Val::Object(fields)
                }
                other => return Err(format!("expected a value, found {other:?}")),
            })
        }
        fn selection(&mut self) -> Result<Vec<Field>, String> {
            self.punct('{')?;
            let mut fields = Vec::new();
            while !self.eat('}') {
                let mut name = self.name()?;
                if self.eat(':') {
                    name = self.name()?; // An alias: the field is what follows.
                }
                let mut args = Vec::new();
                if self.eat('(') {
                    while !self.eat(')') {
                        let arg = self.name()?;
                        self.punct(':')?;
                        args.push((arg, self.value()?));
                    }
                }
                let selection = if self.peek() == Some(&Token::Punct('{')) { self.selection()? } else { Vec::new() };
                fields.push(Field { name, args, selection });
            }
            if fields.is_empty() {
                return Err("an empty selection set".into());
            }
            Ok(fields)
        }
    }

    /// The single operation of `text`.
    pub fn parse(text: &str) -> Result<Operation, String> {
        let mut p = Parser { tokens: tokens(text)?, at: 0 };
        let mut operation = Operation { kind: "query".into(), variables: Vec::new(), selection: Vec::new() };
        if let Some(Token::Name(kind)) = p.peek().cloned() {
            p.at += 1;
            operation.kind = kind;
            if let Some(Token::Name(_)) = p.peek() {
                p.at += 1; // The operation's name.
            }
            if p.eat('(') {
                while !p.eat(')') {
                    p.punct('$')?;
                    let name = p.name()?;
                    p.punct(':')?;
                    let ty = p.type_ref()?;
                    if p.eat('=') {
                        p.value()?;
                    }
                    operation.variables.push((name, ty));
                }
            }
        }
        operation.selection = p.selection()?;
        if p.at != p.tokens.len() {
            return Err("more than one operation, or text after it".into());
        }
        Ok(operation)
    }
}

/// The part of NerdGraph's schema the provider reaches, and the request's values in it.
mod schema {
    use serde_json::{Map, Value};

    use super::Call;
    use super::graphql::{Field, Operation, Val};

    /// An argument's value, a literal or a variable, checked against its schema type.
    fn arg(
        field: &Field,
        name: &str,
        schema_type: &str,
        operation: &Operation,
        variables: &Map<String, Value>,
        used: &mut Vec<String>,
        problems: &mut Vec<String>,
    ) -> Option<Value> {
        let required = schema_type.ends_with('!');
        let base = schema_type.trim_end_matches('!');
        let Some((_, val)) = field.args.iter().find(|(n, _)| n == name) else {
            if required {
                problems.push(format!("{}({name}:) is required ({schema_type})", field.name));
            }
            return None;
        };
        let value = match val {
            Val::Var(var) => {
                used.push(var.clone());
                let Some((_, declared)) = operation.variables.iter().find(|(n, _)| n == var) else {
                    problems.push(format!("${var} is used but not declared"));
                    return None;
                };
                // A variable's type must fit where it is used: the same named type, and non-null
                // where the argument is.
                if declared.trim_end_matches('!') != base || (required && !declared.ends_with('!')) {
                    problems
                        .push(format!("${var}: {declared} cannot be passed to {}({name}: {schema_type})", field.name));
                }
                match variables.get(var) {
                    Some(v) => v.clone(),
                    None if declared.ends_with('!') => {
                        problems.push(format!("${var} ({declared}) has no value in `variables`"));
                        return None;
                    }
                    None => Value::Null,
                }
            }
            Val::Int(n) => Value::from(*n),
            Val::Str(s) => Value::from(s.clone()),
            Val::Null => Value::Null,
            other => {
                problems.push(format!("{}({name}:) is {other:?}, not a {base}", field.name));
                return None;
            }
        };
        let fits = match (base, &value) {
            (_, Value::Null) => !required,
            // Int is 32-bit in GraphQL; Seconds is NerdGraph's integer scalar of seconds.
            ("Int", Value::Number(n)) => n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            ("Seconds", Value::Number(n)) => n.as_i64().is_some_and(|n| n >= 0),
            ("Nrql", Value::String(s)) => !s.trim().is_empty(),
            _ => false,
        };
        if !fits {
            problems.push(format!("{}({name}:) is {value}, not a {schema_type}", field.name));
            return None;
        }
        Some(value)
    }

    /// The one field named `name` in `selection`; others are not served.
    fn only<'a>(selection: &'a [Field], name: &str, parent: &str, problems: &mut Vec<String>) -> Option<&'a Field> {
        for f in selection.iter().filter(|f| f.name != name) {
            problems.push(format!("{parent}.{} is not served here", f.name));
        }
        let found: Vec<&Field> = selection.iter().filter(|f| f.name == name).collect();
        if found.len() != 1 {
            problems.push(format!("{parent} selects {name} {} times", found.len()));
            return None;
        }
        Some(found[0])
    }

    pub fn resolve(operation: &Operation, variables: &Map<String, Value>) -> Result<Call, Vec<String>> {
        let mut problems = Vec::new();
        let mut used = Vec::new();
        if operation.kind != "query" {
            problems.push(format!("a {} operation (NRQL is read with a query)", operation.kind));
        }
        let mut call = None;
        if let Some(actor) = only(&operation.selection, "actor", "Query", &mut problems) {
            if !actor.args.is_empty() {
                problems.push("actor takes no arguments".into());
            }
            if let Some(account) = only(&actor.selection, "account", "Actor", &mut problems) {
                let id = arg(account, "id", "Int!", operation, variables, &mut used, &mut problems);
                for (name, _) in account.args.iter().filter(|(n, _)| n != "id") {
                    problems.push(format!("account has no argument {name}"));
                }
                if let Some(nrql) = only(&account.selection, "nrql", "Account", &mut problems) {
                    let query = arg(nrql, "query", "Nrql!", operation, variables, &mut used, &mut problems);
                    let timeout = arg(nrql, "timeout", "Seconds", operation, variables, &mut used, &mut problems);
                    for (name, _) in nrql.args.iter() {
                        if !matches!(name.as_str(), "query" | "timeout" | "async" | "options") {
                            problems.push(format!("nrql has no argument {name}"));
                        }
                    }
                    let results = only(&nrql.selection, "results", "NrdbResultContainer", &mut problems);
                    if results.is_some_and(|r| !r.selection.is_empty() || !r.args.is_empty()) {
                        problems.push("results is a JSON scalar: no arguments, no selection".into());
                    }
                    if let (Some(id), Some(query)) = (id, query) {
                        call = Some(Call {
                            account_id: id.as_i64().unwrap_or_default(),
                            nrql: query.as_str().unwrap_or_default().to_string(),
                            timeout: timeout.and_then(|t| t.as_i64()),
                        });
                    }
                }
            }
        }
        for (name, _) in &operation.variables {
            if !used.contains(name) {
                problems.push(format!("${name} is declared but not used"));
            }
        }
        for name in variables.keys() {
            if !operation.variables.iter().any(|(n, _)| n == name) {
                problems.push(format!("variables.{name} is not declared by the operation"));
            }
        }
        match call {
            Some(call) if problems.is_empty() => Ok(call),
            _ => Err(problems),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Answers in NerdGraph's documented shapes.

fn results(results: Value) -> (u16, String) {
    (200, json!({"data": {"actor": {"account": {"nrql": {"results": results}}}}}).to_string())
}

fn provider(secrets: FixedSecrets) -> NewRelicProvider {
    NewRelicProvider::new(Arc::new(secrets), NAMESPACE)
}

fn secret(name: &str, data: &[(&'static str, String)]) -> FixedSecrets {
    let data: Vec<(&str, &str)> = data.iter().map(|(k, v)| (*k, v.as_str())).collect();
    FixedSecrets::default().with(NAMESPACE, name, &data)
}

async fn measure(provider: &NewRelicProvider, metric: &Metric) -> Result<Taken, Error> {
    provider.run(&RunRef::default(), metric).await
}

/// The error of a measurement, checked to hold neither the key nor the account id.
async fn failure(provider: &NewRelicProvider, metric: &Metric) -> Error {
    let err = measure(provider, metric).await.expect_err("the measurement should fail");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(API_KEY), "the key is in the error: {text}");
    assert!(!text.contains(&ACCOUNT_ID.to_string()), "the account id is in the error: {text}");
    err
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn argos_example_measures_the_success_rate_as_a_result_object() {
    let server = NerdGraph::start(|_| results(json!([{"successRate": 98.5}]))).await;
    let p = provider(secret("my-newrelic-secret", &server.profile()));
    let taken = measure(&p, &example()).await.unwrap();
    // `result.successRate >= 0.95`: the one result object is `result`.
    assert_eq!(taken.reading, Reading::Value(json!({"successRate": 98.5})));
    assert_eq!(taken.metadata.get(QUERY_KEY).map(String::as_str), Some(ARGO_NRQL));
    assert_eq!(server.call(), Call { account_id: ACCOUNT_ID, nrql: ARGO_NRQL.into(), timeout: Some(10) });
}

#[tokio::test]
async fn without_a_profile_the_newrelic_secret_and_a_five_second_timeout_are_used() {
    let server = NerdGraph::start(|_| results(json!([{"successRate": 99.1}]))).await;
    let metric = example_with_defaults();
    assert_eq!(NewRelicMetric::from_metric(&metric).unwrap().profile, None);
    let p = provider(secret("newrelic", &server.profile()));
    assert_eq!(measure(&p, &metric).await.unwrap().reading, Reading::Value(json!({"successRate": 99.1})));
    assert_eq!(server.call().timeout, Some(5));
}

#[tokio::test]
async fn a_timeseries_is_the_list_of_its_results() {
    let server = NerdGraph::start(|_| results(json!([{"count": 10}, {"count": 20}, {"count": 30}]))).await;
    let p = provider(secret("my-newrelic-secret", &server.profile()));
    let taken = measure(&p, &example()).await.unwrap();
    // `result[0].count == 10`
    assert_eq!(taken.reading, Reading::Value(json!([{"count": 10}, {"count": 20}, {"count": 30}])));
}

#[tokio::test]
async fn function_names_stay_keys_with_their_dots() {
    // `SELECT average(duration), count(*)`: `result['average.duration']`.
    let server = NerdGraph::start(|_| results(json!([{"average.duration": 12.34, "count": 10}]))).await;
    let p = provider(secret("my-newrelic-secret", &server.profile()));
    let taken = measure(&p, &example()).await.unwrap();
    assert_eq!(taken.reading, Reading::Value(json!({"average.duration": 12.34, "count": 10})));
}

#[tokio::test]
async fn quotes_and_newlines_in_nrql_arrive_intact() {
    let nrql = "FROM Transaction SELECT count(*) WHERE name = \"WebTransaction/Go/\\\"x\\\"\"\nAND appName = 'a'";
    let server = NerdGraph::start(|_| results(json!([{"count": 1}]))).await;
    let p = provider(secret("newrelic", &server.profile()));
    let mut metric = example_with_defaults();
    metric.provider.new_relic = Some(json!({"query": nrql}));
    measure(&p, &metric).await.unwrap();
    assert_eq!(server.call().nrql, nrql);
}

#[tokio::test]
async fn no_result_is_no_data() {
    for answer in [json!([]), json!([{}]), Value::Null] {
        let a = answer.clone();
        let server = NerdGraph::start(move |_| results(a.clone())).await;
        let p = provider(secret("my-newrelic-secret", &server.profile()));
        let err = failure(&p, &example()).await;
        assert!(matches!(&err, Error::NoData { metric } if metric == "success-rate"), "{answer}: {err:?}");
        assert_eq!(err.to_string(), "metric success-rate returned no data");
        server.call();
    }
}

#[tokio::test]
async fn a_graphql_error_is_the_error_with_new_relics_message() {
    // What NerdGraph answers for a bad NRQL: 200, `errors`, and a null nrql.
    let server = NerdGraph::start(|_| {
        let body = json!({
            "data": {"actor": {"account": {"nrql": null}}},
            "errors": [{
                "extensions": {"errorClass": "INVALID_INPUT"},
                "locations": [{"column": 7, "line": 1}],
                "message": "NRQL Syntax Error: Error at line 1 position 6, unexpected 'Transaction'",
                "path": ["actor", "account", "nrql"],
            }],
        });
        (200, body.to_string())
    })
    .await;
    let p = provider(secret("my-newrelic-secret", &server.profile()));
    let err = failure(&p, &example()).await;
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "NerdGraph at {}: NRQL Syntax Error: Error at line 1 position 6, unexpected 'Transaction'",
            server.url()
        )
    );
    server.call();
}

#[tokio::test]
async fn a_refused_key_and_a_server_error_keep_their_status_and_message() {
    let server = NerdGraph::start(|_| {
        let error =
            json!({"extensions": {"error_code": "BAD_API_KEY"}, "message": "Bad API Key or no API Key provided"});
        let body = json!({"errors": [error]});
        (401, body.to_string())
    })
    .await;
    let p = provider(secret("my-newrelic-secret", &server.profile()));
    let err = failure(&p, &example()).await;
    assert_eq!(
        err.to_string(),
        format!("NerdGraph at {}: HTTP 401 Unauthorized: Bad API Key or no API Key provided", server.url())
    );

    let server = NerdGraph::start(|_| (503, "upstream connect error or disconnect/reset before headers".into())).await;
    let p = provider(secret("my-newrelic-secret", &server.profile()));
    let err = failure(&p, &example()).await;
    assert_eq!(
        err.to_string(),
        format!(
            "NerdGraph at {}: HTTP 503 Service Unavailable: \"upstream connect error or disconnect/reset before headers\"",
            server.url()
        )
    );
    server.call();
}

#[tokio::test]
async fn an_answer_that_echoes_the_key_is_scrubbed() {
    let server = NerdGraph::start(|_| {
        (200, json!({"errors": [{"message": format!("key {API_KEY} has no access to this account")}]}).to_string())
    })
    .await;
    let p = provider(secret("my-newrelic-secret", &server.profile()));
    let err = failure(&p, &example()).await;
    assert!(err.to_string().ends_with("key ***** has no access to this account"), "{err}");
}

#[tokio::test]
async fn a_missing_secret_or_key_names_the_profile_and_sends_nothing() {
    let server = NerdGraph::start(|_| results(json!([{"successRate": 1}]))).await;
    let err = failure(&provider(FixedSecrets::default()), &example()).await;
    assert!(matches!(err, Error::Config { field: "provider.newRelic.profile", .. }), "{err:?}");
    assert!(err.to_string().contains("Secret stepwise-system/my-newrelic-secret does not exist"), "{err}");

    // The default profile when the metric names none.
    let err = failure(&provider(FixedSecrets::default()), &example_with_defaults()).await;
    assert!(err.to_string().contains("Secret stepwise-system/newrelic does not exist"), "{err}");

    // In another namespace, it is not the controller's.
    let elsewhere = FixedSecrets::default().with("default", "my-newrelic-secret", &[("personal-api-key", API_KEY)]);
    let err = failure(&provider(elsewhere), &example()).await;
    assert!(err.to_string().contains("does not exist"), "{err}");

    let no_account = secret("my-newrelic-secret", &[("personal-api-key", API_KEY.into())]);
    let err = failure(&provider(no_account), &example()).await;
    assert_eq!(
        err.to_string(),
        "provider.newRelic.profile: Secret stepwise-system/my-newrelic-secret has no account-id"
    );

    let no_key = secret("my-newrelic-secret", &[("account-id", ACCOUNT_ID.to_string())]);
    let err = failure(&provider(no_key), &example()).await;
    assert_eq!(
        err.to_string(),
        "provider.newRelic.profile: Secret stepwise-system/my-newrelic-secret has no personal-api-key"
    );

    let key_as_account =
        secret("my-newrelic-secret", &[("personal-api-key", API_KEY.into()), ("account-id", API_KEY.into())]);
    let err = failure(&provider(key_as_account), &example()).await;
    assert!(
        err.to_string().contains("account-id of Secret stepwise-system/my-newrelic-secret is not a number"),
        "{err}"
    );
    assert!(server.calls().is_empty());
}

#[tokio::test]
async fn the_region_picks_the_host_and_base_url_nerdgraph_overrides_it() {
    assert_eq!(nerdgraph_url(Some("us")), "https://api.newrelic.com/graphql");
    assert_eq!(nerdgraph_url(Some("eu")), "https://api.eu.newrelic.com/graphql");
    assert_eq!(nerdgraph_url(None), "https://api.newrelic.com/graphql");
    // As Argo: with both, the override wins (the request reaches the stand-in, not the EU).
    let server = NerdGraph::start(|_| results(json!([{"successRate": 97}]))).await;
    let mut data = server.profile();
    data.push(("region", "eu".into()));
    let p = provider(secret("my-newrelic-secret", &data));
    assert_eq!(measure(&p, &example()).await.unwrap().reading, Reading::Value(json!({"successRate": 97})));
    server.call();
}

#[tokio::test]
async fn a_bad_metric_is_refused_before_any_request() {
    let server = NerdGraph::start(|_| results(json!([{"successRate": 1}]))).await;
    let p = provider(secret("my-newrelic-secret", &server.profile()));
    let mut metric = example();
    metric.provider.new_relic = Some(json!({"query": "FROM Transaction SELECT count(*)", "timeout": -1}));
    let err = failure(&p, &metric).await;
    assert_eq!(err.to_string(), "provider.newRelic.timeout: timeout value needs to be a positive value");
    metric.provider.new_relic = Some(json!({"profile": "my-newrelic-secret"}));
    let err = failure(&p, &metric).await;
    assert!(matches!(err, Error::Config { field: "provider.newRelic", .. }), "{err:?}");
    assert!(err.to_string().contains("query"), "{err}");
    assert!(server.calls().is_empty());
}

/// The stand-in itself must refuse what NerdGraph would: otherwise the tests above prove nothing.
#[tokio::test]
async fn the_stand_in_refuses_requests_off_the_spec() {
    let server = NerdGraph::start(|_| results(json!([{"count": 1}]))).await;
    // reqwest is built without a TLS provider of its own (see web.rs); ring is the crate's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let good_document = "query ($query: Nrql!, $accountId: Int!, $timeout: Seconds!) \
                         { actor { account(id: $accountId) { nrql(query: $query, timeout: $timeout) { results } } } }";
    let good_variables = json!({"accountId": ACCOUNT_ID, "query": "FROM Transaction SELECT count(*)", "timeout": 5});
    let send = |key: &'static str, body: Value| {
        let request = client.post(server.url()).header("API-Key", key).header("Content-Type", "application/json");
        async move { request.body(body.to_string()).send().await.unwrap().status().as_u16() }
    };
    // A request as the docs show one, inline, passes.
    let inline = "{ actor { account(id: 1234567) { nrql(query: \"SELECT count(*) FROM Transaction\") { results } } } }";
    assert_eq!(send(API_KEY, json!({"query": inline})).await, 200);
    assert_eq!(send(API_KEY, json!({"query": good_document, "variables": good_variables})).await, 200);
    assert_eq!(server.calls().len(), 2);

    let off_spec = [
        (json!({"query": good_document, "variables": good_variables}), "NRAK-WRONG"),
        (json!({"query": good_document, "variables": {"accountId": "1234567", "query": "q", "timeout": 5}}), API_KEY),
        (json!({"query": good_document, "variables": {"accountId": ACCOUNT_ID, "timeout": 5}}), API_KEY),
        (json!({"query": good_document.replace("Int!", "String!"), "variables": good_variables}), API_KEY),
        (
            json!({
                "query": good_document.replace("account(id: $accountId)", "account(accountId: $accountId)"),
                "variables": good_variables,
            }),
            API_KEY,
        ),
        (json!({"query": good_document.replace("{ results }", "{ result }"), "variables": good_variables}), API_KEY),
        (json!({"query": good_document.replace(", timeout: $timeout", ""), "variables": good_variables}), API_KEY),
        (json!({"query": "mutation { actor { account(id: 1) { nrql(query: \"q\") { results } } } }"}), API_KEY),
        (json!({"query": "{ actor { account(id: 1) { nrql(query: \"q\") { results } }"}), API_KEY),
        (json!({"nrql": "FROM Transaction SELECT count(*)"}), API_KEY),
    ];
    for (body, key) in &off_spec {
        assert_eq!(send(key, body.clone()).await, 400, "{body}");
    }
    let violations = server.violations.lock().unwrap().clone();
    assert_eq!(violations.len(), off_spec.len(), "{violations:#?}");
    assert!(violations[0].contains("API-Key"), "{}", violations[0]);
    assert!(violations[1].contains("not a Int!"), "{}", violations[1]);
    assert!(violations[3].contains("cannot be passed"), "{}", violations[3]);
}

/// Argo's example against the real NerdGraph: see the comment at the top of this file.
#[tokio::test]
#[ignore = "needs a New Relic account: STEPWISE_NEWRELIC_API_KEY and STEPWISE_NEWRELIC_ACCOUNT_ID"]
async fn against_the_real_nerdgraph() {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(key), Some(account)) = (env("STEPWISE_NEWRELIC_API_KEY"), env("STEPWISE_NEWRELIC_ACCOUNT_ID")) else {
        panic!("set STEPWISE_NEWRELIC_API_KEY and STEPWISE_NEWRELIC_ACCOUNT_ID (see the top of tests/newrelic.rs)");
    };
    let mut data = vec![("personal-api-key", key.clone()), ("account-id", account)];
    if let Some(region) = env("STEPWISE_NEWRELIC_REGION") {
        data.push(("region", region));
    }
    let mut metric = example_with_defaults();
    let query = env("STEPWISE_NEWRELIC_QUERY")
        .unwrap_or_else(|| "FROM Transaction SELECT count(*) AS total SINCE 1 hour ago".into());
    metric.provider.new_relic = Some(json!({"query": query}));
    let p = provider(secret("newrelic", &data));
    match measure(&p, &metric).await {
        Ok(taken) => println!("value: {:?}\nmetadata: {:?}", taken.reading, taken.metadata),
        Err(err) => {
            assert!(!err.to_string().contains(&key), "the key is in the error");
            panic!("{err}");
        }
    }
}
