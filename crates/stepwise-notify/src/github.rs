//! The GitHub service (`service.github`, or `service.github.<name>` for several apps or GitHub
//! Enterprise servers), as Argo's sets commit statuses: each message becomes the status of one
//! commit, so that the commit and its pull request show how the release of it went.
//!
//! ```yaml
//! service.github: |
//!   appID: 123456
//!   installationID: 7890123
//!   privateKey: $github-privateKey
//! template.rollout-completed: |
//!   message: Rollout {{.rollout.metadata.name}} is fully promoted.
//!   github:
//!     repoURLPath: '{{index .rollout.metadata.annotations "example.com/repo"}}'
//!     revisionPath: '{{index .rollout.metadata.annotations "example.com/sha"}}'
//!     status:
//!       state: success
//!       label: continuous-delivery/{{.rollout.metadata.name}}
//!       targetURL: https://rollouts.example.com/{{.rollout.metadata.name}}
//! ```
//!
//! Config: a GitHub App's `appID` (or its client ID), `installationID` and `privateKey` (the PEM
//! GitHub hands out, `BEGIN RSA PRIVATE KEY`; PKCS#8 `BEGIN PRIVATE KEY` too), or instead a
//! `token` (a personal or fine-grained access token allowed to write commit statuses);
//! `enterpriseBaseURL` for GitHub Enterprise Server, whose API is under `<base>/api/v3` (with or
//! without `/api/v3` written, unlike Argo, which needs it written); `timeout` (10 s for the whole
//! send) and `insecureSkipVerify`.
//!
//! An app signs a JWT (RS256, valid for 10 minutes) with its key and exchanges it for an
//! installation access token, which GitHub makes valid for an hour. The controller parses the
//! configuration again for every send, so the token is kept in the process, per API, app,
//! installation and key, and reused until 5 minutes before it expires; a token GitHub refuses
//! anyway (revoked) is renewed once within the send.
//!
//! The template's `github` section gives the repository's URL (`repoURLPath`: `https://`, `ssh://`
//! or `git@host:owner/repo.git`), the commit's SHA (`revisionPath`, 40 hex digits) and the
//! `status`: `state` (`error`, `failure`, `pending` or `success`), `label` (GitHub's `context`;
//! GitHub's `default` when empty), `targetURL` and `description`, which defaults to the message
//! text, on one line and cut to GitHub's 140 characters. Argo's other GitHub sections
//! (deployments, pull request comments, check runs, repository dispatches) are refused when the
//! template renders rather than ignored, and so is a template without a `github` section when it
//! is sent, as in Argo. The recipient of a subscription is ignored.
//!
//! GitHub's refusals (401, 403, 404, 422: a bad token, no permission, no such repository or
//! commit, a validation error or 1000 statuses of one context already) are not retryable and
//! quote GitHub's `message`; 429, 5xx and a 403 of a rate limit (`x-ratelimit-remaining: 0` or
//! `retry-after`) are.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue, RETRY_AFTER};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::config::Secrets;
use crate::http::{self, Redactor};
use crate::{Error, Message, SendError, Sending, Sent, Service};

/// The service type, and the key of its template sections.
pub const KIND: &str = "github";

/// Where GitHub's REST API is when `enterpriseBaseURL` does not say.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// The REST API version every request asks for (`X-GitHub-Api-Version`), so that a later default
/// version of GitHub's does not change what the requests mean.
pub const API_VERSION: &str = "2022-11-28";

/// The media type GitHub recommends in `Accept`.
const MEDIA_TYPE: &str = "application/vnd.github+json";

/// The states of a commit status, as GitHub takes them.
pub const STATES: &[&str] = &["error", "failure", "pending", "success"];

/// The longest description GitHub takes: a longer one is refused with 422.
pub const DESCRIPTION_CHARS: usize = 140;

/// How long before now a JWT says it was issued, against clocks running apart (GitHub's advice).
const JWT_BACKDATE: u64 = 60;

/// How long after now a JWT expires: 10 minutes after its `iat`, GitHub's most.
const JWT_EXPIRES_IN: u64 = 540;

/// How long before it expires an installation token is renewed, so that it does not expire
/// between being taken and being used.
const RENEW_BEFORE: u64 = 300;

/// How a repository's URL may be written, for errors.
const REPOSITORY_FORMS: &str = "https://github.com/owner/repo, git@github.com:owner/repo.git or owner/repo";

/// The fields of a template's `github` section.
const FIELDS: &[&str] = &["repoURLPath", "revisionPath", "status"];

/// The fields of its `status`.
const STATUS_FIELDS: &[&str] = &["state", "label", "targetURL", "description"];

/// Argo's other sections, which this service does not implement.
const UNSUPPORTED: &[&str] = &["deployment", "pullRequestComment", "checkRun", "repositoryDispatch"];

/// A `service.github` value as written. The credentials are YAML values rather than strings, so
/// that one of another type is refused without the parser quoting it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitHubConfig {
    #[serde(rename = "appID")]
    app_id: Option<serde_yaml::Value>,
    #[serde(rename = "installationID")]
    installation_id: Option<serde_yaml::Value>,
    private_key: Option<serde_yaml::Value>,
    token: Option<serde_yaml::Value>,
    #[serde(rename = "enterpriseBaseURL")]
    enterprise_base_url: Option<String>,
    timeout: Option<serde_yaml::Value>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// How requests are authorised.
