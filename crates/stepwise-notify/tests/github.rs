//! The GitHub service against a fake GitHub Enterprise Server on 127.0.0.1 that holds every request
//! to GitHub's published REST API (`POST /repos/{owner}/{repo}/statuses/{sha}`, `POST
//! /app/installations/{installation_id}/access_tokens`, the headers of "Getting started with the
//! REST API" and the JWT of "Generating a JSON Web Token (JWT) for a GitHub App") and answers as
//! GitHub does. A request deviating from the API fails the test that made it, when the fake is
//! dropped.
//!
//! The RSA keys of the app are made by openssl when the tests run; none is kept in the
//! repository.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Request, Response, data, responder};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};
use stepwise_notify::{Config, Error, SendError, Sent};

const APP_ID: &str = "424242";
const INSTALLATION: u64 = 5_550_001;
const PAT: &str = "github_pat_SECRET_fine_grained_token";
const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
const REPO: &str = "git@github.com:argoproj/rollouts-demo.git";
const DOCS: &str = "https://docs.github.com/rest";

/// What GitHub's commit status API takes (the OpenAPI description's `repos/create-commit-status`
/// request body).
const STATUS_FIELDS: &[&str] = &["state", "target_url", "description", "context"];
const STATES: &[&str] = &["error", "failure", "pending", "success"];

/// A test RSA key of the app: its PEM and the DER of its public half (PKCS#1 `RSAPublicKey`, as
/// ring verifies with).
struct Key {
    pem: String,
    public_der: Vec<u8>,
}

/// One key of each PEM form GitHub apps are configured with.
struct Keys {
    /// `BEGIN RSA PRIVATE KEY`, as GitHub hands keys out.
    pkcs1: Key,
    /// `BEGIN PRIVATE KEY`.
    pkcs8: Key,
}

/// The keys, made once per test run by openssl in a temporary directory, removed after.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("stepwise-github-test-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("/usr/bin/openssl").args(args).current_dir(&dir).output().expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        openssl(&["genrsa", "-traditional", "-out", "pkcs1.pem", "2048"]);
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "pkcs8.pem"]);
        let key = |name: &str| {
            let (pem, der) = (format!("{name}.pem"), format!("{name}.der"));
            openssl(&["rsa", "-in", &pem, "-RSAPublicKey_out", "-outform", "DER", "-out", &der]);
            Key {
                pem: std::fs::read_to_string(dir.join(&pem)).unwrap(),
                public_der: std::fs::read(dir.join(&der)).unwrap(),
            }
        };
        let keys = Keys { pkcs1: key("pkcs1"), pkcs8: key("pkcs8") };
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(keys.pkcs1.pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"), "{}", &keys.pkcs1.pem[..40]);
        assert!(keys.pkcs8.pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{}", &keys.pkcs8.pem[..40]);
        keys
    })
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Which endpoint a scripted answer replaces the next answer of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    AccessToken,
    Status,
}

/// An answer given instead of the fake's own, once, after the request was checked.
enum Scripted {
    Reply(Response),
    /// This status, and a message quoting the request's `Authorization` (a receiver echoing
    /// credentials).
    EchoAuthorization(u16),
}

/// A commit status the fake created.
#[derive(Clone, Debug)]
struct Created {
    owner: String,
    repo: String,
    sha: String,
    authorization: String,
    body: Value,
}

#[derive(Default)]
struct State {
    url: String,
    /// The app's public key; the JWTs must verify with it.
    public_key: Vec<u8>,
    /// How long the installation tokens it issues are valid, in seconds.
    token_lifetime: u64,
    /// Installation tokens issued, with when they expire (Unix seconds).
    issued: Vec<(String, u64)>,
    /// Tokens revoked since.
    revoked: Vec<String>,
    /// JWTs received.
    jwts: Vec<String>,
    scripted: VecDeque<(Endpoint, Scripted)>,
    access_token_requests: usize,
    status_requests: usize,
    created: Vec<Created>,
    violations: Vec<String>,
}

/// A fake GitHub Enterprise Server: the REST API under `/api/v3`.
struct FakeGitHub {
    url: String,
    state: Arc<Mutex<State>>,
}

