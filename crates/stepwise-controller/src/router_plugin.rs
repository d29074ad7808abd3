//! Router plugins: the HTTP client that calls the traffic routers a platform team runs out of
//! process (a sidecar on 127.0.0.1, or a Service), registered with `--router-plugin NAME=URL`.
//!
//! The messages and the judging of every answer are pure (`stepwise_traffic::plugin`); this
//! module sends them. Each plugin's `v1/info` is fetched on its first use and kept once it
//! answers, not at startup: a plugin may start after the controller (a sidecar, a Service
//! rolling out), and until it answers, a Rollout that names it gets a retryable error rather
//! than a controller that refuses to start. Every call is bounded by the timeout; every failure
//! names the plugin and its URL, and keeps its kind (timeout, connection, HTTP status, not JSON,
//! protocol) apart in the message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use stepwise_traffic::Desired;
use stepwise_traffic::plugin::{self, Info, PluginError, Problem, RolloutRef, SetTrafficAnswer};
use tracing::debug;

/// The most of an answer that is read: a plugin's answers are a few hundred bytes, and a plugin
/// that streams without end must not fill the controller's memory.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The router plugins the controller was started with, by the name Rollouts write under
/// `trafficRouting.plugins`.
#[derive(Default)]
pub struct RouterPlugins {
    plugins: BTreeMap<String, Registered>,
    /// None only when no plugin is registered: building a client needs a TLS provider, and a
    /// controller without plugins needs no client.
    client: Option<reqwest::Client>,
    timeout: Duration,
}

impl std::fmt::Debug for RouterPlugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: BTreeMap<&str, &str> = self.plugins.iter().map(|(n, r)| (n.as_str(), r.url.as_str())).collect();
        f.debug_struct("RouterPlugins").field("plugins", &urls).field("timeout", &self.timeout).finish()
    }
}

struct Registered {
    url: String,
    /// Its `v1/info`, once it answered with a router of our protocol.
    info: Mutex<Option<Info>>,
}

impl RouterPlugins {
    /// The plugins of `--router-plugin NAME=URL` flags; each call may take `timeout`.
    pub fn new(flags: &[String], timeout: Duration) -> Result<Self, String> {
        let mut plugins = BTreeMap::new();
        for flag in flags {
            let (name, url) = plugin::parse_registration(flag)?;
            if let Some(earlier) = plugins.insert(name.clone(), Registered { url, info: Mutex::new(None) }) {
                return Err(format!("--router-plugin {name} is registered twice (at {} too)", earlier.url));
            }
        }
        if timeout.is_zero() {
            return Err("--router-plugin-timeout must be more than 0s".into());
        }
        let client = if plugins.is_empty() { None } else { Some(http_client()?) };
        Ok(RouterPlugins { plugins, client, timeout })
    }

    /// The names of the registered plugins.
    pub fn names(&self) -> BTreeSet<String> {
        self.plugins.keys().cloned().collect()
    }

