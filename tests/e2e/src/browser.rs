//! A small W3C WebDriver client: a headless chromium driven through chromedriver, for tests of the
//! dashboard. Debian's `chromium` and `chromium-driver` (`scripts/browser.sh` installs them);
//! `STEPWISE_CHROMIUM` and `STEPWISE_CHROMEDRIVER` point at other builds. chromedriver listens on
//! 127.0.0.1 (and ::1) only, on a free port; each [`Browser`] has its own chromedriver, chromium
//! and profile, so tests run in parallel.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use stepwise_e2e::browser::Browser;
//! let browser = Browser::start().await?;
//! browser.goto("http://127.0.0.1:8080/").await?;
//! browser.find("button#promote").await?.click().await?;
//! browser.wait_text_contains("#phase", "Promoting", stepwise_e2e::secs(5)).await?;
//! browser.screenshot("target/e2e-logs/dashboard.png").await?;
//! # Ok(()) }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The key of an element reference in the W3C protocol.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver command may take (a page load is capped at 30 s by the session).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long Drop waits for each step of shutting chromedriver and chromium down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the `wait_*` methods look again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A headless chromium driven by its own chromedriver. Dropping it ends the session (chromium
/// quits), stops chromedriver and removes the profile.
#[derive(Debug)]
pub struct Browser {
    session: Session,
    /// chromium's process, killed on Drop when the session could not be ended.
    browser_pid: Option<u64>,
    driver: Driver,
}

/// An element found by a CSS selector; the selector names it in errors.
#[derive(Debug, Clone)]
pub struct Element {
    session: Session,
    id: String,
    selector: String,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless chromium session of it.
    pub async fn start() -> anyhow::Result<Self> {
        let chromedriver = program("STEPWISE_CHROMEDRIVER", "/usr/bin/chromedriver")?;
        let chromium = program("STEPWISE_CHROMIUM", "/usr/bin/chromium")?;
        let driver = Driver::start(&chromedriver).await?;
        let capabilities = capabilities(&chromium, &driver.dir.path.join("profile"));
        let created = request(driver.port, "POST", "/session", Some(&capabilities))
            .await
            .map_err(|e| anyhow!("create a chromium session ({}): {e:#}", driver.log_tail()))?;
        let id = created["sessionId"].as_str().context("no sessionId in the new session")?.to_owned();
        let browser_pid = created["capabilities"]["goog:processID"].as_u64();
        Ok(Self { session: Session { port: driver.port, id }, browser_pid, driver })
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session.post("/url", json!({ "url": url })).await.map_err(doing(format!("open {url}")))?;
        Ok(())
    }