enum Auth {
    /// A personal or fine-grained access token, used as it is.
    Token(String),
    /// A GitHub App's installation, whose tokens are obtained with a JWT (boxed: a key is large).
    App(Box<App>),
}

/// A GitHub App installation.
struct App {
    /// The JWT's `iss`: the app's ID or client ID.
    issuer: String,
    installation: u64,
    key: RsaKeyPair,
    /// The key of [`TOKENS`]: API, app, installation and the key's public half.
    cache_key: String,
}

/// A configured GitHub service, its secrets resolved.
pub struct GitHub {
    /// The ConfigMap key, which names the service in errors.
    key: String,
    /// The REST API's base URL, without a trailing slash.
    api: String,
    auth: Auth,
    /// The deadline of a whole send, token exchange included.
    timeout: Duration,
    client: Result<reqwest::Client, String>,
    /// The config's secret values; a send adds the JWT and the installation token it uses.
    secrets: Vec<String>,
}

/// Installation tokens by [`App::cache_key`]: the token and when it expires (Unix seconds). In
/// the process rather than the service, since the configuration is parsed again for every send.
static TOKENS: Mutex<BTreeMap<String, (String, u64)>> = Mutex::new(BTreeMap::new());

/// Builds the GitHub service of the ConfigMap key `key` from its YAML `config`.
pub fn build(key: &str, config: &str, secrets: &BTreeMap<String, String>) -> Result<Box<dyn Service>, Error> {
    let invalid = |message: String| Error::Config { key: key.to_string(), message };
    let config: GitHubConfig =
        serde_yaml::from_str(config).map_err(|e| invalid(format!("not a GitHub config: {e}")))?;
    let mut secrets = Secrets::new(key, secrets);
    let api = match config.enterprise_base_url.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_API_URL.to_string(),
        Some(base) => api_url(&secrets.resolve(base)?)
            .ok_or_else(|| invalid("enterpriseBaseURL is not an http:// or https:// URL with a host".into()))?,
    };
    let auth = auth(&config, &mut secrets, &api)?.map_err(invalid)?;
    let timeout = crate::webhook::timeout(config.timeout.as_ref()).map_err(|e| invalid(format!("timeout: {e}")))?;
    Ok(Box::new(GitHub {
        key: key.to_string(),
        api,
        auth,
        timeout,
        client: http::client(config.insecure_skip_verify),
        secrets: secrets.into_used(),
    }))
}

/// The REST API of a GitHub Enterprise Server at `base`: `<base>/api/v3`, unless `base` says
/// `/api/v3` already or is an API host of its own (`api.<name>.ghe.com`), as go-github reads it.
fn api_url(base: &str) -> Option<String> {
    let mut url = reqwest::Url::parse(base.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let text = url.as_str().trim_end_matches('/').to_string();
    if text.ends_with("/api/v3") || host.starts_with("api.") || host.contains(".api.") {
        Some(text)
    } else {
        Some(format!("{text}/api/v3"))
    }
}

/// The credentials of `config`: a token, or an app. The outer error is a missing secret; the
/// inner one, what is wrong with the config.
fn auth(config: &GitHubConfig, secrets: &mut Secrets, api: &str) -> Result<Result<Auth, String>, Error> {
    let app = config.app_id.is_some() || config.installation_id.is_some() || config.private_key.is_some();
    match (&config.token, app) {
        (Some(_), true) => {
            Ok(Err("token and a GitHub App (appID, installationID, privateKey) are both set: choose one".into()))
        }
        (Some(token), false) => {
            let Some(token) = text_of(token) else { return Ok(Err("token is not text".into())) };
            let token = secrets.resolve(&token)?.trim().to_string();
            // Written in the ConfigMap or not, a token is a credential.
            secrets.treat_as_secret(&token);
            if token.is_empty() {
                return Ok(Err("token is empty".into()));
            }
            // Not quoted back: the value is the credential.
            if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                return Ok(Err("token is not valid in a header".into()));
            }
            Ok(Ok(Auth::Token(token)))
        }
        (None, true) => Ok(app_auth(config, secrets, api)?.map(|app| Auth::App(Box::new(app)))),
        (None, false) => {
            Ok(Err("no credentials: give a GitHub App's appID, installationID and privateKey, or a token".into()))
        }
    }
}