    /// The registered plugins as router kinds (`plugins.<name>`), as core compares a Rollout's
    /// routers with.
    pub fn kinds(&self) -> impl Iterator<Item = String> + '_ {
        self.plugins.keys().map(|name| format!("plugins.{name}"))
    }

    /// What the plugin registered as `name` says of itself, fetched once it answers and kept.
    /// An error when it does not answer, speaks another protocol or is not a router.
    pub async fn info(&self, name: &str) -> Result<Info, PluginError> {
        let (registered, client) = self.plugin(name)?;
        if let Some(info) = lock(&registered.info).clone() {
            return Ok(info);
        }
        let error = |problem| PluginError { plugin: name.to_string(), url: registered.url.clone(), problem };
        let request = client.get(plugin::endpoint(&registered.url, plugin::INFO_PATH));
        let (status, body) = self.exchange(request).await.map_err(error)?;
        let info = plugin::read_info(status, &body).map_err(error)?;
        if info.router.is_none() {
            return Err(error(Problem::NotARouter));
        }
        debug!(plugin = name, url = %registered.url, ?info, "router plugin answered");
        *lock(&registered.info) = Some(info.clone());
        Ok(info)
    }

    /// Asks the plugin registered as `name` to bring its router to `desired` for `rollout`, with
    /// `config` (the Rollout's `trafficRouting.plugins.<name>`) as written.
    pub async fn set_traffic(
        &self,
        name: &str,
        rollout: &RolloutRef,
        config: &Value,
        desired: &Desired,
    ) -> Result<SetTrafficAnswer, PluginError> {
        self.info(name).await?;
        let (registered, client) = self.plugin(name)?;
        let error = |problem| PluginError { plugin: name.to_string(), url: registered.url.clone(), problem };
        let body = plugin::set_traffic_request(rollout, config, desired);
        let request = client
            .post(plugin::endpoint(&registered.url, plugin::SET_TRAFFIC_PATH))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let started = Instant::now();
        let (status, body) = self.exchange(request).await.map_err(error)?;
        let answer = plugin::read_set_traffic(status, &body);
        if let Err(Problem::Protocol(_)) = answer {
            // Upgraded or replaced since its info was read: read it again next time.
            *lock(&registered.info) = None;
        }
        let answer = answer.map_err(error)?;
        debug!(plugin = name, status, elapsed_ms = started.elapsed().as_millis() as u64, "router plugin set traffic");
        Ok(answer)
    }

    fn plugin(&self, name: &str) -> Result<(&Registered, &reqwest::Client), PluginError> {
        match (self.plugins.get(name), &self.client) {
            (Some(registered), Some(client)) => Ok((registered, client)),
            _ => Err(PluginError {
                plugin: name.to_string(),
                url: "(not registered)".into(),
                problem: Problem::BadAnswer("start the controller with --router-plugin NAME=URL".into()),
            }),
        }
    }

    /// Sends `request` and reads the answer's status and body, all within the timeout.
    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<(u16, String), Problem> {
        let call = async {
            let mut response = request.header(reqwest::header::ACCEPT, "application/json").send().await?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_ANSWER_BYTES {
                    return Ok(Err(Problem::Transport(format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"))));
                }
            }
            Ok::<_, reqwest::Error>(Ok((status, String::from_utf8_lossy(&body).into_owned())))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(Problem::Timeout(self.timeout)),
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) if e.is_connect() => Err(Problem::Connect(root_cause(&e))),
            Ok(Err(e)) if e.is_timeout() => Err(Problem::Timeout(self.timeout)),
            Ok(Err(e)) => Err(Problem::Transport(causes(&e))),
        }
    }
}

/// The lock's data even if a thread panicked holding it: it holds a cache, which is at worst
/// fetched again.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The HTTP client of every plugin call: rustls with ring (reqwest is built without a TLS
/// provider; the process-wide one is installed unless one is), no proxy (a plugin sits next to
/// the controller or in the cluster, and `HTTPS_PROXY` set for the outside must not see the
/// Rollouts' plugin configuration), and no redirects (an answer is the plugin's own or an
/// error).
fn http_client() -> Result<reqwest::Client, String> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only means another thread installed a provider in between, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .user_agent(concat!("stepwise/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client of the router plugins: {}", causes(&e)))
}

/// The innermost cause of an error: for a failed connection, what the OS said ("Connection
/// refused (os error 111)", a name that does not resolve).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// An error with its causes, `a: b: c`, skipping causes its text already repeats.
fn causes(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let part = match c.downcast_ref::<reqwest::Error>() {
            // reqwest's own text names the URL, which the error names already.
            Some(_) => "the request failed".to_string(),
            None => c.to_string(),
        };
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_parsed_and_a_name_registered_twice_is_refused() {
        let plugins = RouterPlugins::new(
            &["example.com/file=http://127.0.0.1:7070".into(), "acme/lb=http://lb.infra.svc:80/".into()],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(plugins.kinds().collect::<Vec<_>>(), ["plugins.acme/lb", "plugins.example.com/file"]);
        let twice =
            RouterPlugins::new(&["a=http://127.0.0.1:1".into(), "a=http://127.0.0.1:2".into()], Duration::from_secs(1));
        assert_eq!(twice.err().unwrap(), "--router-plugin a is registered twice (at http://127.0.0.1:1 too)");
        assert!(RouterPlugins::new(&["a=http://127.0.0.1:1".into()], Duration::ZERO).is_err());
    }

    #[tokio::test]
    async fn a_plugin_that_is_not_listening_is_a_connection_error_naming_its_url() {
        // A port just freed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let plugins =
            RouterPlugins::new(&[format!("example.com/file=http://127.0.0.1:{port}")], Duration::from_secs(5)).unwrap();
        let err = plugins.info("example.com/file").await.unwrap_err().to_string();
        let prefix = format!(
            "router plugin example.com/file at http://127.0.0.1:{port}: cannot connect (is the plugin running and listening there?): "
        );
        assert!(err.starts_with(&prefix), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn a_plugin_that_never_answers_times_out() {
        // Accepts the connection and says nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(socket);
        });
        let plugins =
            RouterPlugins::new(&[format!("example.com/file=http://127.0.0.1:{port}")], Duration::from_millis(300))
                .unwrap();
        let err = plugins.info("example.com/file").await.unwrap_err().to_string();
        assert_eq!(err, format!("router plugin example.com/file at http://127.0.0.1:{port}: timed out after 300ms"));
        held.abort();
    }
}