impl FakeGitHub {
    /// A GitHub whose app has the public key of `key` and whose installation tokens are valid for
    /// an hour, as GitHub's are.
    async fn start(key: &Key) -> FakeGitHub {
        let state = Arc::new(Mutex::new(State {
            public_key: key.public_der.clone(),
            token_lifetime: 3600,
            ..State::default()
        }));
        let handler_state = state.clone();
        let receiver =
            responder(move |request| handler_state.lock().unwrap_or_else(PoisonError::into_inner).answer(request))
                .await;
        state.lock().unwrap().url = receiver.url.clone();
        // The requests are kept by the state; the receiver's own record is not needed.
        FakeGitHub { url: receiver.url, state }
    }

    /// The state; a test that failed holding it does not keep others from reading it.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn script(&self, endpoint: Endpoint, answer: Scripted) {
        self.state().scripted.push_back((endpoint, answer));
    }

    /// Takes the deviations recorded so far, so that a test expecting some does not fail on drop.
    fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.state().violations)
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        // A test failing already is not failed again, which would abort the test run.
        if !std::thread::panicking() {
            let violations = std::mem::take(&mut self.state().violations);
            assert!(violations.is_empty(), "requests deviating from GitHub's REST API:\n{}", violations.join("\n"));
        }
    }
}

impl State {
    /// Checks `request` against the API and answers it as GitHub would.
    fn answer(&mut self, request: &Request) -> Response {
        let mut violations = Vec::new();
        let mut check = |ok: bool, violation: String| {
            if !ok {
                violations.push(violation);
            }
        };
        let header = |name: &str| request.headers.get(name).map(String::as_str).unwrap_or_default();
        check(request.method == "POST", format!("method {} where the API has POST", request.method));
        // "Getting started with the REST API": the media type, the API version and a user agent.
        check(header("accept") == "application/vnd.github+json", format!("accept {:?}", header("accept")));
        check(
            header("x-github-api-version") == "2022-11-28",
            format!("x-github-api-version {:?}", header("x-github-api-version")),
        );
        check(!header("user-agent").trim().is_empty(), "no user-agent: GitHub refuses requests without one".into());
        let bearer = header("authorization").strip_prefix("Bearer ").unwrap_or_default().to_string();
        check(!bearer.is_empty(), "authorization is not `Bearer <token>`".into());
        let segments: Vec<&str> = request.path.split('/').collect();
        let answer = match segments.as_slice() {
            ["", "api", "v3", "app", "installations", id, "access_tokens"] => {
                self.access_token(request, id, &bearer, &mut violations)
            }
            ["", "api", "v3", "repos", owner, repo, "statuses", sha] => {
                self.create_status(request, owner, repo, sha, &bearer, &mut violations)
            }
            _ => {
                violations.push("no such endpoint in the API".into());
                error(404, "Not Found")
            }
        };
        let failed = !violations.is_empty();
        self.violations.extend(violations.into_iter().map(|v| format!("{} {}: {v}", request.method, request.path)));
        if failed { error(400, "the request deviates from the API (see the test's failure)") } else { answer }
    }

