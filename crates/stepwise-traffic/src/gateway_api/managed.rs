//! The managed routes (`setHeaderRoute`, `setMirrorRoute` steps): which are wanted in a route and
//! in what order, the names of their rules, where those rules go among the user's, and
//! Gateway API's limits on the result.

use serde_json::Value;
use stepwise_api::RouteRequest;

use super::managed_rules::{header_rule, mirror_rule};
use super::weights::Split;
use super::{GatewayApi, MAX_MATCHES_PER_ROUTE, MAX_MATCHES_PER_RULE, MAX_RULES, PLUGIN_NAME};
use crate::{Desired, Error, Target};

/// Whether a rule of this name belongs to one of the managed routes: `N`, or `N-<k>` for each of
/// up to [`MAX_RULES`] split rules. As in Argo, a rule of the user's that bears such a name is
/// taken for a managed one and removed or replaced: `managedRoutes` reserves the names.
fn is_managed_name(rule_name: &str, managed: &[String]) -> bool {
    managed.iter().any(|n| {
        rule_name == n
            || rule_name.strip_prefix(n.as_str()).and_then(|rest| rest.strip_prefix('-')).is_some_and(|k| {
                !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_digit())
                    && k.parse::<usize>().is_ok_and(|k| k < MAX_RULES)
            })
    })
}

pub(super) fn managed_mask(rules: &[Value], desired: &Desired) -> Vec<bool> {
    rules
        .iter()
        .map(|r| {
            r.get("name").and_then(Value::as_str).is_some_and(|n| is_managed_name(n, &desired.managed_route_names))
        })
        .collect()
}

/// The name of route `route`'s rule before the `k`th of `count` split rules.
fn rule_name(route: &str, k: usize, count: usize) -> String {
    if count == 1 { route.to_string() } else { format!("{route}-{k}") }
}

/// Whether `name` may name an HTTPRoute rule: a DNS subdomain (the CRD's pattern and length).
fn valid_rule_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

pub(super) fn malformed(object: &str, message: String) -> Error {
    Error::Malformed { object: object.to_string(), message }
}

/// Whether a step asks for its route (a step without conditions removes it).
fn is_wanted(route: &RouteRequest) -> bool {
    match route {
        RouteRequest::Header(h) => h.r#match.as_ref().is_some_and(|m| !m.is_empty()),
        RouteRequest::Mirror(m) => m.r#match.as_ref().is_some_and(|m| !m.is_empty()),
    }
}

fn step_of(route: &RouteRequest) -> &'static str {
    match route {
        RouteRequest::Header(_) => "setHeaderRoute",
        RouteRequest::Mirror(_) => "setMirrorRoute",
    }
}

/// The rules `rules` are to have: the user's as they are (split rules at the weights as read),
/// and before each split rule the rules of the routes `wanted`. Also where each split rule lands.
pub(super) fn layout(
    object: &str,
    rules: &[Value],
    managed: &[bool],
    splits: &[Split],
    wanted: &[&RouteRequest],
    desired: &Desired,
) -> Result<(Vec<Value>, Vec<usize>), Error> {
    let mut out = Vec::new();
    let mut landed = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if managed.get(i).copied().unwrap_or(false) {
            continue;
        }
        if let Some((k, at)) = splits.iter().enumerate().find(|(_, s)| s.rule == i) {
            for route in wanted {
                let name = rule_name(route.name(), k, splits.len());
                match route {
                    RouteRequest::Header(h) => out.push(header_rule(object, rule, i, at, h, &name)?),
                    RouteRequest::Mirror(m) => out.extend(mirror_rule(object, rule, i, at, m, &name, desired)?),
                }
            }
            landed.push(out.len());
        }
        out.push(rule.clone());
    }
    Ok((out, landed))
}

/// Gateway API's limits on the rules and their matches, checked before the API server would.
pub(super) fn check_limits(object: &str, rules: &[Value]) -> Result<(), Error> {
    if rules.len() > MAX_RULES {
        return Err(malformed(
            object,
            format!(
                "the header and mirror routes would make {} rules; Gateway API allows {MAX_RULES} per HTTPRoute",
                rules.len()
            ),
        ));
    }
    let mut total = 0;
    for (i, rule) in rules.iter().enumerate() {
        let count = rule.get("matches").and_then(Value::as_array).map_or(1, |m| m.len().max(1));
        if count > MAX_MATCHES_PER_RULE {
            let name = rule.get("name").and_then(Value::as_str).unwrap_or_default();
            return Err(malformed(
                object,
                format!(
                    "rule {name} (rule {i} once written) would have {count} matches; Gateway API allows {MAX_MATCHES_PER_RULE}"
                ),
            ));
        }
        total += count;
    }
    if total > MAX_MATCHES_PER_ROUTE {
        return Err(malformed(
            object,
            format!(
                "the header and mirror routes would make {total} matches in all; Gateway API allows {MAX_MATCHES_PER_ROUTE} per HTTPRoute"
            ),
        ));
    }
    Ok(())
}

impl GatewayApi {
    /// The routes to make in `target`, in the order of managedRoutes; each checked to be named
    /// there and to name a rule. None when `target` takes no header routes.
    pub(super) fn wanted<'a>(
        &self,
        target: &Target,
        desired: &'a Desired,
    ) -> Result<Option<Vec<&'a RouteRequest>>, Error> {
        let mut wanted: Vec<&RouteRequest> = desired.routes.iter().filter(|r| is_wanted(r)).collect();
        if let Some(route) = wanted.first()
            && !self.header_routes.iter().any(|t| *t)
        {
            return Err(Error::Config(format!(
                "trafficRouting.plugins[\"{PLUGIN_NAME}\"]: {} {} needs an httpRoute or an httpRoutes entry with useHeaderRoutes: true; as in Argo's plugin, only those get header and mirror routes",
                step_of(route),
                route.name()
            )));
        }
        if !self.takes_routes(target) {
            return Ok(None);
        }
        let order = |name: &str| desired.managed_route_names.iter().position(|n| n == name);
        for route in &wanted {
            let name = route.name();
            if order(name).is_none() {
                return Err(Error::Config(format!(
                    "{} {name}: the route must be listed in trafficRouting.managedRoutes",
                    step_of(route)
                )));
            }
            if !valid_rule_name(&format!("{name}-{}", MAX_RULES - 1)) {
                return Err(Error::Config(format!(
                    "trafficRouting.managedRoutes: {name} cannot name an HTTPRoute rule; Gateway API wants lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
                )));
            }
        }
        wanted.sort_by_key(|r| order(r.name()));
        Ok(Some(wanted))
    }
}