/// The GitHub App of `config`, which has at least one of its fields.
fn app_auth(config: &GitHubConfig, secrets: &mut Secrets, api: &str) -> Result<Result<App, String>, Error> {
    let missing =
        |field: &str| Ok(Err(format!("{field} is missing: a GitHub App needs appID, installationID and privateKey")));
    let (Some(app_id), Some(installation_id), Some(private_key)) =
        (&config.app_id, &config.installation_id, &config.private_key)
    else {
        let field = [("appID", &config.app_id), ("installationID", &config.installation_id)]
            .into_iter()
            .find(|(_, value)| value.is_none())
            .map_or("privateKey", |(field, _)| field);
        return missing(field);
    };
    let issuer = match text_of(app_id) {
        Some(text) => secrets.resolve(&text)?.trim().to_string(),
        None => String::new(),
    };
    // A number, or a client ID (`Iv23li…`), which GitHub recommends as the JWT's issuer.
    if issuer.is_empty() || !issuer.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        return Ok(Err("appID is not a GitHub App's ID (a number) or client ID".into()));
    }
    let installation = match text_of(installation_id) {
        Some(text) => secrets.resolve(&text)?.trim().parse::<u64>().ok().filter(|id| *id > 0),
        None => None,
    };
    let Some(installation) = installation else {
        return Ok(Err("installationID is not an installation's ID (a number)".into()));
    };
    let Some(pem) = text_of(private_key) else { return Ok(Err("privateKey is not text".into())) };
    let pem = secrets.resolve(&pem)?;
    // Written in the ConfigMap or not, the key is a credential; a line of it is as secret, should
    // a receiver quote a part of it.
    secrets.treat_as_secret(pem.trim());
    for line in pem.lines().map(str::trim).filter(|line| line.len() >= 16 && !line.starts_with("-----")) {
        secrets.treat_as_secret(line);
    }
    let key = match private_key_of(&pem) {
        Ok(key) => key,
        Err(e) => return Ok(Err(e)),
    };
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, key.public().as_ref());
    let fingerprint: String = fingerprint.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let cache_key = format!("{api} {issuer} {installation} {fingerprint}");
    Ok(Ok(App { issuer, installation, key, cache_key }))
}

