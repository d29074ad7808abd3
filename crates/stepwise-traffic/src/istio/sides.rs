//! The canary and the stable side of a split: how a route's destinations are told apart, by the
//! Service their host names (host-level splitting) or by DestinationRule subset (subset-level),
//! and the errors naming a destination that is neither or a side that is missing.

use serde_json::Value;

use crate::Error;

/// The canary or the stable side of a split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    Canary,
    Stable,
}

/// How the canary and stable destinations of a route are told apart.
#[derive(Clone, Copy, Debug)]
pub(super) enum Sides<'a> {
    /// Host-level splitting: by the Service the host names.
    Services { canary: &'a str, stable: &'a str },
    /// Subset-level splitting: by DestinationRule subset.
    Subsets { canary: &'a str, stable: &'a str },
}

impl Sides<'_> {
    /// The side `destination` (a route's `destination`) is, if any.
    pub(super) fn side_of(&self, destination: &Value) -> Option<Side> {
        let (key, canary, stable) = match *self {
            Sides::Services { canary, stable } => (Some(service_of(host_of(destination))), canary, stable),
            Sides::Subsets { canary, stable } => (destination.get("subset").and_then(Value::as_str), canary, stable),
        };
        match key {
            Some(k) if k == canary => Some(Side::Canary),
            Some(k) if k == stable => Some(Side::Stable),
            _ => None,
        }
    }

    pub(super) fn unknown(&self, object: &str, route: &str, destination: &Value) -> Error {
        let host = host_of(destination).to_string();
        match *self {
            Sides::Services { canary, stable } => Error::UnknownDestination {
                object: object.to_string(),
                route: route.to_string(),
                destination: host,
                canary: canary.to_string(),
                stable: stable.to_string(),
            },
            Sides::Subsets { canary, stable } => {
                let subset = match destination.get("subset").and_then(Value::as_str) {
                    Some(subset) => format!("subset {subset}"),
                    None => "without a subset".to_string(),
                };
                Error::Malformed {
                    object: object.to_string(),
                    message: format!(
                        "{route} sends traffic to {host} {subset}, which is neither the canary subset {canary} nor the stable subset {stable}"
                    ),
                }
            }
        }
    }

    pub(super) fn missing(&self, object: &str, route: &str, side: Side) -> Error {
        match (*self, side) {
            (Sides::Services { canary: name, .. }, Side::Canary)
            | (Sides::Services { stable: name, .. }, Side::Stable) => Error::DestinationMissing {
                object: object.to_string(),
                route: route.to_string(),
                service: name.to_string(),
            },
            (Sides::Subsets { canary: name, .. }, Side::Canary)
            | (Sides::Subsets { stable: name, .. }, Side::Stable) => Error::Malformed {
                object: object.to_string(),
                message: format!("{route} has no destination for subset {name}"),
            },
        }
    }
}

pub(super) fn host_of(destination: &Value) -> &str {
    destination.get("host").and_then(Value::as_str).unwrap_or_default()
}

/// The Service a destination host names: the host up to its first dot.
fn service_of(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}
