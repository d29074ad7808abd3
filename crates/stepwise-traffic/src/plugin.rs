//! Router plugins: traffic routers that run out of process, as a sidecar or a Service, written
//! in any language, and speak `stepwise.dev/plugins/v1` over HTTP/1.1 with JSON bodies
//! (docs/plugins.md).
//!
//! This module is the protocol's pure half: the messages as JSON, the checks of every answer,
//! and the errors, each naming the plugin and its URL. The HTTP client is the controller's
//! (`stepwise-controller/src/router_plugin.rs`) and the conformance checker's
//! (`kubectl stepwise plugin check`); both build their requests and judge the answers here, so
//! a plugin is held to the same rules by both.
//!
//! The messages are built and read as [`serde_json::Value`] rather than derived: a field that is
//! missing or of the wrong type then gets an error naming that field in the plugin author's
//! terms (`verified must be true, false or null, not "yes"`).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::{Desired, gateway_api};

/// The protocol's name and version: in every request and every answer. The same name as the
/// metric plugins' exec transport: the version names the messages, and the HTTP transport
/// carries messages of the same family (docs/plugins.md, "Versioning").
pub const PROTOCOL: &str = "stepwise.dev/plugins/v1";

/// `GET`: what the plugin is and what it can do.
pub const INFO_PATH: &str = "v1/info";

/// `POST`: bring the router to a desired state.
pub const SET_TRAFFIC_PATH: &str = "v1/router/set-traffic";

/// `POST`, reserved: a measurement, for metric providers served over HTTP. Not yet called by
/// the controller.
pub const METRIC_MEASURE_PATH: &str = "v1/metric/measure";

/// `POST`, reserved: one run of a canary step plugin. Not yet called by the controller.
pub const STEP_RUN_PATH: &str = "v1/step/run";

/// Seconds a call may take unless the controller is told otherwise (`--router-plugin-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a plugin says of itself at [`INFO_PATH`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The plugin's own name (for messages; it need not match the name it is registered under).
    pub name: String,
    /// Set when the plugin is a traffic router.
    pub router: Option<RouterCapabilities>,
    /// Whether it measures metrics (reserved: [`METRIC_MEASURE_PATH`]).
    pub metric: bool,
    /// Whether it runs canary steps (reserved: [`STEP_RUN_PATH`]).
    pub step: bool,
}

/// What a router plugin can make besides a weighted split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterCapabilities {
    /// Header routes (`setHeaderRoute` steps).
    pub header_routes: bool,
    /// Mirror routes (`setMirrorRoute` steps).
    pub mirror_routes: bool,
}

/// The Rollout a call is made for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID: a Rollout deleted and created again under the same name has another.
    pub uid: String,
}

/// A plugin's answer to set-traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetTrafficAnswer {
    /// Whether the router carries the desired split now: `Some(false)` while it is still being
    /// applied (a proxy that reloads), None when the plugin cannot tell.
    pub verified: Option<bool>,
}

/// The body of a set-traffic request: the Rollout, the plugin's configuration from
/// `trafficRouting.plugins.<name>` as written, and the desired state.
pub fn set_traffic_request(rollout: &RolloutRef, config: &Value, desired: &Desired) -> Value {
    let routes: Vec<Value> =
        desired.routes.iter().map(|r| serde_json::to_value(r).unwrap_or_else(|_| json!({}))).collect();
    json!({
        "protocol": PROTOCOL,
        "rollout": {"namespace": rollout.namespace, "name": rollout.name, "uid": rollout.uid},
        "config": config,
        "desired": {
            "canaryService": desired.canary_service,
            "stableService": desired.stable_service,
            "canaryWeight": desired.canary_weight,
            "stableWeight": desired.stable_weight(),
            "maxWeight": desired.max_weight,
            "canaryHash": desired.canary_hash,
            "stableHash": desired.stable_hash,
            "managedRoutes": desired.managed_route_names,
            "routes": routes,
        },
    })
}