/// A YAML scalar as text: a number written without quotes is text too.
fn text_of(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(text) => Some(text.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The RSA key of a PEM `RSA PRIVATE KEY` (PKCS#1, what GitHub hands out) or `PRIVATE KEY`
/// (PKCS#8). Errors never quote the key.
fn private_key_of(pem: &str) -> Result<RsaKeyPair, String> {
    const NOT_PEM: &str = "privateKey is not a PEM RSA private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)";
    let begin = pem.find("-----BEGIN ").ok_or(NOT_PEM)?;
    let (label, rest) = pem[begin + "-----BEGIN ".len()..].split_once("-----").ok_or(NOT_PEM)?;
    let body = &rest[..rest.find(&format!("-----END {label}-----")).ok_or(NOT_PEM)?];
    if label == "ENCRYPTED PRIVATE KEY" || body.contains("ENCRYPTED") {
        return Err("privateKey is encrypted: give it unencrypted, as GitHub hands it out".into());
    }
    let base64: String = body.split_ascii_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD.decode(base64).map_err(|_| NOT_PEM)?;
    let key = match label {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        _ if label.len() <= 40 && label.chars().all(|c| c.is_ascii_uppercase() || c == ' ') => {
            return Err(format!("privateKey is a PEM {label}, not an RSA private key (BEGIN RSA PRIVATE KEY)"));
        }
        _ => return Err(NOT_PEM.into()),
    };
    key.map_err(|e| format!("privateKey is not a usable RSA private key: {e}"))
}

/// `bytes` in base64url without padding (RFC 4648 §5), as JWTs are written.
fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims of an app's JWT made at `now` (Unix seconds): issued a minute ago, expiring 10
/// minutes after that.
fn claims(issuer: &str, now: u64) -> Value {
    json!({"iat": now.saturating_sub(JWT_BACKDATE), "exp": now + JWT_EXPIRES_IN, "iss": issuer})
}

/// The JWT `app` authenticates as itself with at `now`, signed RS256 with its key.
fn jwt(app: &App, now: u64) -> Result<String, String> {
    let header = base64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let input = format!("{header}.{}", base64url(claims(&app.issuer, now).to_string().as_bytes()));
    let mut signature = vec![0; app.key.public().modulus_len()];
    app.key
        .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature)
        .map_err(|_| "cannot sign a JWT with privateKey".to_string())?;
    Ok(format!("{input}.{}", base64url(&signature)))
}

/// Now, in Unix seconds.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The installation token kept for `cache_key`, unless it expires within [`RENEW_BEFORE`].
fn kept_token(cache_key: &str, now: u64) -> Option<String> {
    let tokens = TOKENS.lock().unwrap_or_else(PoisonError::into_inner);
    tokens.get(cache_key).filter(|(_, expires)| now + RENEW_BEFORE < *expires).map(|(token, _)| token.clone())
}

/// Keeps `token`, expiring at `expires`, for `cache_key`; drops the tokens expired by `now`.
fn keep_token(cache_key: &str, token: &str, expires: u64, now: u64) {
    let mut tokens = TOKENS.lock().unwrap_or_else(PoisonError::into_inner);
    tokens.retain(|_, (_, at)| *at > now);
    tokens.insert(cache_key.to_string(), (token.to_string(), expires));
}

/// Drops `token`, which GitHub refused, unless another send renewed it already.
fn forget_token(cache_key: &str, token: &str) {
    let mut tokens = TOKENS.lock().unwrap_or_else(PoisonError::into_inner);
    if tokens.get(cache_key).is_some_and(|(kept, _)| kept == token) {
        tokens.remove(cache_key);
    }
}

/// An RFC 3339 time (`2016-07-11T22:14:10Z`, GitHub's `expires_at`) in Unix seconds.
fn unix_seconds(text: &str) -> Option<u64> {
    u64::try_from(text.trim().parse::<jiff::Timestamp>().ok()?.as_second()).ok()
}

/// A template's `github` section serves every GitHub service.
pub fn section(section: &Value, _name: &str) -> Option<(String, Value)> {
    Some((KIND.to_string(), section.clone()))
}

/// Checks a rendered section and writes it as the service reads it: trimmed, the SHA in lower
/// case, empty optional fields left out. An error names the field.
pub fn finish(rendered: Value) -> Result<Value, (String, String)> {
    Ok(CommitStatus::read(&rendered)?.section())
}

/// The commit status a rendered section sets.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CommitStatus {
    /// `repoURLPath` as rendered, trimmed.
    repo_url: String,
    owner: String,
    repo: String,
    /// 40 hex digits, in lower case.
    sha: String,
    state: String,
    /// The `label`, GitHub's `context`.
    context: Option<String>,
    target_url: Option<String>,
    description: Option<String>,
}

impl CommitStatus {
    /// The commit status of a rendered `github` section; an error names the field.
    fn read(section: &Value) -> Result<Self, (String, String)> {
        let path = |field: &str| format!("{KIND}.{field}");
        let Some(fields) = section.as_object() else {
            return Err((KIND.into(), "not a map (repoURLPath, revisionPath, status)".into()));
        };
        for name in fields.keys() {
            if UNSUPPORTED.contains(&name.as_str()) {
                return Err((path(name), "not supported: stepwise sets commit statuses only (status)".into()));
            }
            if !FIELDS.contains(&name.as_str()) {
                return Err((path(name), "not a field of a github section (repoURLPath, revisionPath, status)".into()));
            }
        }
        let field = "repoURLPath";
        let repo_url =
            text(fields, field)?.ok_or_else(|| (path(field), "missing: the repository's URL, as rendered".into()))?;
        let (owner, repo) = repository(&repo_url).ok_or_else(|| {
            let shown = http::snippet(&without_credentials(&repo_url));
            (path(field), format!("{shown} is not a GitHub repository URL ({REPOSITORY_FORMS})"))
        })?;
        let field = "revisionPath";
        let sha = text(fields, field)?.ok_or_else(|| (path(field), "missing: the commit's SHA, as rendered".into()))?;
        if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err((path(field), format!("{} is not a commit SHA (40 hex digits)", http::snippet(&sha))));
        }
        let status = match fields.get("status") {
            None | Some(Value::Null) => {
                return Err((path("status"), "missing: the commit status to set (state, label, targetURL)".into()));
            }
            Some(Value::Object(status)) => status,
            Some(_) => return Err((path("status"), "not a map (state, label, targetURL, description)".into())),
        };
        let path = |field: &str| format!("{KIND}.status.{field}");
        if let Some(name) = status.keys().find(|name| !STATUS_FIELDS.contains(&name.as_str())) {
            return Err((path(name), "not a field of a status (state, label, targetURL, description)".into()));
        }
        let states = STATES.join(", ");
        let state = text(status, "state")?.ok_or_else(|| (path("state"), format!("missing: one of {states}")))?;
        if !STATES.contains(&state.as_str()) {
            return Err((path("state"), format!("{} is not one of {states}", http::snippet(&state))));
        }
        let target_url = text(status, "targetURL")?;
        if let Some(url) = &target_url {
            let absolute =
                reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !absolute {
                return Err((path("targetURL"), format!("{} is not an http:// or https:// URL", http::snippet(url))));
            }
        }
        Ok(CommitStatus {
            repo_url,
            owner,
            repo,
            sha: sha.to_ascii_lowercase(),
            state,
            context: text(status, "label")?,
            target_url,
            description: text(status, "description")?,
        })
    }

    /// The section this status was read from, as [`finish`] leaves it.
    fn section(&self) -> Value {
        let mut status = Map::new();
        status.insert("state".into(), json!(self.state));
        let optional = [("label", &self.context), ("targetURL", &self.target_url), ("description", &self.description)];
        for (field, value) in optional {
            if let Some(value) = value {
                status.insert(field.into(), json!(value));
            }
        }
        json!({"repoURLPath": self.repo_url, "revisionPath": self.sha, "status": status})
    }

    /// The body of `POST /repos/{owner}/{repo}/statuses/{sha}`, its description the message
    /// `text` unless the section gives one.
    fn body(&self, text: &str) -> Value {
        let description = self.description.as_deref().unwrap_or(text);
        // One line: GitHub shows the description in a single line next to the status.
        let description = cut(&description.split_whitespace().collect::<Vec<_>>().join(" "), DESCRIPTION_CHARS);
        let mut body = json!({"state": self.state});
        if let Some(url) = &self.target_url {
            body["target_url"] = json!(url);
        }
        if !description.is_empty() {
            body["description"] = json!(description);
        }
        if let Some(context) = &self.context {
            body["context"] = json!(context);
        }
        body
    }
}

/// The text of `fields[name]`, trimmed; None when absent or empty. A number or a boolean is text.
fn text(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, (String, String)> {
    let text = match fields.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text.trim().to_string(),
        Some(value @ (Value::Number(_) | Value::Bool(_))) => value.to_string(),
        Some(_) => return Err((format!("{KIND}.{name}"), "not text".into())),
    };
    Ok(Some(text).filter(|t| !t.is_empty()))
}

/// `text` cut to `max` characters, an ellipsis ending a cut one.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let end = text.char_indices().nth(max - 1).map_or(text.len(), |(at, _)| at);
    format!("{}…", &text[..end])
}