    /// `POST /app/installations/{installation_id}/access_tokens`, authorised by the app's JWT.
    fn access_token(&mut self, request: &Request, id: &str, jwt: &str, violations: &mut Vec<String>) -> Response {
        self.access_token_requests += 1;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            violations.push(format!("installation_id {id:?} is not an integer"));
        }
        // The body is optional: repositories, repository_ids, permissions.
        if !request.body.is_empty() {
            match serde_json::from_str::<Value>(&request.body) {
                Ok(Value::Object(fields)) => {
                    for name in fields
                        .keys()
                        .filter(|n| !["repositories", "repository_ids", "permissions"].contains(&n.as_str()))
                    {
                        violations.push(format!("body field {name:?} is not in the API"));
                    }
                }
                _ => violations.push(format!("body {:?} is not a JSON object", request.body)),
            }
        }
        self.jwts.push(jwt.to_string());
        match check_jwt(jwt, &self.public_key, now()) {
            Ok(()) => {}
            Err(JwtProblem::Deviation(why)) => {
                violations.push(format!("JWT: {why}"));
                return error(401, "A JSON web token could not be decoded");
            }
            Err(JwtProblem::Signature) => return error(401, "A JSON web token could not be decoded"),
        }
        if id != INSTALLATION.to_string() {
            return error(404, "Not Found");
        }
        if let Some(answer) = self.scripted(Endpoint::AccessToken, jwt) {
            return answer;
        }
        let expires = now() + self.token_lifetime;
        let token = format!("ghs_SECRET{}installation{expires}", self.issued.len());
        self.issued.push((token.clone(), expires));
        Response::json(
            201,
            &json!({
                "token": token,
                "expires_at": rfc3339(expires),
                "permissions": {"metadata": "read", "statuses": "write"},
                "repository_selection": "all",
            }),
        )
    }

    /// `POST /repos/{owner}/{repo}/statuses/{sha}`, authorised by a token.
    fn create_status(
        &mut self,
        request: &Request,
        owner: &str,
        repo: &str,
        sha: &str,
        token: &str,
        violations: &mut Vec<String>,
    ) -> Response {
        self.status_requests += 1;
        let name = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name(owner) || !name(repo) || repo.ends_with(".git") {
            violations.push(format!("{owner}/{repo} is not a repository's owner and name (without .git)"));
        }
        if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            violations.push(format!("{sha:?} is not a commit SHA"));
        }
        let content_type = request.headers.get("content-type").map(String::as_str).unwrap_or_default();
        if !content_type.starts_with("application/json") {
            violations.push(format!("content-type {content_type:?}: the body is JSON"));
        }
        let body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
        violations.extend(status_body_violations(&body));
        if token.matches('.').count() == 2 {
            violations.push("a JWT authorises the app's own endpoints, not a repository's".into());
        }
        let valid = token == PAT
            || self
                .issued
                .iter()
                .any(|(t, expires)| t == token && *expires > now() && !self.revoked.contains(&t.to_string()));
        if !valid {
            return error(401, "Bad credentials");
        }
        if let Some(answer) = self.scripted(Endpoint::Status, token) {
            return answer;
        }
        let created = Created {
            owner: owner.into(),
            repo: repo.into(),
            sha: sha.into(),
            authorization: token.into(),
            body: body.clone(),
        };
        self.created.push(created);
        let at = rfc3339(now());
        Response::json(
            201,
            &json!({
                "url": format!("{}/api/v3/repos/{owner}/{repo}/statuses/{sha}", self.url),
                "avatar_url": null,
                "id": self.created.len(),
                "node_id": format!("SC_{}", self.created.len()),
                "state": body["state"],
                "description": body.get("description").cloned().unwrap_or(Value::Null),
                "target_url": body.get("target_url").cloned().unwrap_or(Value::Null),
                "context": body.get("context").cloned().unwrap_or(json!("default")),
                "created_at": at,
                "updated_at": at,
                "creator": {
                    "login": "stepwise-test[bot]",
                    "id": 1,
                    "node_id": "BOT_1",
                    "type": "Bot",
                    "site_admin": false,
                },
            }),
        )
    }

    /// The next scripted answer for `endpoint`, if any, made for a request authorised by `bearer`.
    fn scripted(&mut self, endpoint: Endpoint, bearer: &str) -> Option<Response> {
        let at = self.scripted.iter().position(|(e, _)| *e == endpoint)?;
        Some(match self.scripted.remove(at)?.1 {
            Scripted::Reply(answer) => answer,
            Scripted::EchoAuthorization(status) => error(status, &format!("Bad credentials: Bearer {bearer}")),
        })
    }
}

/// What is wrong with the body of a create-commit-status request.
fn status_body_violations(body: &Value) -> Vec<String> {
    let Some(fields) = body.as_object() else { return vec![format!("body {body} is not a JSON object")] };
    let mut violations: Vec<String> = fields
        .keys()
        .filter(|name| !STATUS_FIELDS.contains(&name.as_str()))
        .map(|name| format!("body field {name:?} is not in the API"))
        .collect();
    match fields.get("state").and_then(Value::as_str) {
        Some(state) if STATES.contains(&state) => {}
        _ => violations.push(format!("state {:?} is not one of {STATES:?} (it is required)", fields.get("state"))),
    }
    for field in ["target_url", "description"] {
        if !matches!(fields.get(field), None | Some(Value::Null | Value::String(_))) {
            violations.push(format!("{field} is not a string or null"));
        }
    }
    if !matches!(fields.get("context"), None | Some(Value::String(_))) {
        violations.push("context is not a string".into());
    }
    // Not in the OpenAPI description, but GitHub answers a longer one with 422.
    if let Some(description) = fields.get("description").and_then(Value::as_str)
        && description.chars().count() > 140
    {
        violations.push(format!("description of {} characters: GitHub takes 140 at most", description.chars().count()));
    }
    if let Some(url) = fields.get("target_url").and_then(Value::as_str)
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        violations.push(format!("target_url {url:?} is not an http(s) URL"));
    }
    violations
}

