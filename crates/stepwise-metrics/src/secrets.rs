//! Where providers read the Secrets that hold their credentials, as Argo's providers read them (a
//! Secret `datadog` in the controller's namespace, or one a metric names): the API server, or
//! fixed values in tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::{Answer, Error};

/// A Secret's data, its values as text.
pub type SecretData = BTreeMap<String, String>;

/// Reads Secrets. A trait object in each provider that needs one, so that tests stand in
/// [`FixedSecrets`].
pub trait SecretStore: Send + Sync {
    /// The data of the Secret `name` in `namespace`; None when there is no such Secret.
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> Answer<'a, Option<SecretData>>;
}

/// The Secrets of the API server.
#[derive(Clone)]
pub struct KubeSecrets {
    client: Client,
}

impl KubeSecrets {
    /// Secrets read with `client`.
    pub fn new(client: Client) -> Self {
        KubeSecrets { client }
    }
}

impl SecretStore for KubeSecrets {
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> Answer<'a, Option<SecretData>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let secret = api.get_opt(name).await.map_err(|e| Error::Kubernetes {
                action: format!("get Secret {namespace}/{name}"),
                message: e.to_string(),
            })?;
            Ok(secret.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).trim_end_matches('\n').to_string()))
                    .collect()
            }))
        })
    }
}

/// Secrets given by a test.
#[derive(Clone, Debug, Default)]
pub struct FixedSecrets {
    secrets: BTreeMap<(String, String), SecretData>,
}

impl FixedSecrets {
    /// Adds the Secret `namespace/name` with `data`.
    pub fn with(mut self, namespace: &str, name: &str, data: &[(&str, &str)]) -> Self {
        let data = data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.secrets.insert((namespace.to_string(), name.to_string()), data);
        self
    }
}

impl SecretStore for FixedSecrets {
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> Answer<'a, Option<SecretData>> {
        let found = self.secrets.get(&(namespace.to_string(), name.to_string())).cloned();
        Box::pin(async move { Ok(found) })
    }
}
