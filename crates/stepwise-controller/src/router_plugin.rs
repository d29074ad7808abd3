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

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// The traffic each plugin last answered `verified: null` for, by (plugin, Rollout UID): it
    /// cannot tell whether that split is in effect, so it is not asked again until the traffic
    /// changes. Kept in memory: after a restart it is asked once more.
    cannot_tell: Mutex<HashMap<(String, String), Desired>>,
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
        Ok(RouterPlugins { plugins, client, timeout, cannot_tell: Mutex::default() })
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
        let key = (name.to_string(), rollout.uid.clone());
        match answer.verified {
            None => lock(&self.cannot_tell).insert(key, desired.clone()),
            Some(_) => lock(&self.cannot_tell).remove(&key),
        };
        Ok(answer)
    }

    /// Whether the plugin `name` answered, for `rollout_uid`, that it cannot tell whether
    /// `desired` is in effect: asking it again would tell nothing new.
    pub fn cannot_tell(&self, name: &str, rollout_uid: &str, desired: &Desired) -> bool {
        lock(&self.cannot_tell).get(&(name.to_string(), rollout_uid.to_string())) == Some(desired)
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// A plugin on 127.0.0.1 that answers its info, then each set-traffic with the next of
    /// `verified`, counting the set-traffic calls.
    async fn plugin_answering(verified: Vec<Value>) -> (RouterPlugins, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            let mut answers = verified.into_iter();
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0; 64 * 1024];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let body = if String::from_utf8_lossy(&request[..n]).starts_with("GET") {
                    serde_json::json!({"protocol": plugin::PROTOCOL, "capabilities": {"router": {}}})
                } else {
                    counted.fetch_add(1, Ordering::SeqCst);
                    serde_json::json!({"protocol": plugin::PROTOCOL, "verified": answers.next().unwrap_or(Value::Null)})
                }
                .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        let plugins =
            RouterPlugins::new(&[format!("example.com/lb=http://127.0.0.1:{port}")], Duration::from_secs(5)).unwrap();
        (plugins, calls)
    }

    fn traffic(canary_weight: i32) -> Desired {
        Desired::split("app-canary", "app-stable", canary_weight, 100)
    }

    #[tokio::test]
    async fn a_plugin_that_cannot_tell_is_not_asked_again_until_the_traffic_changes() {
        let (plugins, calls) = plugin_answering(vec![Value::Null, Value::Bool(true)]).await;
        let rollout = RolloutRef { namespace: "shop".into(), name: "app".into(), uid: "u-1".into() };
        let config = serde_json::json!({});
        let answer = plugins.set_traffic("example.com/lb", &rollout, &config, &traffic(20)).await.unwrap();
        assert_eq!((answer.verified, calls.load(Ordering::SeqCst)), (None, 1));
        assert!(plugins.cannot_tell("example.com/lb", "u-1", &traffic(20)));
        assert!(!plugins.cannot_tell("example.com/lb", "u-1", &traffic(40)), "another weight is asked again");
        assert!(!plugins.cannot_tell("example.com/lb", "u-2", &traffic(20)), "so is another Rollout");
        let answer = plugins.set_traffic("example.com/lb", &rollout, &config, &traffic(20)).await.unwrap();
        assert_eq!(answer.verified, Some(true));
        assert!(!plugins.cannot_tell("example.com/lb", "u-1", &traffic(20)), "an answer that tells replaces it");
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
