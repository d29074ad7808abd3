//! `kubectl stepwise plugin check URL`: the conformance test a router plugin's author runs
//! against their plugin. This is its pure half: which calls are made, in which order, and how
//! each answer is judged, by the same rules as the controller (`stepwise_traffic::plugin`).
//! `main.rs` sends the calls and prints the lines.

use serde_json::{Value, json};
use stepwise_api::{HeaderRoutingMatch, RouteRequest, SetHeaderRoute, SetMirrorRoute, StringMatch};
use stepwise_traffic::Desired;
use stepwise_traffic::plugin::{self, Info, PROTOCOL, RolloutRef};

/// The Services, route and Rollout the checks ask for: names no real Rollout has, so that a
/// plugin pointed at a shared proxy by mistake changes nothing anybody uses.
const CANARY: &str = "stepwise-check-canary";
const STABLE: &str = "stepwise-check-stable";
const HEADER_ROUTE: &str = "stepwise-check-header";
const MIRROR_ROUTE: &str = "stepwise-check-mirror";

/// One call of the check.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// `GET v1/info`.
    Info,
    /// `POST v1/router/set-traffic` with this body.
    SetTraffic(String),
}

/// What an answer must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A 200 of the protocol.
    Accepted,
    /// A 4xx with an `error` message.
    Refused,
}

/// One check: a name for the line printed, the call, and what its answer must be; or skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// What is checked, as printed.
    pub name: String,
    /// The call and what it must get, or why it is skipped.
    pub plan: Result<(Call, Expect), String>,
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It did as the protocol says.
    Pass(String),
    /// It did not: why.
    Fail(String),
    /// Not checked: why.
    Skip(String),
}

impl Verdict {
    /// The line printed for check `name`.
    pub fn line(&self, name: &str) -> String {
        match self {
            Verdict::Pass(detail) if detail.is_empty() => format!("PASS {name}"),
            Verdict::Pass(detail) => format!("PASS {name}: {detail}"),
            Verdict::Fail(reason) => format!("FAIL {name}: {reason}"),
            Verdict::Skip(reason) => format!("SKIP {name}: {reason}"),
        }
    }
}

/// The set-traffic body at `weight` out of 100 with `routes`, for a plugin configured with
/// `config`.
pub fn set_traffic_body(config: &Value, weight: i32, routes: Vec<RouteRequest>) -> String {
    let rollout = RolloutRef {
        namespace: "stepwise-check".into(),
        name: "check".into(),
        uid: "00000000-0000-0000-0000-000000000000".into(),
    };
    let desired = Desired {
        canary_service: CANARY.into(),
        stable_service: STABLE.into(),
        canary_weight: weight,
        max_weight: 100,
        canary_hash: Some("canary0000".into()),
        stable_hash: Some("stable0000".into()),
        managed_route_names: vec![HEADER_ROUTE.into(), MIRROR_ROUTE.into()],
        routes,
    };
    plugin::set_traffic_request(&rollout, config, &desired).to_string()
}

fn header_route() -> RouteRequest {
    RouteRequest::Header(SetHeaderRoute {
        name: HEADER_ROUTE.into(),
        r#match: Some(vec![HeaderRoutingMatch {
            header_name: "x-stepwise-check".into(),
            header_value: StringMatch { exact: Some("canary".into()), ..Default::default() },
        }]),
    })
}

fn mirror_route() -> RouteRequest {
    RouteRequest::Mirror(SetMirrorRoute {
        name: MIRROR_ROUTE.into(),
        r#match: Some(vec![stepwise_api::RouteMatch {
            method: Some(StringMatch { exact: Some("GET".into()), ..Default::default() }),
            ..Default::default()
        }]),
        percentage: Some(10),
    })
}

