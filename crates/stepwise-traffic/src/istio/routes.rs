//! The routes of a VirtualService to split: the HTTP routes named (or its only one), the TLS and
//! TCP routes found by port and SNI hosts, each checked to send traffic to the canary and the
//! stable and nowhere else, and the operations that set their weights.

use std::collections::BTreeSet;

use serde_json::Value;

use super::VirtualServiceConfig;
use super::sides::{Side, Sides};
use crate::{Desired, Error, JsonPatch, set_weight};

pub(super) const HTTP: &str = "http";
const TLS: &str = "tls";
const TCP: &str = "tcp";

/// The routes of one section (`http`, `tls`, `tcp`) of `vs`.
pub(super) fn section<'v>(vs: &'v Value, name: &str) -> &'v [Value] {
    vs.get("spec").and_then(|s| s.get(name)).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

pub(super) fn destinations(route: &Value) -> &[Value] {
    route.get("route").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn name_of(route: &Value) -> Option<&str> {
    route.get("name").and_then(Value::as_str)
}

/// Whether stepwise owns `route`. A user's route that happens to bear a managed route's name is
/// owned too, as in Argo: the name is the only mark a managed route carries.
pub(super) fn is_managed(route: &Value, managed: &[String]) -> bool {
    name_of(route).is_some_and(|n| managed.iter().any(|m| m == n))
}

/// A route chosen for splitting, before its destinations are checked.
pub(super) struct Chosen {
    section: &'static str,
    index: usize,
    label: String,
}

impl Chosen {
    /// The split, once `vs` shows the route sends traffic to both sides and nowhere else.
    pub(super) fn check(self, vs: &Value, sides: Sides<'_>, object: &str) -> Result<Split, Error> {
        let route = &section(vs, self.section)[self.index];
        let (mut canary, mut stable) = (None, None);
        for (j, d) in destinations(route).iter().enumerate() {
            let destination = d.get("destination").unwrap_or(&Value::Null);
            match sides.side_of(destination) {
                Some(Side::Canary) => canary = Some(j),
                Some(Side::Stable) => stable = Some(j),
                None => return Err(sides.unknown(object, &self.label, destination)),
            }
        }
        let canary = canary.ok_or_else(|| sides.missing(object, &self.label, Side::Canary))?;
        let stable = stable.ok_or_else(|| sides.missing(object, &self.label, Side::Stable))?;
        Ok(Split { section: self.section, index: self.index, canary, stable })
    }
}

/// The routes of `vs` to split, HTTP first, each once.
pub(super) fn chosen(
    config: &VirtualServiceConfig,
    vs: &Value,
    managed: &[String],
    object: &str,
) -> Result<Vec<Chosen>, Error> {
    let mut out = chosen_http(config, section(vs, HTTP), managed, object)?;
    for tls in &config.tls {
        out.extend(found_by_match(TLS, section(vs, TLS), tls.port, tls.sni_hosts.as_deref(), object)?);
    }
    for tcp in &config.tcp {
        out.extend(found_by_match(TCP, section(vs, TCP), tcp.port, None, object)?);
    }
    let mut seen = BTreeSet::new();
    out.retain(|c| seen.insert((c.section, c.index)));
    Ok(out)
}

/// The HTTP routes `routes` names, none when only TLS or TCP routes are named, or else the only
/// HTTP route that is not a managed one.
fn chosen_http(
    config: &VirtualServiceConfig,
    http: &[Value],
    managed: &[String],
    object: &str,
) -> Result<Vec<Chosen>, Error> {
    let chosen = |index: usize, label: String| Chosen { section: HTTP, index, label };
    if !config.routes.is_empty() {
        return config
            .routes
            .iter()
            .map(|name| {
                if managed.contains(name) {
                    return Err(Error::Config(format!(
                        "{object}: route {name} is named both in routes to split and in trafficRouting.managedRoutes"
                    )));
                }
                http.iter()
                    .position(|r| name_of(r) == Some(name.as_str()))
                    .map(|i| chosen(i, format!("HTTP route {name}")))
                    .ok_or_else(|| Error::RouteNotFound { object: object.to_string(), route: name.clone() })
            })
            .collect();
    }
    if !config.tls.is_empty() || !config.tcp.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<usize> = (0..http.len()).filter(|&i| !is_managed(&http[i], managed)).collect();
    match users.as_slice() {
        [index] => {
            let label = name_of(&http[*index]).map_or("its HTTP route".to_string(), |n| format!("HTTP route {n}"));
            Ok(vec![chosen(*index, label)])
        }
        _ => {
            let besides = if users.len() < http.len() { " besides the managed ones" } else { "" };
            Err(Error::Malformed {
                object: object.to_string(),
                message: format!(
                    "has {} HTTP routes{besides}; name the ones to split in trafficRouting.istio.virtualService.routes",
                    users.len()
                ),
            })
        }
    }
}

/// The TLS or TCP routes whose matches name `port` and exactly the SNI hosts `sni`, each when
/// given; an error naming them when there is none.
fn found_by_match(
    kind: &'static str,
    routes: &[Value],
    port: Option<i64>,
    sni: Option<&[String]>,
    object: &str,
) -> Result<Vec<Chosen>, Error> {
    let upper = kind.to_uppercase();
    let found: Vec<Chosen> = routes
        .iter()
        .enumerate()
        .filter(|(_, r)| matches(r, port, sni))
        .map(|(index, _)| Chosen { section: kind, index, label: format!("{upper} route spec.{kind}[{index}]") })
        .collect();
    if found.is_empty() {
        let mut wanted = Vec::new();
        wanted.extend(port.map(|p| format!("port {p}")));
        wanted.extend(sni.map(|h| format!("SNI hosts [{}]", h.join(", "))));
        let message = match wanted.is_empty() {
            true => format!("has no {upper} route"),
            false => format!("no {upper} route matches {}", wanted.join(" and ")),
        };
        return Err(Error::Malformed { object: object.to_string(), message });
    }
    Ok(found)
}

/// Whether `route`'s matches name `port` and exactly the SNI hosts `sni`. As in Argo, the ports
/// and SNI hosts of all its match blocks are taken together, and a route matching several ports
/// is never the one a port names.
fn matches(route: &Value, port: Option<i64>, sni: Option<&[String]>) -> bool {
    let blocks = route.get("match").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let ports: BTreeSet<i64> = blocks.iter().filter_map(|m| m.get("port").and_then(Value::as_i64)).collect();
    let hosts: BTreeSet<&str> = blocks
        .iter()
        .filter_map(|m| m.get("sniHosts").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let port_matches = port.is_none_or(|p| ports.len() == 1 && ports.contains(&p));
    let hosts_match = sni.is_none_or(|want| want.iter().map(String::as_str).collect::<BTreeSet<_>>() == hosts);
    port_matches && hosts_match
}

/// One route to split: its section and index, and where its canary and stable destinations are.
pub(super) struct Split {
    pub(super) section: &'static str,
    pub(super) index: usize,
    pub(super) canary: usize,
    pub(super) stable: usize,
}

impl Split {
    /// The destination indexes and the weights they are to carry.
    pub(super) fn weights(&self, desired: &Desired) -> [(usize, i32); 2] {
        [(self.canary, desired.canary_weight), (self.stable, desired.stable_weight())]
    }

    pub(super) fn weight_path(&self, destination: usize) -> String {
        format!("/spec/{}/{}/route/{destination}/weight", self.section, self.index)
    }

    /// Appends the operations that set this split's weights in `vs`, addressed as read.
    pub(super) fn weight_ops(&self, ops: &mut JsonPatch, vs: &Value, desired: &Desired) {
        for (j, want) in self.weights(desired) {
            let path = self.weight_path(j);
            let current = vs.pointer(&path);
            set_weight(ops, path, current, want);
        }
    }

    /// The route as read in `vs`.
    pub(super) fn route<'v>(&self, vs: &'v Value) -> &'v Value {
        &section(vs, self.section)[self.index]
    }
}
