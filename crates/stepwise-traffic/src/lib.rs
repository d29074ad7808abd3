//! Traffic routers: the [`TrafficRouter`] seam between the controller and Istio, nginx, Traefik,
//! Gateway API and plugins. Each router lives in its own module (added by the traffic-routing
//! issue); [`fake::FakeRouter`] records calls for controller tests.

pub mod fake;

/// What the controller asks of a router. Weights are on the scale of `maxTrafficWeight`.
pub trait TrafficRouter {
    /// The router's name, as used in events and metrics (`istio`, `nginx`, ...).
    fn kind(&self) -> &'static str;
    /// Sends `canary_weight` to the canary and the rest to stable.
    fn set_weight(&mut self, canary_weight: i32) -> Result<(), Error>;
    /// Whether the weight last set is in effect; `None` when the router cannot tell.
    fn verify_weight(&mut self, canary_weight: i32) -> Result<Option<bool>, Error>;
    /// Removes every route the router created for header and mirror steps.
    fn remove_managed_routes(&mut self) -> Result<(), Error>;
}

/// Errors of the routers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The router's object (VirtualService, Ingress, HTTPRoute ...) does not exist.
    #[error("{kind} {name} not found")]
    NotFound {
        /// Kind of the missing object.
        kind: &'static str,
        /// Name of the missing object.
        name: String,
    },
}