/// The checks after `info`, in order, for a plugin configured with `config` whose info said
/// `info` (None when info failed: every capability is then checked, as a plugin that answers
/// nothing else is failed by each call anyway).
pub fn checks(config: &Value, info: Option<&Info>) -> Vec<Check> {
    let accepted = |name: &str, body: String| Check {
        name: name.to_string(),
        plan: Ok((Call::SetTraffic(body), Expect::Accepted)),
    };
    let router = info.and_then(|i| i.router);
    let header = router.is_none_or(|r| r.header_routes);
    let mirror = router.is_none_or(|r| r.mirror_routes);
    let with_header = || if header { vec![header_route()] } else { Vec::new() };
    let mut out = vec![
        accepted("set-traffic at weight 0", set_traffic_body(config, 0, Vec::new())),
        accepted("set-traffic at weight 30", set_traffic_body(config, 30, Vec::new())),
        accepted("set-traffic at weight 100", set_traffic_body(config, 100, Vec::new())),
    ];
    out.push(if header {
        accepted("a header route at weight 30", set_traffic_body(config, 30, with_header()))
    } else {
        Check {
            name: "a header route".into(),
            plan: Err("the plugin's info says capabilities.router.headerRoutes: false".into()),
        }
    });
    out.push(if mirror {
        let mut routes = with_header();
        routes.push(mirror_route());
        accepted("a mirror route at weight 30", set_traffic_body(config, 30, routes))
    } else {
        Check {
            name: "a mirror route".into(),
            plan: Err("the plugin's info says capabilities.router.mirrorRoutes: false".into()),
        }
    });
    // The controller sends a desired state again whenever it is unsure it landed.
    out.push(accepted("the same call again (idempotence)", set_traffic_body(config, 30, with_header())));
    out.push(accepted(
        "back to weight 0 with no routes (as on abort and on deletion)",
        set_traffic_body(config, 0, Vec::new()),
    ));
    let mut invalid: Value = serde_json::from_str(&set_traffic_body(config, 0, Vec::new())).unwrap_or_default();
    invalid["desired"] = json!("not an object");
    out.push(Check {
        name: "an invalid body (desired is not an object) is refused".into(),
        plan: Ok((Call::SetTraffic(invalid.to_string()), Expect::Refused)),
    });
    let mut future: Value = serde_json::from_str(&set_traffic_body(config, 0, Vec::new())).unwrap_or_default();
    future["protocol"] = json!("stepwise.dev/plugins/v999");
    out.push(Check {
        name: "a request of another protocol version (stepwise.dev/plugins/v999) is refused".into(),
        plan: Ok((Call::SetTraffic(future.to_string()), Expect::Refused)),
    });
    out
}

/// Judges the answer to `GET v1/info`.
pub fn judge_info(status: u16, body: &str) -> (Verdict, Option<Info>) {
    match plugin::read_info(status, body) {
        Ok(info) => match info.router {
            Some(r) => (
                Verdict::Pass(format!(
                    "{} speaks {PROTOCOL}; router with headerRoutes: {}, mirrorRoutes: {}",
                    if info.name.is_empty() { "the plugin" } else { &info.name },
                    r.header_routes,
                    r.mirror_routes
                )),
                Some(info),
            ),
            None => (Verdict::Fail(plugin::Problem::NotARouter.to_string()), Some(info)),
        },
        Err(problem) => (Verdict::Fail(problem.to_string()), None),
    }
}

/// Judges an answer by what it must be.
pub fn judge(expect: Expect, status: u16, body: &str) -> Verdict {
    match expect {
        Expect::Accepted => match plugin::read_set_traffic(status, body) {
            Ok(answer) => Verdict::Pass(match answer.verified {
                Some(v) => format!("verified: {v}"),
                None => "verified: null".into(),
            }),
            Err(problem) => Verdict::Fail(problem.to_string()),
        },
        Expect::Refused => match plugin::read_refusal(status, body) {
            Ok(message) => Verdict::Pass(format!("{}: {message}", plugin::status_text(status))),
            Err(reason) => Verdict::Fail(reason),
        },
    }
}

