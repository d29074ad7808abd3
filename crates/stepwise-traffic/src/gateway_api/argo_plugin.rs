//! The plugin form: the configuration of Argo's `argoproj-labs/gatewayAPI` plugin read as the
//! built-in router's, with the plugin's choice of which HTTPRoutes take header and mirror routes.

use serde_json::Value;
use stepwise_api::GatewayApiTrafficRouting;

use super::{GatewayApi, PLUGIN_NAME};
use crate::Error;

impl GatewayApi {
    /// The router for the configuration of Argo's plugin (`trafficRouting.plugins["argoproj-labs/gatewayAPI"]`)
    /// in a Rollout of `namespace`. As in the plugin, header and mirror routes go into `httpRoute`
    /// and into the `httpRoutes` entries with `useHeaderRoutes: true` only.
    pub fn from_plugin(config: &Value, namespace: &str) -> Result<GatewayApi, Error> {
        let routing = from_plugin_config(config)?;
        let mut router = GatewayApi::new(&routing, namespace).map_err(|_| {
            Error::Config(format!(
                "trafficRouting.plugins[\"{PLUGIN_NAME}\"] must name an httpRoute, httpRoutes, grpcRoute, grpcRoutes, tcpRoute or tcpRoutes"
            ))
        })?;
        let entries = config.get("httpRoutes").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let listed = entries
            .iter()
            .map(|entry| match entry.get("useHeaderRoutes") {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(Error::Config(format!(
                    "trafficRouting.plugins[\"{PLUGIN_NAME}\"].httpRoutes[].useHeaderRoutes must be true or false"
                ))),
            })
            .collect::<Result<Vec<bool>, Error>>()?;
        let others = router.routes.len() - routing.http_route.iter().count() - listed.len();
        router.header_routes =
            routing.http_route.iter().map(|_| true).chain(listed).chain(vec![false; others]).collect();
        Ok(router)
    }
}

/// The configuration of Argo's Gateway API plugin, as the built-in router's (which routes take
/// header routes aside: see [`GatewayApi::from_plugin`]).
pub fn from_plugin_config(config: &Value) -> Result<GatewayApiTrafficRouting, Error> {
    let field = |name: &str| format!("trafficRouting.plugins[\"{PLUGIN_NAME}\"].{name}");
    let string = |v: &Value, name: &str| {
        v.as_str().map(str::to_string).ok_or_else(|| Error::Config(format!("{} must be a string", field(name))))
    };
    let one = |key: &str| config.get(key).map(|v| string(v, key)).transpose();
    // A list holds names or `{name, ...}` objects.
    let many = |key: &str| match config.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(name) => Ok(name.clone()),
                other => string(other.get("name").unwrap_or(&Value::Null), &format!("{key}[].name")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(Error::Config(format!("{} must be a list", field(key)))),
    };
    Ok(GatewayApiTrafficRouting {
        http_route: one("httpRoute")?,
        http_routes: many("httpRoutes")?,
        grpc_route: one("grpcRoute")?,
        grpc_routes: many("grpcRoutes")?,
        tcp_route: one("tcpRoute")?,
        tcp_routes: many("tcpRoutes")?,
        namespace: one("namespace")?,
    })
}
