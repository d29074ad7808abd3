//! `kubectl stepwise dashboard` as a person starts it: the debug build of the plugin, on a port of
//! 127.0.0.1, with the local control plane's kubeconfig; and a plain HTTP client of its API, for
//! what a test checks beside the browser.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{eventually, kubeconfig_path, repo_root};

/// A dashboard server started by a test.
pub struct DashboardProcess {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its arguments after `dashboard`, to start it again the same way.
    args: Vec<String>,
    /// Its log file.
    pub log: PathBuf,
}

/// An answer of the dashboard's API: the status code and the body as JSON.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl DashboardProcess {
    /// Starts it with `args` after `dashboard` (e.g. `-n NS --actions`), on a free port, and waits
    /// until its watches have listed. Its log is `target/e2e-logs/<name>.log`.
    pub async fn start(name: &str, args: &[&str]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let logs = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&logs)?;
        let mut process = DashboardProcess {
            child: spawn(port, args, &logs.join(format!("{name}.log")))?,
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            log: logs.join(format!("{name}.log")),
        };
        process.wait_ready().await?;
        Ok(process)
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Stops it at once (SIGKILL), as a crash or a node's loss would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same arguments.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.child = spawn(self.port, &args, &self.log)?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let result = eventually("the dashboard to serve the list of Rollouts", Duration::from_secs(60), || async {
            Ok(self.get("/api/rollouts").await.is_ok_and(|a| a.status != 0))
        })
        .await;
        if let Err(e) = result {
            bail!("{e}\ndashboard log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
        Ok(())
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.request("GET", path, &[], None).await
    }

    /// POST `body` (JSON) to `path` with extra headers.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> anyhow::Result<Answer> {
        self.request("POST", path, headers, Some(body)).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw);
        let (head, payload) = text.split_once("\r\n\r\n").context("an HTTP answer without a blank line")?;
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = serde_json::from_str(payload).unwrap_or(Value::String(payload.to_string()));
        Ok(Answer { status, body })
    }
}

impl Drop for DashboardProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(port: u16, args: &[&str], log: &std::path::Path) -> anyhow::Result<Child> {
    let bin = repo_root().join("target/debug/kubectl-stepwise");
    if !bin.exists() {
        bail!("{} not built: run `cargo build --bins` first (just test does)", bin.display());
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Command::new(bin)
        .arg("dashboard")
        .arg(format!("--kubeconfig={}", kubeconfig_path().display()))
        .arg(format!("--address=127.0.0.1:{port}"))
        .args(args)
        .stdout(file.try_clone()?)
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .context("start kubectl-stepwise dashboard")
}