/// Parses a `--router-plugin NAME=URL` flag: the name a Rollout writes under
/// `trafficRouting.plugins`, and the plugin's base URL (http or https, with a host; it may end in
/// a path prefix, to which `v1/...` is appended).
pub fn parse_registration(flag: &str) -> Result<(String, String), String> {
    let Some((name, url)) = flag.split_once('=') else {
        return Err(format!("--router-plugin {flag:?} is not NAME=URL"));
    };
    let (name, url) = (name.trim(), url.trim());
    if name.is_empty() {
        return Err(format!("--router-plugin {flag:?}: the NAME before = is empty"));
    }
    if name == gateway_api::PLUGIN_NAME {
        return Err(format!(
            "--router-plugin {flag:?}: {name} is driven by stepwise's built-in Gateway API router; register your plugin under another name"
        ));
    }
    check_url(url).map_err(|e| format!("--router-plugin {flag:?}: {e}"))?;
    Ok((name.to_string(), url.to_string()))
}

/// Checks a plugin's base URL: http or https, with a host, and nothing that must not be shown
/// in the errors and events that name it (credentials) or that `v1/...` cannot follow (a query).
pub fn check_url(url: &str) -> Result<(), String> {
    let not_http = || format!("{url:?} is not an http:// or https:// URL");
    let (scheme, rest) = url.split_once("://").ok_or_else(not_http)?;
    if !matches!(scheme, "http" | "https") {
        return Err(not_http());
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{url:?} has no host"));
    }
    if host.contains('@') {
        return Err("the URL must not carry a user name or password".into());
    }
    if rest.contains(['?', '#']) {
        return Err("the URL must not carry a query or a fragment".into());
    }
    Ok(())
}

/// The registered names that routing's `plugins` map names, and those it names that are not
/// registered.
pub fn named_plugins<'a>(
    plugins: impl IntoIterator<Item = &'a String>,
    registered: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    plugins
        .into_iter()
        .filter(|n| n.as_str() != gateway_api::PLUGIN_NAME)
        .cloned()
        .partition(|n| registered.contains(n))
}

/// `base` joined with `path` (one of the `*_PATH` constants), whether or not `base` ends in `/`.
pub fn endpoint(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}

/// A duration as people write it in flags: `10s`, `1.5s`, `250ms`.
pub fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Judges the answer to `GET v1/info`: status, JSON, protocol, and the capabilities.
pub fn read_info(status: u16, body: &str) -> Result<Info, Problem> {
    let answer = answer_object(INFO_PATH, status, body)?;
    let object = |field: &str, v: &Value| match v {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map.clone())),
        other => Err(Problem::BadAnswer(format!("{field} must be an object, not {}", shown(other)))),
    };
    let boolean = |field: &str, v: Option<&Value>| match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Problem::BadAnswer(format!("{field} must be true or false, not {}", shown(other)))),
    };
    let name = match answer.get("name") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => return Err(Problem::BadAnswer(format!("name must be a string, not {}", shown(other)))),
    };
    let capabilities = object("capabilities", answer.get("capabilities").unwrap_or(&Value::Null))?.unwrap_or_default();
    let router = match object("capabilities.router", capabilities.get("router").unwrap_or(&Value::Null))? {
        None => None,
        Some(router) => Some(RouterCapabilities {
            header_routes: boolean("capabilities.router.headerRoutes", router.get("headerRoutes"))?,
            mirror_routes: boolean("capabilities.router.mirrorRoutes", router.get("mirrorRoutes"))?,
        }),
    };
    Ok(Info {
        name,
        router,
        metric: boolean("capabilities.metric", capabilities.get("metric"))?,
        step: boolean("capabilities.step", capabilities.get("step"))?,
    })
}

/// Judges the answer to `POST v1/router/set-traffic`.
pub fn read_set_traffic(status: u16, body: &str) -> Result<SetTrafficAnswer, Problem> {
    let answer = answer_object(SET_TRAFFIC_PATH, status, body)?;
    let verified = match answer.get("verified") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(Problem::BadAnswer(format!("verified must be true, false or null, not {}", shown(other))));
        }
    };
    Ok(SetTrafficAnswer { verified })
}

/// Judges the answer to a request the plugin must refuse (the conformance check's invalid body):
/// a 4xx with an `error` message. Returns the message.
pub fn read_refusal(status: u16, body: &str) -> Result<String, String> {
    if !(400..500).contains(&status) {
        return Err(format!("answered {} instead of a 4xx", status_text(status)));
    }
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(map)) => match map.get("error") {
            Some(Value::String(message)) if !message.trim().is_empty() => Ok(message.clone()),
            _ => Err(format!("answered {} without an error message: {}", status_text(status), snippet(body))),
        },
        _ => Err(format!("answered {} with a body that is not a JSON object: {}", status_text(status), snippet(body))),
    }
}