/// The owner and name of the repository at `url`: `https://host/owner/repo(.git)`, `ssh://`,
/// `git://`, `git@host:owner/repo.git`, `host/owner/repo` or `owner/repo`. Path segments after the
/// name (`/tree/main`) are ignored, as Argo ignores them.
fn repository(url: &str) -> Option<(String, String)> {
    let url = url.trim();
    let path = match url.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if !matches!(scheme.as_str(), "https" | "http" | "ssh" | "git" | "git+ssh" | "ssh+git") {
                return None;
            }
            let (authority, path) = rest.split_once('/')?;
            if authority.is_empty() {
                return None;
            }
            path
        }
        None => match url.split_once(':') {
            // scp-like: [user@]host:owner/repo.git
            Some((host, path)) if !host.is_empty() && !host.contains('/') => path,
            Some(_) => return None,
            // A first segment with a dot is a host: owners have none.
            None if url.split('/').next()?.contains('.') => url.split_once('/')?.1,
            None => url,
        },
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let owner = segments.next()?;
    let repo = segments.next()?;
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    // What GitHub allows in names, and nothing that would change the API's path.
    let name = |s: &str| {
        !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (name(owner) && name(repo)).then(|| (owner.to_string(), repo.to_string()))
}

/// `url` with the credentials of `scheme://user:password@host/…` replaced by `***`.
fn without_credentials(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

impl GitHub {
    /// A redactor of the config's secrets and `more` (the JWT, the installation token).
    fn redactor(&self, more: &[&str]) -> Redactor {
        Redactor::new(self.secrets.iter().cloned().chain(more.iter().map(|s| s.to_string())).collect())
    }

    /// A request to GitHub's API at `path`, authorised by `bearer`.
    fn post(&self, client: &reqwest::Client, path: &str, bearer: &str) -> reqwest::RequestBuilder {
        client
            .post(format!("{}{path}", self.api))
            .header(ACCEPT, MEDIA_TYPE)
            .header("X-GitHub-Api-Version", API_VERSION)
            .bearer_auth(bearer)
    }

    /// The token to send with, and whether it was obtained just now (so that GitHub refusing it
    /// is not a matter of renewing it): the configured token, or an installation token, kept or
    /// obtained with a JWT.
    async fn token(&self, client: &reqwest::Client, deadline: Instant) -> Result<(String, bool), SendError> {
        let app = match &self.auth {
            Auth::Token(token) => return Ok((token.clone(), true)),
            Auth::App(app) => app,
        };
        let now = unix_now();
        if let Some(token) = kept_token(&app.cache_key, now) {
            return Ok((token, false));
        }
        let target = format!("{}: installation access token", self.key);
        let jwt = jwt(app, now).map_err(|e| self.redactor(&[]).error(false, format!("{target}: {e}")))?;
        let redactor = self.redactor(&[&jwt]);
        let request = self.post(client, &format!("/app/installations/{}/access_tokens", app.installation), &jwt);
        let (status, headers, body) = http::exchange_by(request, deadline, self.timeout, &target, &redactor).await?;
        if !(200..300).contains(&status) {
            return Err(github_error(&target, status, &headers, &body, &redactor));
        }
        let answer: Value = serde_json::from_str(&body).unwrap_or_default();
        let Some(token) = answer.get("token").and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty()) else {
            let message = format!("{target}: GitHub's answer has no token: {}", redactor.quote(&body));
            return Err(redactor.error(false, message));
        };
        // Without a time it expires, the token serves this send only.
        if let Some(expires) = answer.get("expires_at").and_then(Value::as_str).and_then(unix_seconds) {
            keep_token(&app.cache_key, token, expires, now);
        }
        Ok((token.to_string(), true))
    }
}

impl Service for GitHub {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn send<'a>(&'a self, message: &'a Message, _: &'a str, _: Option<&'a str>, _: &'a str) -> Sending<'a> {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let failed = |text: String| self.redactor(&[]).error(false, format!("{}: {text}", self.key));
            let Some(section) = message.fields.get(KIND) else {
                let template = &message.template;
                return Err(failed(format!(
                    "template.{template} has no github section (repoURLPath, revisionPath, status)"
                )));
            };
            // `finish` checked the section already; a message made otherwise is checked here.
            let status = CommitStatus::read(section).map_err(|(field, e)| failed(format!("{field}: {e}")))?;
            let client = self.client.as_ref().map_err(|e| failed(e.clone()))?;
            let target = format!("{}: status of {}/{}@{}", self.key, status.owner, status.repo, &status.sha[..7]);
            let path = format!("/repos/{}/{}/statuses/{}", status.owner, status.repo, status.sha);
            let body = status.body(&message.text);
            let mut renewed = false;
            loop {
                let (token, fresh) = self.token(client, deadline).await?;
                let redactor = self.redactor(&[&token]);
                let request = self.post(client, &path, &token).json(&body);
                let (code, headers, answer) =
                    http::exchange_by(request, deadline, self.timeout, &target, &redactor).await?;
                if (200..300).contains(&code) {
                    return Ok(Sent::default());
                }
                // An installation token kept from before may have been revoked: a new one, once.
                if let (401, false, false, Auth::App(app)) = (code, fresh, renewed, &self.auth) {
                    forget_token(&app.cache_key, &token);
                    renewed = true;
                    continue;
                }
                return Err(github_error(&target, code, &headers, &answer, &redactor));
            }
        })
    }
}