enum JwtProblem {
    /// Not a JWT as GitHub's documentation asks for.
    Deviation(String),
    /// Signed with another key: GitHub refuses it, as it would a rotated key.
    Signature,
}

/// Checks an app's JWT as "Generating a JSON Web Token (JWT) for a GitHub App" describes it: RS256,
/// `iss` the app's ID, `iat` in the past, `exp` no more than 10 minutes after it and in the
/// future; signed with the app's key.
fn check_jwt(jwt: &str, public_key: &[u8], now: u64) -> Result<(), JwtProblem> {
    let deviation = |why: String| Err(JwtProblem::Deviation(why));
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return deviation(format!("{} parts, not header.claims.signature", parts.len()));
    };
    let json_of = |part: &str| base64url_decode(part).and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let Some(header_json) = json_of(header) else { return deviation("the header is not base64url JSON".into()) };
    if header_json["alg"] != "RS256" {
        return deviation(format!("alg {} is not RS256", header_json["alg"]));
    }
    if let Some(typ) = header_json.get("typ").filter(|typ| *typ != "JWT") {
        return deviation(format!("typ {typ} is not JWT"));
    }
    let Some(claims_json) = json_of(claims) else { return deviation("the claims are not base64url JSON".into()) };
    let issuer_ok = match &claims_json["iss"] {
        Value::String(iss) => iss == APP_ID,
        Value::Number(iss) => iss.to_string() == APP_ID,
        _ => false,
    };
    if !issuer_ok {
        return deviation(format!("iss {} is not the app's ID {APP_ID}", claims_json["iss"]));
    }
    let (Some(iat), Some(exp)) = (claims_json["iat"].as_u64(), claims_json["exp"].as_u64()) else {
        return deviation(format!("iat and exp are not integers: {claims_json}"));
    };
    if iat > now {
        return deviation(format!("iat {iat} is in the future (now {now})"));
    }
    if exp <= now || exp > now + 600 {
        return deviation(format!("exp {exp} is not within the next 10 minutes (now {now})"));
    }
    if exp.saturating_sub(iat) > 600 {
        return deviation(format!("exp - iat = {} s, more than 10 minutes", exp - iat));
    }
    let Some(signature) = base64url_decode(signature) else {
        return deviation("the signature is not base64url".into());
    };
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| JwtProblem::Signature)
}