/// A 2xx answer as a JSON object of our protocol, or the problem with it.
fn answer_object(path: &'static str, status: u16, body: &str) -> Result<Map<String, Value>, Problem> {
    let parsed = serde_json::from_str::<Value>(body);
    if !(200..300).contains(&status) {
        let message = match &parsed {
            Ok(Value::Object(map)) => map.get("error").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        return Err(Problem::Http { path, status, message, body: snippet(body) });
    }
    let map = match parsed {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            return Err(Problem::NotJson {
                path,
                reason: format!("a JSON object was expected, not {}", shown(&other)),
                body: snippet(body),
            });
        }
        Err(e) => return Err(Problem::NotJson { path, reason: e.to_string(), body: snippet(body) }),
    };
    match map.get("protocol") {
        Some(Value::String(p)) if p == PROTOCOL => Ok(map),
        Some(Value::String(p)) => Err(Problem::Protocol(p.clone())),
        None => Err(Problem::BadAnswer(format!("the answer to {path} has no protocol field"))),
        Some(other) => Err(Problem::BadAnswer(format!("protocol must be a string, not {}", shown(other)))),
    }
}

/// A JSON value as JSON, at most 200 characters, for a message.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// At most 200 characters of `text`, quoted.
fn snippet(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// An HTTP status with its reason phrase: `422 Unprocessable Entity`.
pub fn status_text(status: u16) -> String {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    };
    if reason.is_empty() { status.to_string() } else { format!("{status} {reason}") }
}

/// What went wrong in a call to a plugin, whichever the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No answer within the timeout.
    Timeout(Duration),
    /// No connection (refused, no route, name not resolved): the text of the cause.
    Connect(String),
    /// The request was sent but the answer could not be read.
    Transport(String),
    /// An answer that is not JSON.
    NotJson {
        /// The call.
        path: &'static str,
        /// Why it cannot be parsed.
        reason: String,
        /// The start of the body.
        body: String,
    },
    /// An HTTP error status.
    Http {
        /// The call.
        path: &'static str,
        /// The status.
        status: u16,
        /// The `error` of the answer, when it has one.
        message: Option<String>,
        /// The start of the body, for an answer without `error`.
        body: String,
    },
    /// The plugin speaks another version of the protocol.
    Protocol(String),
    /// The plugin's info declares no router capability.
    NotARouter,
    /// An answer of the protocol with a field missing or wrong.
    BadAnswer(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Timeout(d) => write!(f, "timed out after {}", show_duration(*d)),
            Problem::Connect(cause) => {
                write!(f, "cannot connect (is the plugin running and listening there?): {cause}")
            }
            Problem::Transport(cause) => write!(f, "the call failed: {cause}"),
            Problem::NotJson { path, reason, body } => {
                write!(f, "the answer to {path} is not JSON ({reason}): {body}")
            }
            Problem::Http { path, status, message: Some(message), .. } => {
                write!(f, "{path} answered {}: {message}", status_text(*status))
            }
            Problem::Http { path, status, message: None, body } => {
                write!(f, "{path} answered {} without an error message: {body}", status_text(*status))
            }
            Problem::Protocol(found) => write!(f, "speaks protocol {found}, stepwise speaks {PROTOCOL}"),
            Problem::NotARouter => write!(
                f,
                "its {INFO_PATH} declares no router capability (capabilities.router is absent): it is not a traffic router"
            ),
            Problem::BadAnswer(message) => write!(f, "{message}"),
        }
    }
}

/// A problem with a router plugin, naming the plugin and where it was called.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("router plugin {plugin} at {url}: {problem}")]
pub struct PluginError {
    /// The name it is registered under.
    pub plugin: String,
    /// Its base URL.
    pub url: String,
    /// What went wrong.
    pub problem: Problem,
}

#[cfg(test)]
mod tests {
    use stepwise_api::{HeaderRoutingMatch, RouteRequest, SetHeaderRoute, StringMatch};

    use super::*;
    use crate::testing::desired;

    fn error(problem: Problem) -> String {
        PluginError { plugin: "example.com/file".into(), url: "http://127.0.0.1:7070".into(), problem }.to_string()
    }