/// The error of an answer other than 2xx, quoting GitHub's `message`: retryable for 429, 5xx and
/// a 403 of a rate limit; a refusal otherwise.
fn github_error(target: &str, status: u16, headers: &HeaderMap, body: &str, redactor: &Redactor) -> SendError {
    let retry_after = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let exhausted = headers.get("x-ratelimit-remaining").is_some_and(|v| v.as_bytes().trim_ascii() == b"0");
    let rate_limited = status == 429 || (status == 403 && (exhausted || headers.contains_key(RETRY_AFTER)));
    let retryable = rate_limited || status >= 500;
    let said = github_message(body).unwrap_or_else(|| body.to_string());
    let mut message = format!("{target}: {}: {}", http::status_text(status), redactor.quote(&said));
    if rate_limited {
        message.push_str(" (rate limited");
        if let Some(seconds) = retry_after {
            message.push_str(&format!("; retry after {seconds} s"));
        }
        message.push(')');
    }
    redactor.error(retryable, message)
}

/// GitHub's `message` of an error body, followed by the messages of its `errors` (a validation
/// error's details: `description is too long (maximum is 140 characters)`).
fn github_message(body: &str) -> Option<String> {
    let answer: Value = serde_json::from_str(body).ok()?;
    let message = answer.get("message")?.as_str()?.trim();
    let details: Vec<String> = answer
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|error| match error {
            Value::String(text) => Some(text.clone()),
            Value::Object(fields) => fields.get("message").and_then(Value::as_str).map(String::from).or_else(|| {
                let field = fields.get("field")?.as_str()?;
                let code = fields.get("code")?.as_str()?;
                Some(format!("{field} {code}"))
            }),
            _ => None,
        })
        .collect();
    Some(if details.is_empty() { message.to_string() } else { format!("{message}: {}", details.join("; ")) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn built(config: &str) -> Result<Box<dyn Service>, Error> {
        let secrets = [("token".to_string(), "ghp_SECRET".to_string()), ("key".to_string(), "not a key".to_string())];
        build("service.github", config, &secrets.into())
    }

    fn error(config: &str) -> String {
        built(config).err().map(|e| e.to_string()).unwrap_or_default()
    }

    fn section(state: &str) -> Value {
        json!({
            "repoURLPath": " https://github.com/argoproj/argo-rollouts.git\n",
            "revisionPath": SHA.to_uppercase(),
            "status": {
                "state": state,
                "label": "continuous-delivery/guestbook",
                "targetURL": "https://ci.example.com/1",
            },
        })
    }

    #[test]
    fn repository_urls_are_read_in_every_form_git_writes_them() {
        let repo = |url: &str| repository(url).map(|(o, r)| format!("{o}/{r}"));
        for url in [
            "https://github.com/argoproj/argo-rollouts",
            "https://github.com/argoproj/argo-rollouts.git",
            "https://github.com/argoproj/argo-rollouts/",
            "https://user:token@github.com/argoproj/argo-rollouts.git",
            "https://github.com/argoproj/argo-rollouts/tree/master?tab=readme#top",
            "http://ghe.example.com:8080/argoproj/argo-rollouts",
            "git@github.com:argoproj/argo-rollouts.git",
            "git@github.com:argoproj/argo-rollouts",
            "ssh://git@github.com/argoproj/argo-rollouts.git",
            "ssh://git@github.com:22/argoproj/argo-rollouts.git",
            "git://github.com/argoproj/argo-rollouts.git",
            "git+ssh://git@github.com/argoproj/argo-rollouts",
            "github.com/argoproj/argo-rollouts",
            "argoproj/argo-rollouts",
        ] {
            assert_eq!(repo(url).as_deref(), Some("argoproj/argo-rollouts"), "{url}");
        }
        assert_eq!(repo("https://github.com/o/my_repo.v2.git").as_deref(), Some("o/my_repo.v2"));
        for url in [
            "",
            "<no value>",
            "https://github.com/argoproj",
            "https://github.com/",
            "ftp://github.com/o/r",
            "https:///o/r",
            "https://github.com/o/r%2F..",
            "https://github.com/o/..",
            "https://github.com/o/r r",
            "argoproj",
        ] {
            assert_eq!(repo(url), None, "{url}");
        }
    }

    #[test]
    fn a_repository_url_is_quoted_without_its_credentials() {
        assert_eq!(without_credentials("https://u:ghp_x@github.com/o"), "https://***@github.com/o");
        assert_eq!(without_credentials("git@github.com:o"), "git@github.com:o");
        let (field, message) = finish(json!({"repoURLPath": "https://u:ghp_x@h/o", "revisionPath": SHA})).unwrap_err();
        assert_eq!(field, "github.repoURLPath");
        assert!(message.starts_with(r#""https://***@h/o" is not a GitHub repository URL"#), "{message}");
    }

    #[test]
    fn a_rendered_section_is_trimmed_and_its_sha_in_lower_case() {
        let expected = json!({
            "repoURLPath": "https://github.com/argoproj/argo-rollouts.git",
            "revisionPath": SHA,
            "status": {
                "state": "success",
                "label": "continuous-delivery/guestbook",
                "targetURL": "https://ci.example.com/1",
            },
        });
        assert_eq!(finish(section("success")).unwrap(), expected);
        // What finish wrote, it reads again the same.
        assert_eq!(finish(expected.clone()).unwrap(), expected);
    }

    #[test]
    fn a_section_github_would_refuse_is_an_error_naming_the_field() {
        let field_error = |section: Value| finish(section).unwrap_err();
        assert_eq!(
            field_error(section("done")),
            ("github.status.state".into(), r#""done" is not one of error, failure, pending, success"#.into())
        );
        let mut s = section("success");
        s["status"].as_object_mut().unwrap().remove("state");
        assert_eq!(field_error(s).0, "github.status.state");
        let mut s = section("success");
        s["revisionPath"] = json!("main");
        assert_eq!(
            field_error(s),
            ("github.revisionPath".into(), r#""main" is not a commit SHA (40 hex digits)"#.into())
        );
        let mut s = section("success");
        s["status"]["targetURL"] = json!("ci/1");
        assert_eq!(field_error(s).0, "github.status.targetURL");
        let mut s = section("success");
        s["status"]["context"] = json!("ci");
        assert_eq!(field_error(s).0, "github.status.context");
        let mut s = section("success");
        s.as_object_mut().unwrap().remove("status");
        assert_eq!(field_error(s).0, "github.status");
        let mut s = section("success");
        s.as_object_mut().unwrap().remove("repoURLPath");
        assert_eq!(field_error(s).0, "github.repoURLPath");
        let mut s = section("success");
        s["deployment"] = json!({"state": "success"});
        assert_eq!(
            field_error(s),
            ("github.deployment".into(), "not supported: stepwise sets commit statuses only (status)".into())
        );
        assert_eq!(field_error(json!("text")).0, "github");
    }

    #[test]
    fn the_description_is_the_message_on_one_line_cut_to_140_characters_unless_the_section_gives_one() {
        let status = CommitStatus::read(&section("pending")).unwrap();
        let body = status.body("Rollout guestbook\nis at step 2/4.\n");
        assert_eq!(
            body,
            json!({
                "state": "pending",
                "target_url": "https://ci.example.com/1",
                "description": "Rollout guestbook is at step 2/4.",
                "context": "continuous-delivery/guestbook",
            })
        );
        let long = "é".repeat(200);
        let description = status.body(&long)["description"].as_str().unwrap().to_string();
        assert_eq!(description.chars().count(), DESCRIPTION_CHARS);
        assert!(description.ends_with("é…"), "{description}");
        let exactly = "x".repeat(DESCRIPTION_CHARS);
        assert_eq!(status.body(&exactly)["description"], json!(exactly));
        let mut given = section("pending");
        given["status"]["description"] = json!("Step 2 of 4");
        assert_eq!(CommitStatus::read(&given).unwrap().body("ignored")["description"], "Step 2 of 4");
        // Without a text, label or URL, only the state is sent; GitHub's context is then `default`.
        let bare = json!({"repoURLPath": "o/r", "revisionPath": SHA, "status": {"state": "error", "label": ""}});
        assert_eq!(CommitStatus::read(&bare).unwrap().body(" \n"), json!({"state": "error"}));
    }

    #[test]
    fn the_api_of_an_enterprise_server_is_under_api_v3_written_or_not() {
        assert_eq!(api_url("https://ghe.example.com").as_deref(), Some("https://ghe.example.com/api/v3"));
        assert_eq!(api_url("https://ghe.example.com/").as_deref(), Some("https://ghe.example.com/api/v3"));
        assert_eq!(api_url("https://ghe.example.com/api/v3/").as_deref(), Some("https://ghe.example.com/api/v3"));
        assert_eq!(api_url("http://127.0.0.1:8080").as_deref(), Some("http://127.0.0.1:8080/api/v3"));
        assert_eq!(api_url("https://api.octo.ghe.com").as_deref(), Some("https://api.octo.ghe.com"));
        assert_eq!(api_url("ghe.example.com"), None);
        assert_eq!(api_url("ftp://ghe.example.com"), None);
        assert_eq!(
            error("token: $token\nenterpriseBaseURL: ghe"),
            "service.github: enterpriseBaseURL is not an http:// or https:// URL with a host"
        );
    }

    #[test]
    fn exactly_one_of_a_token_and_an_app_is_configured() {
        assert!(built("token: $token").is_ok());
        assert_eq!(
            error("token: $token\nappID: 1"),
            "service.github: token and a GitHub App (appID, installationID, privateKey) are both set: choose one"
        );
        assert_eq!(
            error("timeout: 5s"),
            "service.github: no credentials: give a GitHub App's appID, installationID and privateKey, or a token"
        );
        assert_eq!(
            error("appID: 1\nprivateKey: $key"),
            "service.github: installationID is missing: a GitHub App needs appID, installationID and privateKey"
        );
        assert_eq!(
            error("appID: 1\ninstallationID: 2"),
            "service.github: privateKey is missing: a GitHub App needs appID, installationID and privateKey"
        );
        assert_eq!(
            error("appID: 1\ninstallationID: two\nprivateKey: $key"),
            "service.github: installationID is not an installation's ID (a number)"
        );
        assert_eq!(
            error("appID: '1 2'\ninstallationID: 2\nprivateKey: $key"),
            "service.github: appID is not a GitHub App's ID (a number) or client ID"
        );
        assert_eq!(error("token: [ghp_x]"), "service.github: token is not text");
        assert_eq!(error("token: $tokn"), "service.github: $tokn is not a key of the Secret");
    }

    #[test]
    fn a_private_key_that_is_not_one_is_named_and_never_quoted() {
        let message = error("appID: 1\ninstallationID: 2\nprivateKey: $key");
        assert_eq!(
            message,
            "service.github: privateKey is not a PEM RSA private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)"
        );
        let pem = |label: &str, body: &str| format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
        let err = |pem: String| private_key_of(&pem).err().unwrap();
        assert_eq!(
            err(pem("EC PRIVATE KEY", "AAAA")),
            "privateKey is a PEM EC PRIVATE KEY, not an RSA private key (BEGIN RSA PRIVATE KEY)"
        );
        assert_eq!(
            err(pem("ENCRYPTED PRIVATE KEY", "AAAA")),
            "privateKey is encrypted: give it unencrypted, as GitHub hands it out"
        );
        let garbage = err(pem("RSA PRIVATE KEY", "SECRETSECRETSECRETSE"));
        assert!(garbage.starts_with("privateKey is not a usable RSA private key: "), "{garbage}");
        assert!(!garbage.contains("SECRET"), "{garbage}");
        assert!(err(pem("RSA PRIVATE KEY", "not base64!")).starts_with("privateKey is not a PEM"));
    }

    #[test]
    fn base64_is_written_as_jwts_are_url_safe_and_unpadded() {
        assert_eq!(base64url(b"M"), "TQ");
        assert_eq!(base64url(&[0xfb, 0xff, 0xbf]), "-_-_");
        assert_eq!(base64url(br#"{"alg":"RS256","typ":"JWT"}"#), "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9");
    }

    #[test]
    fn a_jwt_is_issued_a_minute_ago_and_expires_ten_minutes_after_that() {
        assert_eq!(
            claims("123", 1_700_000_000),
            json!({"iat": 1_699_999_940u64, "exp": 1_700_000_540u64, "iss": "123"})
        );
    }

    #[test]
    fn expiry_times_are_read_as_rfc_3339() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2016-07-11T22:14:10Z"), Some(1_468_275_250));
        assert_eq!(unix_seconds("2016-07-11T22:14:10.123Z"), Some(1_468_275_250));
        assert_eq!(unix_seconds("2016-07-12T00:14:10+02:00"), Some(1_468_275_250));
        assert_eq!(unix_seconds("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(unix_seconds("2016-07-11 22:14:10"), None);
        assert_eq!(unix_seconds("2016-13-11T22:14:10Z"), None);
        assert_eq!(unix_seconds("soon"), None);
    }

    #[test]
    fn a_kept_token_is_used_until_five_minutes_before_it_expires() {
        let key = "test: a_kept_token_is_used_until_five_minutes_before_it_expires";
        keep_token(key, "ghs_1", 10_000, 1_000);
        assert_eq!(kept_token(key, 9_699).as_deref(), Some("ghs_1"));
        assert_eq!(kept_token(key, 9_700), None);
        forget_token(key, "ghs_other");
        assert_eq!(kept_token(key, 1_000).as_deref(), Some("ghs_1"));
        forget_token(key, "ghs_1");
        assert_eq!(kept_token(key, 1_000), None);
    }

    #[test]
    fn refusals_quote_github_s_message_and_only_rate_limits_and_server_errors_are_retryable() {
        let r = Redactor::default();
        let headers = |pairs: &[(&'static str, &'static str)]| {
            pairs
                .iter()
                .map(|(n, v)| (reqwest::header::HeaderName::from_static(n), HeaderValue::from_static(v)))
                .collect()
        };
        let none = HeaderMap::new();
        let validation = json!({
            "message": "Validation Failed",
            "errors": [
                {
                    "resource": "Status",
                    "code": "custom",
                    "field": "description",
                    "message": "description is too long (maximum is 140 characters)",
                },
                {"resource": "Status", "field": "state", "code": "invalid"},
            ],
            "documentation_url": "https://docs.github.com/rest",
        })
        .to_string();
        let e = github_error("service.github: status of o/r@0123456", 422, &none, &validation, &r);
        assert!(!e.retryable);
        assert_eq!(
            e.message,
            concat!(
                r#"service.github: status of o/r@0123456: HTTP 422 Unprocessable Entity: "Validation Failed: "#,
                r#"description is too long (maximum is 140 characters); state invalid""#,
            )
        );
        let refused = r#"{"message":"Resource not accessible by integration"}"#;
        for status in [401, 403, 404, 422] {
            assert!(!github_error("t", status, &none, refused, &r).retryable, "{status}");
        }
        for status in [429, 500, 502, 503] {
            assert!(github_error("t", status, &none, "", &r).retryable, "{status}");
        }
        let e = github_error("t", 403, &headers(&[("x-ratelimit-remaining", "0")]), refused, &r);
        assert!(e.retryable);
        assert!(e.message.ends_with("(rate limited)"), "{}", e.message);
        let e = github_error("t", 403, &headers(&[("retry-after", "60")]), refused, &r);
        assert!(e.retryable);
        assert!(e.message.ends_with("(rate limited; retry after 60 s)"), "{}", e.message);
        assert!(!github_error("t", 403, &headers(&[("x-ratelimit-remaining", "4999")]), refused, &r).retryable);
        assert_eq!(
            github_error("t", 502, &none, "<html>bad gateway</html>", &r).message,
            r#"t: HTTP 502 Bad Gateway: "<html>bad gateway</html>""#
        );
    }
}