/// base64url without padding, as JWTs are written; None for anything else.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut bits, mut count) = (0u32, 0u32);
    for c in text.bytes() {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(sextet);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

/// Unix seconds as GitHub writes times: `2016-07-11T22:14:10Z`.
fn rfc3339(seconds: u64) -> String {
    let (days, second) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted + 2) / 5 + 1;
    let month = if shifted < 10 { shifted + 3 } else { shifted - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", second / 3600, second / 60 % 60, second % 60)
}

/// GitHub's error body.
fn error(status: u16, message: &str) -> Response {
    Response::json(status, &json!({"message": message, "documentation_url": DOCS}))
}

fn secrets() -> BTreeMap<String, String> {
    data(&[
        ("github-token", PAT),
        ("github-privateKey", &keys().pkcs1.pem),
        ("github-privateKey-pkcs8", &keys().pkcs8.pem),
    ])
}

/// A token service.
const WITH_TOKEN: &str = "token: $github-token\n";

/// An app service of the PKCS#1 key.
fn with_app() -> String {
    format!("appID: {APP_ID}\ninstallationID: {INSTALLATION}\nprivateKey: $github-privateKey\n")
}

const TEMPLATE: &str = r#"message: |
  Rollout {{.rollout.metadata.name}} is fully promoted.
github:
  repoURLPath: "{{.rollout.metadata.annotations.repo}}"
  revisionPath: "{{.rollout.metadata.annotations.sha}}"
  status:
    state: success
    label: "continuous-delivery/{{.rollout.metadata.name}}"
    targetURL: "https://rollouts.example.com/{{.rollout.metadata.namespace}}/{{.rollout.metadata.name}}"
"#;

/// A config of the GitHub service `service` (YAML, without the fake's `enterpriseBaseURL`, which
/// is `base`), a template with a `github` section (`completed`) and one without (`plain`).
fn config_at(base: &str, service: &str, template: &str) -> Config {
    let service = format!("{service}enterpriseBaseURL: {base}\ntimeout: 5s\n");
    let config = data(&[
        ("service.github", &service),
        ("trigger.on-completed", "- send: [completed]\n"),
        ("trigger.on-plain", "- send: [plain]\n"),
        ("template.completed", template),
        ("template.plain", "message: Rollout {{.rollout.metadata.name}} is at a step.\n"),
    ]);
    Config::parse(&config, &secrets()).unwrap()
}

fn config(github: &FakeGitHub, service: &str) -> Config {
    config_at(&github.url, service, TEMPLATE)
}

fn vars() -> Value {
    json!({"rollout": {"metadata": {
        "name": "guestbook",
        "namespace": "shop",
        "annotations": {"repo": REPO, "sha": SHA},
    }}})
}

/// Sends the one message of `trigger` through the config's GitHub service.
async fn send(config: &Config, trigger: &str) -> Result<Sent, SendError> {
    let message = config.render(trigger, "github", &vars()).unwrap().remove(0);
    config.service("github").unwrap().send(&message, "ignored-recipient", None, "shop/guestbook/3/on-completed").await
}

/// The body GitHub should get for the `completed` template.
fn expected_body() -> Value {
    json!({
        "state": "success",
        "target_url": "https://rollouts.example.com/shop/guestbook",
        "description": "Rollout guestbook is fully promoted.",
        "context": "continuous-delivery/guestbook",
    })
}

/// Asserts that `text` shows neither the token, nor `more`, nor any 16 characters of a key.
fn assert_no_secret(text: &str, more: &[String]) {
    for secret in [PAT].iter().copied().chain(more.iter().map(String::as_str)) {
        assert!(!text.contains(secret), "{text:?} shows the secret {secret:?}");
    }
    for pem in [&keys().pkcs1.pem, &keys().pkcs8.pem] {
        let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
        let body: Vec<char> = body.chars().collect();
        for part in body.windows(16).step_by(8) {
            let part: String = part.iter().collect();
            assert!(!text.contains(&part), "{text:?} shows a part of a private key: {part:?}");
        }
    }
}

#[tokio::test]
async fn a_token_sets_the_commit_status_of_the_rendered_repository_and_revision() {
    let github = FakeGitHub::start(&keys().pkcs1).await;
    // The enterprise base URL is taken with or without its /api/v3.
    for base in [github.url.clone(), format!("{}/api/v3/", github.url)] {
        let sent = send(&config_at(&base, WITH_TOKEN, TEMPLATE), "on-completed").await.unwrap();
        assert_eq!(sent, Sent { thread: None });
    }
    let state = github.state();
    assert_eq!(state.access_token_requests, 0);
    assert_eq!(state.created.len(), 2);
    for created in &state.created {
        assert_eq!(
            (created.owner.as_str(), created.repo.as_str(), created.sha.as_str()),
            ("argoproj", "rollouts-demo", SHA)
        );
        assert_eq!(created.authorization, PAT);
        assert_eq!(created.body, expected_body());
    }
}

#[tokio::test]
async fn an_app_gets_an_installation_token_once_and_reuses_it_for_the_next_message() {
    let github = FakeGitHub::start(&keys().pkcs1).await;
    send(&config(&github, &with_app()), "on-completed").await.unwrap();
    // The controller parses the configuration again for every send: the token outlives it.
    send(&config(&github, &with_app()), "on-completed").await.unwrap();
    let state = github.state();
    assert_eq!(state.access_token_requests, 1, "one installation token for both messages");
    assert_eq!(state.issued.len(), 1);
    let token = &state.issued[0].0;
    assert_eq!(state.created.len(), 2);
    for created in &state.created {
        assert_eq!(&created.authorization, token, "the installation token, not the JWT");
        assert_eq!(created.body, expected_body());
    }
}

#[tokio::test]
async fn an_app_key_in_pkcs8_signs_as_well() {
    let github = FakeGitHub::start(&keys().pkcs8).await;
    let service =
        format!("appID: '{APP_ID}'\ninstallationID: '{INSTALLATION}'\nprivateKey: $github-privateKey-pkcs8\n");
    send(&config(&github, &service), "on-completed").await.unwrap();
    let state = github.state();
    assert_eq!((state.access_token_requests, state.created.len()), (1, 1));
    assert_eq!(state.created[0].authorization, state.issued[0].0);
}

#[tokio::test]
async fn an_installation_token_about_to_expire_is_renewed() {
    let github = FakeGitHub::start(&keys().pkcs1).await;
    // Four minutes left: less than the five the service keeps in hand.
    github.state().token_lifetime = 240;
    send(&config(&github, &with_app()), "on-completed").await.unwrap();
    send(&config(&github, &with_app()), "on-completed").await.unwrap();
    let state = github.state();
    assert_eq!(state.access_token_requests, 2);
    let used: Vec<&str> = state.created.iter().map(|c| c.authorization.as_str()).collect();
    let issued: Vec<&str> = state.issued.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(used, issued);
    assert_ne!(issued[0], issued[1]);
}

#[tokio::test]
async fn an_installation_token_github_no_longer_takes_is_renewed_within_the_send() {
    let github = FakeGitHub::start(&keys().pkcs1).await;
    send(&config(&github, &with_app()), "on-completed").await.unwrap();
    {
        let mut state = github.state();
        let revoked = state.issued[0].0.clone();
        state.revoked.push(revoked);
    }
    send(&config(&github, &with_app()), "on-completed").await.unwrap();
    let state = github.state();
    assert_eq!(state.access_token_requests, 2);
    assert_eq!(state.status_requests, 3, "the refused attempt, then the one with the new token");
    assert_eq!(state.created.len(), 2);
    assert_eq!(state.created[1].authorization, state.issued[1].0);
}

#[tokio::test]
async fn github_s_refusals_are_not_retryable_and_quote_its_message() {
    let github = FakeGitHub::start(&keys().pkcs1).await;
    // GitHub's answer to the 1001st status of a SHA and context.
    let limit = "This SHA and context has reached the maximum number of statuses.";
    let too_many = json!({
        "message": "Validation Failed",
        "errors": [{"resource": "Status", "code": "custom", "message": limit}],
        "documentation_url": DOCS,
    });
    let validation_failed = format!("HTTP 422 Unprocessable Entity: \"Validation Failed: {limit}\"");
    let cases = [
        (Response::json(422, &too_many), validation_failed.as_str()),
        (error(404, "Not Found"), "HTTP 404 Not Found: \"Not Found\""),
        (error(401, "Bad credentials"), "HTTP 401 Unauthorized: \"Bad credentials\""),
        (
            error(403, "Resource not accessible by personal access token"),
            "HTTP 403 Forbidden: \"Resource not accessible by personal access token\"",
        ),
    ];
    for (answer, said) in cases {
        github.script(Endpoint::Status, Scripted::Reply(answer));
        let err = send(&config(&github, WITH_TOKEN), "on-completed").await.unwrap_err();
        assert!(!err.retryable, "{err:?}");
        assert_eq!(err.message, format!("service.github: status of argoproj/rollouts-demo@9f86d08: {said}"));
    }
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retryable() {
    let github = FakeGitHub::start(&keys().pkcs1).await;
    let with_headers = |status: u16, message: &str, headers: &[(&str, &str)]| {
        let mut answer = error(status, message);
        answer.headers.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        answer
    };
    let cases = [
        error(500, "Server Error"),
        error(502, "Bad Gateway"),
        error(503, "Service Unavailable"),
        with_headers(429, "API rate limit exceeded", &[]),
        with_headers(
            403,
            "API rate limit exceeded for installation.",
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000000")],
        ),
        with_headers(403, "You have exceeded a secondary rate limit.", &[("retry-after", "60")]),
    ];
    for answer in cases {
        let status = answer.status;
        github.script(Endpoint::Status, Scripted::Reply(answer));
        let err = send(&config(&github, WITH_TOKEN), "on-completed").await.unwrap_err();
        assert!(err.retryable, "{status}: {err:?}");
        assert!(err.message.contains(&format!("HTTP {status}")), "{}", err.message);
    }
}

#[tokio::test]
async fn an_installation_token_github_refuses_is_not_retryable_and_its_server_error_is() {
    // The app's key is not the one configured: GitHub cannot verify the JWT.
    let github = FakeGitHub::start(&keys().pkcs8).await;
    let err = send(&config(&github, &with_app()), "on-completed").await.unwrap_err();
    assert!(!err.retryable, "{err:?}");
    assert_eq!(
        err.message,
        "service.github: installation access token: HTTP 401 Unauthorized: \"A JSON web token could not be decoded\""
    );
    // An installation the app does not have.
    let github = FakeGitHub::start(&keys().pkcs1).await;
    let other = with_app().replace(&INSTALLATION.to_string(), "77");
    let err = send(&config(&github, &other), "on-completed").await.unwrap_err();
    assert!(!err.retryable, "{err:?}");
    assert!(err.message.contains("HTTP 404 Not Found"), "{}", err.message);
    github.script(Endpoint::AccessToken, Scripted::Reply(error(500, "Server Error")));
    let err = send(&config(&github, &with_app()), "on-completed").await.unwrap_err();
    assert!(err.retryable, "{err:?}");
    assert_eq!(github.state().created.len(), 0);
}

#[tokio::test]
async fn no_error_shows_the_token_the_private_key_or_a_jwt_even_when_github_echoes_them() {
    let github = FakeGitHub::start(&keys().pkcs1).await;
    github.script(Endpoint::Status, Scripted::EchoAuthorization(401));
    let mut errors = vec![send(&config(&github, WITH_TOKEN), "on-completed").await.unwrap_err()];
    github.script(Endpoint::AccessToken, Scripted::EchoAuthorization(401));
    errors.push(send(&config(&github, &with_app()), "on-completed").await.unwrap_err());
    github.script(Endpoint::Status, Scripted::EchoAuthorization(422));
    errors.push(send(&config(&github, &with_app()), "on-completed").await.unwrap_err());
    let key = &keys().pkcs1.pem;
    let line = key.lines().nth(5).unwrap();
    github.script(Endpoint::Status, Scripted::Reply(error(422, &format!("{key} {line}"))));
    errors.push(send(&config(&github, &with_app()), "on-completed").await.unwrap_err());
    let mut seen = github.state().jwts.clone();
    seen.extend(seen.clone().iter().filter_map(|jwt| jwt.rsplit('.').next().map(String::from)));
    seen.extend(github.state().issued.iter().map(|(token, _)| token.clone()));
    assert_eq!(github.state().issued.len(), 1, "one installation token, echoed and kept");
    for err in &errors {
        assert!(err.message.contains("***"), "the echo is quoted, scrubbed: {}", err.message);
        assert_no_secret(&err.message, &seen);
        assert_no_secret(&format!("{err:?}"), &seen);
    }
}

#[tokio::test]
async fn a_long_message_is_cut_to_the_140_characters_github_takes() {
    let github = FakeGitHub::start(&keys().pkcs1).await;
    let template =
        TEMPLATE.replace("is fully promoted.", "{{range .rollout.metadata.steps}}is promoted at step {{.}}. {{end}}");
    let config = config_at(&github.url, WITH_TOKEN, &template);
    let mut vars = vars();
    vars["rollout"]["metadata"]["steps"] = json!((1..=20).collect::<Vec<_>>());
    let message = config.render("on-completed", "github", &vars).unwrap().remove(0);
    assert!(message.text.chars().count() > 140);
    config.service("github").unwrap().send(&message, "", None, "k").await.unwrap();
    let description = github.state().created[0].body["description"].as_str().unwrap().to_string();
    assert_eq!(description.chars().count(), 140, "{description}");
    assert!(
        description.starts_with("Rollout guestbook is promoted at step 1. is promoted at step 2."),
        "{description}"
    );
    assert!(description.ends_with('…'), "{description}");
}

#[tokio::test]
async fn a_template_without_a_github_section_is_not_sent() {
    let github = FakeGitHub::start(&keys().pkcs1).await;
    let err = send(&config(&github, WITH_TOKEN), "on-plain").await.unwrap_err();
    assert!(!err.retryable);
    assert_eq!(err.message, "service.github: template.plain has no github section (repoURLPath, revisionPath, status)");
    assert_eq!(github.state().status_requests, 0);
}

#[test]
fn a_section_github_would_refuse_is_a_render_error_naming_the_template_and_the_field() {
    let render = |state: &str, annotations: Value| {
        let template = TEMPLATE.replace("state: success", &format!("state: {state}"));
        let config = config_at("http://127.0.0.1:1", WITH_TOKEN, &template);
        let vars =
            json!({"rollout": {"metadata": {"name": "guestbook", "namespace": "shop", "annotations": annotations}}});
        config.render("on-completed", "github", &vars).unwrap_err()
    };
    let err = render("done", json!({"repo": REPO, "sha": SHA}));
    assert!(
        matches!(&err, Error::Template { key, field, .. }
            if key == "template.completed" && field == "github.status.state"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        r#"template.completed: github.status.state: "done" is not one of error, failure, pending, success"#
    );
    let err = render("success", json!({"repo": "https://github.com/argoproj", "sha": SHA}));
    assert!(
        err.to_string().starts_with(
            r#"template.completed: github.repoURLPath: "https://github.com/argoproj" is not a GitHub repository URL"#
        ),
        "{err}"
    );
    // An annotation the Rollout does not have renders Go's `<no value>`.
    let err = render("success", json!({"repo": REPO}));
    assert_eq!(
        err.to_string(),
        r#"template.completed: github.revisionPath: "<no value>" is not a commit SHA (40 hex digits)"#
    );
}

#[test]
fn a_bad_github_config_names_its_key_and_no_secret() {
    let parse = |service: &str| {
        let config = data(&[("service.github.ci", service)]);
        let message = Config::parse(&config, &secrets()).err().map(|e| e.to_string()).unwrap_or_default();
        assert_no_secret(&message, &[]);
        message
    };
    assert_eq!(
        parse(&format!("{WITH_TOKEN}{}", with_app())),
        "service.github.ci: token and a GitHub App (appID, installationID, privateKey) are both set: choose one"
    );
    // A token where the key should be.
    assert_eq!(
        parse("appID: 1\ninstallationID: 2\nprivateKey: $github-token\n"),
        "service.github.ci: privateKey is not a PEM RSA private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)"
    );
    assert_eq!(parse("token: \"a\\nb $github-token\"\n"), "service.github.ci: token is not valid in a header");
    assert_eq!(parse("privateKey: $github-privateKey\n").split(": ").nth(1), Some("appID is missing"));
}

#[tokio::test]
async fn the_fake_github_holds_requests_to_the_api() {
    // Against a client that deviates, the fake GitHub must find the deviations, or the tests above
    // prove nothing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let github = FakeGitHub::start(&keys().pkcs1).await;
    let client = reqwest::Client::new();
    let statuses = format!("{}/api/v3/repos/argoproj/rollouts-demo.git/statuses/main", github.url);
    let answer = client
        .post(&statuses)
        .header("accept", "application/json")
        .bearer_auth(PAT)
        .json(&json!({"state": "done", "description": "x".repeat(141), "label": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let violations = github.take_violations().join("\n");
    for expected in [
        "accept \"application/json\"",
        "x-github-api-version",
        "no user-agent",
        "is not a repository's owner and name",
        "\"main\" is not a commit SHA",
        "state Some(String(\"done\"))",
        "body field \"label\"",
        "description of 141 characters",
    ] {
        assert!(violations.contains(expected), "{expected} not found in:\n{violations}");
    }
    // A JWT whose claims GitHub refuses, and one signed with another key.
    let tokens = format!("{}/api/v3/app/installations/{INSTALLATION}/access_tokens", github.url);
    let header = "eyJhbGciOiJub25lIn0"; // {"alg":"none"}
    let jwt = format!("{header}.e30.");
    let request = client
        .post(&tokens)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .header("user-agent", "test")
        .bearer_auth(&jwt);
    assert_eq!(request.send().await.unwrap().status().as_u16(), 400);
    assert!(github.take_violations().join("\n").contains("alg \"none\" is not RS256"));
    let now = now();
    let bad = |claims: Value| {
        let encode = |v: &Value| base64url(v.to_string().as_bytes());
        check_jwt(
            &format!("{}.{}.AAAA", encode(&json!({"alg": "RS256", "typ": "JWT"})), encode(&claims)),
            &keys().pkcs1.public_der,
            now,
        )
    };
    let deviation = |r: Result<(), JwtProblem>| matches!(r, Err(JwtProblem::Deviation(_)));
    assert!(deviation(bad(json!({"iss": APP_ID, "iat": now - 60, "exp": now + 660}))), "exp too far");
    assert!(deviation(bad(json!({"iss": APP_ID, "iat": now - 700, "exp": now + 10}))), "exp - iat > 600");
    assert!(deviation(bad(json!({"iss": "1", "iat": now - 60, "exp": now + 540}))), "another app");
    assert!(deviation(bad(json!({"iss": APP_ID, "iat": now + 60, "exp": now + 540}))), "iat in the future");
    assert!(matches!(bad(json!({"iss": APP_ID, "iat": now - 60, "exp": now + 540})), Err(JwtProblem::Signature)));
}

/// base64url without padding, for the JWTs the fake is tried with.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}