    /// Loads the current page again.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        self.session.post("/refresh", json!({})).await.map_err(doing("refresh"))?;
        Ok(())
    }

    /// The current page's URL.
    pub async fn url(&self) -> anyhow::Result<String> {
        string(self.session.get("/url").await.map_err(doing("read the URL"))?)
    }

    /// The current page's title.
    pub async fn title(&self) -> anyhow::Result<String> {
        string(self.session.get("/title").await.map_err(doing("read the title"))?)
    }

    /// The first element matching the CSS selector `css`; fails naming it when there is none.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let found = self.session.post("/element", by_css(css)).await.map_err(doing(format!("find `{css}`")))?;
        self.element(css, &found)
    }

    /// Every element matching the CSS selector `css`, in document order.
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let found = self.session.post("/elements", by_css(css)).await.map_err(doing(format!("find `{css}`")))?;
        let found = found.as_array().with_context(|| format!("find `{css}`: not a list: {found}"))?;
        found.iter().map(|f| self.element(css, f)).collect()
    }

    /// Whether an element matches the CSS selector `css`.
    pub async fn exists(&self, css: &str) -> anyhow::Result<bool> {
        Ok(!self.find_all(css).await?.is_empty())
    }

    /// Runs `script` (a function body: `return document.title`) in the page with `args` as
    /// `arguments`, and returns what it returned.
    pub async fn execute(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        let body = json!({ "script": script, "args": args });
        self.session.post("/execute/sync", body).await.map_err(doing(format!("run script {script:?}")))
    }

    /// Writes a PNG of the viewport to `path`, creating its directory.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        let png = base64_decode(&string(self.session.get("/screenshot").await.map_err(doing("take a screenshot"))?)?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }

    /// The console errors (and failed loads) of the pages since the previous call: chromium hands
    /// each log entry out once.
    pub async fn console_errors(&self) -> anyhow::Result<Vec<String>> {
        let entries =
            self.session.post("/se/log", json!({ "type": "browser" })).await.map_err(doing("read the log"))?;
        let entries = entries.as_array().with_context(|| format!("the browser log is not a list: {entries}"))?;
        Ok(entries
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    /// Polls the text of the first element matching `css` every 100 ms until `accept` takes it, and
    /// returns it; after `timeout`, fails with the last text seen (or why there was none).
    pub async fn wait_text(
        &self,
        css: &str,
        accept: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        wait_for(&format!("the text of `{css}`"), timeout, || async {
            match self.find(css).await?.text().await {
                Ok(text) if accept(&text) => Ok(Some(text)),
                Ok(text) => Err(anyhow!("last seen {text:?}")),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// [`Browser::wait_text`] until the text contains `needle`.
    pub async fn wait_text_contains(&self, css: &str, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_text(css, |text| text.contains(needle), timeout)
            .await
            .map_err(doing(format!("wait for {needle:?} in `{css}`")))
    }

    fn element(&self, selector: &str, found: &Value) -> anyhow::Result<Element> {
        let id = found[ELEMENT_KEY].as_str().with_context(|| format!("find `{selector}`: no element in {found}"))?;
        Ok(Element { session: self.session.clone(), id: id.to_owned(), selector: selector.to_owned() })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session.id);
        if request_blocking(self.driver.port, "DELETE", &path).is_err()
            && let Some(pid) = self.browser_pid
        {
            // chromium outlives a killed chromedriver: kill it first.
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        }
    }
}

impl Element {
    /// Its rendered text (what a user sees, without hidden parts).
    pub async fn text(&self) -> anyhow::Result<String> {
        string(self.get("text").await?)
    }

    /// Its attribute `name`, or `None` when it has none.
    pub async fn attr(&self, name: &str) -> anyhow::Result<Option<String>> {
        let value = self.get(&format!("attribute/{name}")).await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Whether it is enabled (not a disabled form control).
    pub async fn is_enabled(&self) -> anyhow::Result<bool> {
        let value = self.get("enabled").await?;
        value.as_bool().with_context(|| format!("`{}` enabled: not a boolean: {value}", self.selector))
    }

    /// Clicks it (scrolled into view first); fails when something covers it.
    pub async fn click(&self) -> anyhow::Result<()> {
        self.post("click", json!({})).await
    }

    /// Types `text` into it, after what it already holds.
    pub async fn send_keys(&self, text: &str) -> anyhow::Result<()> {
        self.post("value", json!({ "text": text })).await
    }

    /// Empties an input or a text area.
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.post("clear", json!({})).await
    }

    async fn get(&self, what: &str) -> anyhow::Result<Value> {
        self.session.get(&format!("/element/{}/{what}", self.id)).await.map_err(self.doing(what))
    }

    async fn post(&self, what: &str, body: Value) -> anyhow::Result<()> {
        self.session.post(&format!("/element/{}/{what}", self.id), body).await.map_err(self.doing(what))?;
        Ok(())
    }

    fn doing(&self, what: &str) -> impl FnOnce(anyhow::Error) -> anyhow::Error {
        doing(format!("{what} of `{}`", self.selector))
    }
}

/// Polls `check` every 100 ms until it returns a value, and returns it; after `timeout`, fails
/// naming `what` and the last error `check` returned (say, the last text it saw).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if start.elapsed() > timeout {
            let last = last.map(|e| format!(" ({e:#})")).unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {what}{last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One session of one chromedriver.
#[derive(Debug, Clone)]
struct Session {
    port: u16,
    id: String,
}

impl Session {
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        request(self.port, "GET", &format!("/session/{}{path}", self.id), None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        request(self.port, "POST", &format!("/session/{}{path}", self.id), Some(&body)).await
    }
}

/// A chromedriver process and a directory for its log and chromium's profile; on Drop, it stops
/// (with the browsers of its sessions), then the directory goes.
#[derive(Debug)]
struct Driver {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Driver {
    /// Starts `chromedriver` on a free port (again when another process took it first) and waits
    /// until it is ready.
    async fn start(chromedriver: &Path) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            let mut driver = Self::spawn(chromedriver)?;
            match driver.wait_ready().await {
                Ok(()) => return Ok(driver),
                Err(_) if attempt < 3 && driver.exited() => attempt += 1,
                Err(e) => return Err(e),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn spawn(chromedriver: &Path) -> anyhow::Result<Self> {
        let (port, dir) = (free_port()?, TempDir::new()?);
        let log = dir.path.join("chromedriver.log");
        let out = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        // Without --allowed-ips chromedriver binds the loopback addresses only.
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", chromedriver.display()))?;
        Ok(Self { child, port, dir })
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(status) = request(self.port, "GET", "/status", None).await
                && status["ready"] == true
            {
                return Ok(());
            }
            if self.exited() || start.elapsed() > SHUTDOWN_TIMEOUT {
                bail!("chromedriver on port {} did not get ready ({})", self.port, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The end of its log, for errors.
    fn log_tail(&self) -> String {
        let path = self.dir.path.join("chromedriver.log");
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("log {}: {}", path.display(), lines[lines.len().saturating_sub(10)..].join("\n"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // /shutdown quits the browsers of any session left, then chromedriver itself. Not when it
        // has exited already: another process may listen on its port now.
        if !self.exited() {
            let _ = request_blocking(self.port, "GET", "/shutdown");
        }
        let start = Instant::now();
        while !self.exited() && start.elapsed() < SHUTDOWN_TIMEOUT {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory of its own under the system's temporary directory, removed on Drop.
#[derive(Debug)]
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!("stepwise-browser-{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The program the environment variable `var` names, or `default`; fails naming
/// scripts/browser.sh when it is missing.
fn program(var: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if !path.is_file() {
        bail!(
            "{} not found: run scripts/browser.sh (installs Debian's chromium and chromium-driver) or set {var}",
            path.display()
        );
    }
    Ok(path)
}

/// The new session's capabilities: headless chromium with its own profile, its console log kept.
fn capabilities(chromium: &Path, profile: &Path) -> Value {
    let args = [
        "--headless=new".to_owned(),
        // Chromium refuses to start as root with its sandbox, and CI containers run as root.
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1400,1000".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "timeouts": { "implicit": 0, "pageLoad": 30_000, "script": 30_000 },
        "goog:loggingPrefs": { "browser": "ALL" },
        "goog:chromeOptions": { "binary": chromium, "args": args },
    }}})
}

fn by_css(css: &str) -> Value {
    json!({ "using": "css selector", "value": css })
}

fn string(value: Value) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s),
        other => bail!("not a string: {other}"),
    }
}

/// Prefixes an error with what was being done, in one line (`{e}` shows it all, unlike a
/// context).
fn doing(what: impl Display) -> impl FnOnce(anyhow::Error) -> anyhow::Error {
    move |e| anyhow!("{what}: {e:#}")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// One WebDriver command: the `value` of the answer, or an error with the driver's message.
async fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        conn.write_all(&encode_request(port, method, path, body)).await?;
        let (mut answer, mut chunk) = (Vec::new(), [0; 16 * 1024]);
        while !answer_complete(&answer) {
            match conn.read(&mut chunk).await? {
                0 => break,
                n => answer.extend_from_slice(&chunk[..n]),
            }
        }
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer within {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("{method} {path} on chromedriver's port {port}"))?;
    decode_response(&answer)
}

/// [`request`] without a body, blocking, for Drop (no runtime to await on).
fn request_blocking(port: u16, method: &str, path: &str) -> anyhow::Result<Value> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = std::net::TcpStream::connect_timeout(&address, SHUTDOWN_TIMEOUT)?;
    conn.set_read_timeout(Some(SHUTDOWN_TIMEOUT))?;
    conn.write_all(&encode_request(port, method, path, None))?;
    let (mut answer, mut chunk) = (Vec::new(), [0; 16 * 1024]);
    while !answer_complete(&answer) {
        match conn.read(&mut chunk)? {
            0 => break,
            n => answer.extend_from_slice(&chunk[..n]),
        }
    }
    decode_response(&answer)
}

/// An HTTP/1.1 request, one per connection.
fn encode_request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Vec<u8> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    [head.into_bytes(), body.into_bytes()].concat()
}

/// Whether `received` holds a whole answer: its head and as many bytes of body as its
/// Content-Length says. chromedriver always sends one, and keeps the connection open after
/// answering even when asked to close it, so the end of the stream cannot mark the end of an answer.
fn answer_complete(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&received[..end]);
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("content-length") { value.trim().parse::<usize>().ok() } else { None }
    });
    length.is_some_and(|length| received.len() >= end + 4 + length)
}

/// The `value` of a WebDriver answer; an error answer becomes its `message`.
fn decode_response(answer: &[u8]) -> anyhow::Result<Value> {
    let answer = String::from_utf8_lossy(answer);
    let (head, body) = answer.split_once("\r\n\r\n").with_context(|| format!("not an HTTP answer: {answer:?}"))?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
    let body: Value = serde_json::from_str(body).with_context(|| format!("not JSON: {answer:?}"))?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    match value.get("error").and_then(Value::as_str) {
        Some(error) => bail!("{}", driver_message(error, &value)),
        None if status.is_none_or(|s| s >= 400) => bail!("HTTP status {status:?}: {body}"),
        None => Ok(value),
    }
}

/// The driver's message without the session information chromedriver appends.
fn driver_message(error: &str, value: &Value) -> String {
    let message = value["message"].as_str().unwrap_or(error);
    message.split("\n  (Session info:").next().unwrap_or(message).trim().to_owned()
}

/// Decodes standard base64 (what screenshots come as).
fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64: {:?}", char::from(c)),
        };
        bits = ((bits << 6) | u32::from(sextet)) & 0xffff;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const PAGE: &str = r#"<!doctype html><title>browser test</title>
<p id="status">waiting</p>
<input id="name" value="placeholder">
<button id="go" onclick="document.getElementById('status').textContent = 'hello ' + document.getElementById('name').value">Go</button>
<button id="off" disabled data-why="no reason">Off</button>
<script>console.error("expected in the test")</script>"#;

    /// Serves PAGE to every request on a free loopback port.
    async fn serve_page() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = vec![0; 4096];
                    let _ = conn.read(&mut request).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                        PAGE.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        format!("http://{address}/")
    }

    #[tokio::test]
    async fn drives_chromium() -> anyhow::Result<()> {
        let url = serve_page().await;
        let browser = Browser::start().await?;
        browser.goto(&url).await?;
        assert_eq!(browser.url().await?, url);
        assert_eq!(browser.title().await?, "browser test");
        assert_eq!(browser.find("#status").await?.text().await?, "waiting");

        let name = browser.find("#name").await?;
        name.clear().await?;
        name.send_keys("stepwise").await?;
        browser.find("#go").await?.click().await?;
        let text = browser.wait_text_contains("#status", "hello stepwise", Duration::from_secs(5)).await?;
        assert_eq!(text, "hello stepwise");

        let off = browser.find("#off").await?;
        assert!(!off.is_enabled().await?);
        assert!(browser.find("#go").await?.is_enabled().await?);
        assert_eq!(off.attr("data-why").await?.as_deref(), Some("no reason"));
        assert_eq!(off.attr("data-none").await?, None);
        assert_eq!(browser.find_all("button").await?.len(), 2);
        assert!(!browser.exists("#missing").await?);
        let missing = browser.find("#missing").await.unwrap_err().to_string();
        assert!(missing.contains("#missing") && missing.contains("no such element"), "{missing}");

        assert_eq!(browser.execute("return arguments[0] + 1", &[json!(41)]).await?, json!(42));
        let errors = browser.console_errors().await?;
        assert!(errors.iter().any(|e| e.contains("expected in the test")), "{errors:?}");

        let timeout = browser.wait_text_contains("#status", "never", Duration::from_millis(300)).await.unwrap_err();
        assert!(timeout.to_string().contains("last seen \"hello stepwise\""), "{timeout}");

        browser.refresh().await?;
        assert_eq!(browser.find("#status").await?.text().await?, "waiting");

        let png = browser.driver.dir.path.join("shots/page.png");
        browser.screenshot(&png).await?;
        assert!(std::fs::read(&png)?.starts_with(b"\x89PNG\r\n\x1a\n"));
        Ok(())
    }

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("/+8=").unwrap(), [0xff, 0xef]);
        assert!(base64_decode("a*").is_err());
    }

    #[test]
    fn decodes_answers() {
        let answer = b"HTTP/1.1 404 Not Found\r\nContent-Length:9\r\n\r\n{\"value\":{\"error\":\"no such element\",\
            \"message\":\"no such element: Unable to locate element\\n  (Session info: chrome=1)\"}}";
        assert_eq!(decode_response(answer).unwrap_err().to_string(), "no such element: Unable to locate element");
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length:14\r\n\r\n{\"value\":true}";
        assert_eq!(decode_response(ok).unwrap(), json!(true));
        assert!(answer_complete(ok));
        assert!(!answer_complete(&ok[..ok.len() - 1]));
        assert!(!answer_complete(b"HTTP/1.1 200 OK\r\nContent-Length:14\r\n"));
    }
}