/// The last line: how many checks passed, failed and were skipped.
pub fn summary(verdicts: &[Verdict]) -> String {
    let count = |f: fn(&Verdict) -> bool| verdicts.iter().filter(|v| f(v)).count();
    let (passed, failed, skipped) = (
        count(|v| matches!(v, Verdict::Pass(_))),
        count(|v| matches!(v, Verdict::Fail(_))),
        count(|v| matches!(v, Verdict::Skip(_))),
    );
    let verdict = if failed == 0 { "the plugin conforms to" } else { "the plugin does not conform to" };
    format!("{passed} passed, {failed} failed, {skipped} skipped: {verdict} {PROTOCOL}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = r#"{"protocol":"stepwise.dev/plugins/v1","name":"file-router","capabilities":{"router":{"headerRoutes":true,"mirrorRoutes":false}}}"#;

    #[test]
    fn the_checks_follow_the_capabilities_and_end_with_two_refusals() {
        let (verdict, info) = judge_info(200, INFO);
        assert_eq!(
            verdict.line("info"),
            "PASS info: file-router speaks stepwise.dev/plugins/v1; router with headerRoutes: true, mirrorRoutes: false"
        );
        let checks = checks(&json!({"path": "/tmp/x"}), info.as_ref());
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "set-traffic at weight 0",
                "set-traffic at weight 30",
                "set-traffic at weight 100",
                "a header route at weight 30",
                "a mirror route",
                "the same call again (idempotence)",
                "back to weight 0 with no routes (as on abort and on deletion)",
                "an invalid body (desired is not an object) is refused",
                "a request of another protocol version (stepwise.dev/plugins/v999) is refused",
            ]
        );
        assert_eq!(checks[4].plan, Err("the plugin's info says capabilities.router.mirrorRoutes: false".into()));
        // Idempotence: exactly the call before it again.
        assert_eq!(checks[3].plan, checks[5].plan);
        let Ok((Call::SetTraffic(body), Expect::Accepted)) = &checks[3].plan else { panic!("{:?}", checks[3]) };
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["config"], json!({"path": "/tmp/x"}));
        assert_eq!(body["desired"]["routes"][0]["header"]["name"], "stepwise-check-header");
    }

    #[test]
    fn answers_are_judged_as_the_controller_judges_them() {
        assert_eq!(
            judge(Expect::Accepted, 200, r#"{"protocol":"stepwise.dev/plugins/v1","verified":true}"#).line("x"),
            "PASS x: verified: true"
        );
        assert_eq!(
            judge(Expect::Accepted, 200, r#"{"protocol":"stepwise.dev/plugins/v0"}"#).line("x"),
            "FAIL x: speaks protocol stepwise.dev/plugins/v0, stepwise speaks stepwise.dev/plugins/v1"
        );
        assert_eq!(
            judge(Expect::Refused, 400, r#"{"error":"desired must be an object"}"#).line("x"),
            "PASS x: 400 Bad Request: desired must be an object"
        );
        assert_eq!(
            judge(Expect::Refused, 200, r#"{"protocol":"stepwise.dev/plugins/v1"}"#).line("x"),
            "FAIL x: answered 200 OK instead of a 4xx"
        );
        let (verdict, _) = judge_info(200, r#"{"protocol":"stepwise.dev/plugins/v1","capabilities":{"metric":true}}"#);
        assert!(verdict.line("info").starts_with("FAIL info: its v1/info declares no router capability"));
    }

    #[test]
    fn the_summary_says_whether_the_plugin_conforms() {
        let verdicts = [Verdict::Pass(String::new()), Verdict::Skip("no".into())];
        assert_eq!(summary(&verdicts), "1 passed, 0 failed, 1 skipped: the plugin conforms to stepwise.dev/plugins/v1");
        let verdicts = [Verdict::Pass(String::new()), Verdict::Fail("x".into())];
        assert_eq!(
            summary(&verdicts),
            "1 passed, 1 failed, 0 skipped: the plugin does not conform to stepwise.dev/plugins/v1"
        );
    }
}