    #[test]
    fn a_request_carries_the_protocol_the_rollout_the_config_as_written_and_the_desired_state() {
        let mut d = desired(30);
        d.managed_route_names = vec!["beta".into()];
        d.routes = vec![RouteRequest::Header(SetHeaderRoute {
            name: "beta".into(),
            r#match: Some(vec![HeaderRoutingMatch {
                header_name: "x-beta".into(),
                header_value: StringMatch { exact: Some("yes".into()), ..Default::default() },
            }]),
        })];
        let rollout = RolloutRef { namespace: "shop".into(), name: "api".into(), uid: "u-1".into() };
        let request = set_traffic_request(&rollout, &json!({"path": "/tmp/split.json"}), &d);
        assert_eq!(
            request,
            json!({
                "protocol": "stepwise.dev/plugins/v1",
                "rollout": {"namespace": "shop", "name": "api", "uid": "u-1"},
                "config": {"path": "/tmp/split.json"},
                "desired": {
                    "canaryService": "web-canary",
                    "stableService": "web-stable",
                    "canaryWeight": 30,
                    "stableWeight": 70,
                    "maxWeight": 100,
                    "canaryHash": "canary-hash",
                    "stableHash": "stable-hash",
                    "managedRoutes": ["beta"],
                    "routes": [{"header": {"name": "beta", "match": [{"headerName": "x-beta", "headerValue": {"exact": "yes"}}]}}],
                },
            })
        );
    }

    #[test]
    fn a_ping_pong_request_names_the_two_services_in_their_current_roles() {
        use stepwise_api::PingPong;
        let rollout = RolloutRef { namespace: "shop".into(), name: "api".into(), uid: "u-1".into() };
        let roles = |stable, weight| {
            let request = set_traffic_request(&rollout, &json!({}), &crate::testing::ping_pong(stable, weight));
            (request["desired"]["canaryService"].clone(), request["desired"]["stableService"].clone())
        };
        assert_eq!(roles(PingPong::Ping, 30), (json!("web-pong"), json!("web-ping")));
        assert_eq!(roles(PingPong::Pong, 0), (json!("web-ping"), json!("web-pong")));
    }

    #[test]
    fn info_gives_the_capabilities_and_absent_ones_are_false() {
        let info = read_info(
            200,
            r#"{"protocol":"stepwise.dev/plugins/v1","name":"file-router","capabilities":{"router":{"headerRoutes":true}},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(
            info,
            Info {
                name: "file-router".into(),
                router: Some(RouterCapabilities { header_routes: true, mirror_routes: false }),
                metric: false,
                step: false,
            }
        );
        let metric_only =
            read_info(200, r#"{"protocol":"stepwise.dev/plugins/v1","capabilities":{"metric":true}}"#).unwrap();
        assert_eq!((metric_only.router, metric_only.metric), (None, true));
    }

    #[test]
    fn another_protocol_version_is_refused_naming_both() {
        let problem = read_info(200, r#"{"protocol":"stepwise.dev/plugins/v2","capabilities":{}}"#).unwrap_err();
        assert_eq!(
            error(problem),
            "router plugin example.com/file at http://127.0.0.1:7070: speaks protocol stepwise.dev/plugins/v2, stepwise speaks stepwise.dev/plugins/v1"
        );
        let problem = read_set_traffic(200, r#"{"verified":true}"#).unwrap_err();
        assert_eq!(
            error(problem),
            "router plugin example.com/file at http://127.0.0.1:7070: the answer to v1/router/set-traffic has no protocol field"
        );
    }

    #[test]
    fn an_http_error_gives_the_plugins_message_or_the_start_of_the_body() {
        let problem =
            read_set_traffic(422, r#"{"protocol":"stepwise.dev/plugins/v1","error":"no mirror routes"}"#).unwrap_err();
        assert_eq!(
            error(problem),
            "router plugin example.com/file at http://127.0.0.1:7070: v1/router/set-traffic answered 422 Unprocessable Entity: no mirror routes"
        );
        let problem = read_set_traffic(502, "<html>bad gateway</html>").unwrap_err();
        assert_eq!(
            error(problem),
            "router plugin example.com/file at http://127.0.0.1:7070: v1/router/set-traffic answered 502 Bad Gateway without an error message: \"<html>bad gateway</html>\""
        );
    }

    #[test]
    fn an_answer_that_is_not_json_or_has_a_wrong_field_names_what_is_wrong() {
        let problem = read_set_traffic(200, "ok").unwrap_err();
        assert_eq!(
            error(problem),
            "router plugin example.com/file at http://127.0.0.1:7070: the answer to v1/router/set-traffic is not JSON (expected value at line 1 column 1): \"ok\""
        );
        let problem = read_set_traffic(200, r#"{"protocol":"stepwise.dev/plugins/v1","verified":"yes"}"#).unwrap_err();
        assert_eq!(problem.to_string(), "verified must be true, false or null, not \"yes\"");
        let problem =
            read_info(200, r#"{"protocol":"stepwise.dev/plugins/v1","capabilities":{"router":true}}"#).unwrap_err();
        assert_eq!(problem.to_string(), "capabilities.router must be an object, not true");
    }

    #[test]
    fn verified_is_true_false_or_unknown() {
        let read = |body: &str| read_set_traffic(200, body).unwrap().verified;
        assert_eq!(read(r#"{"protocol":"stepwise.dev/plugins/v1","verified":true}"#), Some(true));
        assert_eq!(read(r#"{"protocol":"stepwise.dev/plugins/v1","verified":false}"#), Some(false));
        assert_eq!(read(r#"{"protocol":"stepwise.dev/plugins/v1","verified":null}"#), None);
        assert_eq!(read(r#"{"protocol":"stepwise.dev/plugins/v1"}"#), None);
    }

    #[test]
    fn timeouts_and_connection_errors_say_which() {
        assert_eq!(
            error(Problem::Timeout(Duration::from_secs(10))),
            "router plugin example.com/file at http://127.0.0.1:7070: timed out after 10s"
        );
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(
            error(Problem::Connect("Connection refused (os error 111)".into())),
            "router plugin example.com/file at http://127.0.0.1:7070: cannot connect (is the plugin running and listening there?): Connection refused (os error 111)"
        );
    }

    #[test]
    fn a_refusal_must_be_a_4xx_with_an_error_message() {
        assert_eq!(read_refusal(400, r#"{"error":"desired must be an object"}"#).unwrap(), "desired must be an object");
        assert_eq!(read_refusal(200, r#"{"protocol":"x"}"#).unwrap_err(), "answered 200 OK instead of a 4xx");
        assert_eq!(read_refusal(400, "{}").unwrap_err(), "answered 400 Bad Request without an error message: \"{}\"");
        assert_eq!(
            read_refusal(500, r#"{"error":"boom"}"#).unwrap_err(),
            "answered 500 Internal Server Error instead of a 4xx"
        );
    }

    #[test]
    fn a_registration_is_name_equals_an_http_url_without_credentials() {
        assert_eq!(
            parse_registration("example.com/file=http://127.0.0.1:7070").unwrap(),
            ("example.com/file".into(), "http://127.0.0.1:7070".into())
        );
        assert_eq!(
            parse_registration("acme/lb=https://lb-plugin.infra.svc:8443/stepwise/").unwrap().1,
            "https://lb-plugin.infra.svc:8443/stepwise/"
        );
        assert_eq!(
            parse_registration("example.com/file").unwrap_err(),
            "--router-plugin \"example.com/file\" is not NAME=URL"
        );
        assert_eq!(
            parse_registration("x=127.0.0.1:7070").unwrap_err(),
            "--router-plugin \"x=127.0.0.1:7070\": \"127.0.0.1:7070\" is not an http:// or https:// URL"
        );
        assert_eq!(
            parse_registration("x=http://user:pw@host:1").unwrap_err(),
            "--router-plugin \"x=http://user:pw@host:1\": the URL must not carry a user name or password"
        );
        assert!(parse_registration("argoproj-labs/gatewayAPI=http://127.0.0.1:1").unwrap_err().contains("built-in"));
        assert!(parse_registration("=http://127.0.0.1:1").is_err());
        assert!(parse_registration("x=http://:80").is_err());
    }

    #[test]
    fn endpoints_are_appended_to_the_base_url_with_or_without_a_slash() {
        assert_eq!(endpoint("http://127.0.0.1:7070", INFO_PATH), "http://127.0.0.1:7070/v1/info");
        assert_eq!(endpoint("http://svc/prefix/", SET_TRAFFIC_PATH), "http://svc/prefix/v1/router/set-traffic");
    }

    #[test]
    fn registered_plugins_are_told_apart_from_unregistered_ones_and_the_built_in_one() {
        let registered: BTreeSet<String> = ["example.com/file".to_string()].into();
        let named = ["argoproj-labs/gatewayAPI".to_string(), "example.com/file".into(), "example.com/other".into()];
        assert_eq!(
            named_plugins(&named, &registered),
            (vec!["example.com/file".to_string()], vec!["example.com/other".to_string()])
        );
    }
}
