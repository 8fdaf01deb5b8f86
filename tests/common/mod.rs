//! Test harness: real `viber` processes on OS-chosen ports, HTTP with reqwest, raw WebSocket
//! peers over tokio-tungstenite through viber's own codec and handshake client. Nothing of
//! ours is mocked.
#![allow(dead_code)]

pub mod agent_cli;
pub mod fake_github;
pub mod fake_openai;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use viber::crypto::NodeKey;
use viber::node::handshake::{self, HandshakeError, NodeHello};
use viber::protocol::codec::{self, CodecError};
use viber::protocol::{Connect, Frame};

pub const BIN: &str = env!("CARGO_BIN_EXE_viber");

/// `git args` in `dir` as a fixed author; its stdout. Panics with git's stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        // Every test makes a TempDir first: install the TLS provider reqwest needs.
        viber::tls::init();
        let p = std::env::temp_dir().join(format!(
            "viber-test-{tag}-{:016x}",
            viber::crypto::random_u64()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `viber` process whose stderr goes to a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    lines: Option<mpsc::Receiver<String>>,
    /// `<data dir>/tmux`: a node's terminals, whose tmux servers outlive it by design and
    /// are ended with the process (see [`kill_tmux_servers`]).
    tmux_dir: Option<PathBuf>,
}

impl Proc {
    pub fn spawn(args: &[&str], log: PathBuf, envs: &[(&str, &str)]) -> Proc {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .env("RUST_LOG", "info")
            // The free-disk floor (256 MiB by default) is a guard for operators; a test
            // machine's shared disk can run that low without the tests being wrong, so the
            // suite's gateways keep 1 MiB. The floor's own test sets its flag, which wins.
            .env("VIBER_MIN_FREE_DISK_MB", "1")
            .env_remove("VIBER_HOME")
            .env_remove("VIBER_TOKEN")
            .env_remove("VIBER_GATEWAY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_MODEL")
            .env_remove("ANTHROPIC_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_MODEL")
            .env_remove("VIBER_LLM_PROVIDER");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn viber");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let tmux_dir = args
            .iter()
            .position(|a| *a == "--data-dir")
            .and_then(|i| args.get(i + 1))
            .map(|d| Path::new(d).join("tmux"));
        Proc {
            child,
            log,
            lines: Some(rx),
            tmux_dir,
        }
    }

    /// Waits for a stdout line starting with `prefix`.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let rx = self.lines.as_ref().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no line starting with {prefix:?} within {timeout:?}; log:\n{}",
                    self.logs()
                ),
            }
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (up to 15 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("process did not exit after SIGTERM; log:\n{}", self.logs()))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.tmux_dir {
            kill_tmux_servers(dir);
        }
    }
}

/// Ends the tmux server of every terminal a node left in `dir` (its `<data dir>/tmux`).
pub fn kill_tmux_servers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        kill_tmux_server(&e.path());
    }
}

/// Ends the tmux server on `socket`, if one runs there.
pub fn kill_tmux_server(socket: &Path) {
    if socket.extension().is_some() {
        return;
    }
    let _ = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .arg("kill-server")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A `viber gateway` process.
pub struct Gateway {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
    pub token: String,
    pub dir: PathBuf,
    pub http: reqwest::Client,
}

pub const HEARTBEAT_MS: &str = "300";

/// What [`Gateway::env_thread`] made: the environment's and binding's views, the thread id.
pub struct EnvThread {
    pub env: Value,
    pub binding: Value,
    pub thread: String,
}

impl Gateway {
    /// Starts a gateway on `port` (0: any) with its data in `dir`.
    pub fn start(dir: &Path, port: u16, extra: &[&str]) -> Gateway {
        Gateway::start_logged(dir, &dir.join("gateway.log"), port, extra)
    }

    /// Starts a gateway with its data in `dir` and its log in `log`.
    pub fn start_logged(dir: &Path, log: &Path, port: u16, extra: &[&str]) -> Gateway {
        let listen = format!("127.0.0.1:{port}");
        let dir_s = dir.to_str().unwrap();
        let mut args = vec!["gateway", "--listen", &listen, "--data-dir", dir_s];
        if !extra.contains(&"--heartbeat-ms") {
            args.extend_from_slice(&["--heartbeat-ms", HEARTBEAT_MS]);
        }
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn(&args, log.to_path_buf(), &[]);
        let line = proc.wait_line("viber ready: ", Duration::from_secs(30));
        Gateway::from_ready(proc, &line, dir)
    }

    /// Starts `viber all-in-one` on a free loopback port with its data in `dir`.
    #[allow(dead_code)]
    pub fn all_in_one(dir: &Path) -> Gateway {
        let mut proc = Proc::spawn(
            &[
                "all-in-one",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                dir.to_str().unwrap(),
            ],
            dir.join("aio.log"),
            &[],
        );
        let line = proc.wait_line("viber ready: ", Duration::from_secs(30));
        Gateway::from_ready(proc, &line, dir)
    }

    pub fn from_ready(proc: Proc, line: &str, dir: &Path) -> Gateway {
        let url = line
            .trim_start_matches("viber ready: ")
            .split("/?token=")
            .next()
            .unwrap()
            .to_string();
        let token = line.split("/?token=").nth(1).unwrap().to_string();
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Gateway {
            proc,
            url,
            port,
            token,
            dir: dir.to_path_buf(),
            http: reqwest::Client::new(),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// Every chunk of a task's stream, to its end (a running task's is followed).
    pub async fn chunks(&self, task_id: &str) -> Vec<Value> {
        let body = self
            .get_ok(&format!("/api/tasks/{task_id}/stream"))
            .await
            .text()
            .await
            .unwrap();
        body.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// Waits for a task to end; the task and the text of its stream.
    pub async fn finished(&self, id: &str) -> (Value, String) {
        let ended = |t: &Value| {
            ["completed", "error", "stopped"].contains(&t["state"].as_str().unwrap_or(""))
        };
        wait_until("task to end", Duration::from_secs(30), || async {
            ended(&self.get(&format!("/api/tasks/{id}")).await.1)
        })
        .await;
        let task = self.get(&format!("/api/tasks/{id}")).await.1;
        let text: String = self
            .chunks(id)
            .await
            .into_iter()
            .filter(|c| c["type"] == "text-delta")
            .map(|c| c["delta"].as_str().unwrap_or("").to_string())
            .collect();
        (task, text)
    }

    /// Reads a task's stream with the real `ai` package (tests/js/conformance.mjs: its SSE
    /// parser, chunk schema and ordering rules); its summary of the stream.
    pub fn conformance(&self, task_id: &str) -> Value {
        let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/conformance.mjs");
        let out = std::process::Command::new("node")
            .arg(js)
            .args([
                "stream",
                &format!("{}/api/tasks/{task_id}/stream", self.url),
            ])
            .env("VIBER_TOKEN", &self.token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs `viber ARGS --gateway URL` with the operator token; returns its standard output
    /// once it exits 0.
    #[allow(dead_code)]
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(BIN)
            .args(args)
            .args(["--gateway", &self.url])
            .env("VIBER_TOKEN", &self.token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "viber {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// A GET of `path` with the operator token that must answer 200, its body not read yet:
    /// a server-sent event stream to follow (`bytes_stream()`), or text (`/metrics`).
    pub async fn get_ok(&self, path: &str) -> reqwest::Response {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET request");
        assert_eq!(res.status(), 200, "{path}");
        res
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// Creates an environment from `env`, binds it to `node_id` and starts a thread in it.
    pub async fn env_thread(&self, env: Value, node_id: &Value) -> EnvThread {
        let (env, binding) = self.env_bound(env, node_id).await;
        let env_id = env["id"].as_str().unwrap();
        let (code, t) = self
            .post("/api/threads", json!({ "environmentId": env_id }))
            .await;
        assert_eq!(code, 201, "{t}");
        EnvThread {
            env,
            binding,
            thread: t["id"].as_str().unwrap().to_string(),
        }
    }

    /// Creates an environment from `env` and binds it to `node_id`: the environment's and
    /// the binding's views.
    pub async fn env_bound(&self, env: Value, node_id: &Value) -> (Value, Value) {
        let (code, env) = self.post("/api/environments", env).await;
        assert_eq!(code, 201, "{env}");
        let env_id = env["id"].as_str().unwrap();
        let (code, binding) = self
            .post(
                &format!("/api/environments/{env_id}/bindings"),
                json!({ "nodeId": node_id }),
            )
            .await;
        assert_eq!(code, 201, "{binding}");
        (env, binding)
    }

    /// A fresh enrollment token.
    pub async fn enroll(&self, name: &str) -> String {
        let (status, v) = self
            .post("/api/nodes/enroll", json!({ "name": name }))
            .await;
        assert_eq!(status, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn nodes(&self) -> Vec<Value> {
        let (status, v) = self.get("/api/vibers").await;
        assert_eq!(status, 200, "{v}");
        v["nodes"].as_array().unwrap().clone()
    }

    /// Status ("online"/"offline") of the node named `name`, if listed.
    pub async fn node_status(&self, name: &str) -> Option<String> {
        self.nodes()
            .await
            .into_iter()
            .find(|n| n["name"] == name)
            .map(|n| n["status"].as_str().unwrap().to_string())
    }

    pub async fn wait_node_status(&self, name: &str, status: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.node_status(name).await.as_deref() == Some(status) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "node {name} not {status} within {timeout:?}: {:?}\ngateway log:\n{}",
                    self.nodes().await,
                    self.proc.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts `viber node` against `gateway_url` with its data in `dir`.
pub fn start_node(gateway_url: &str, token: Option<&str>, dir: &Path, name: &str) -> Proc {
    start_node_env(gateway_url, token, dir, name, &[])
}

/// Like [`start_node`], with extra environment variables (e.g. an LLM provider).
pub fn start_node_env(
    gateway_url: &str,
    token: Option<&str>,
    dir: &Path,
    name: &str,
    envs: &[(&str, &str)],
) -> Proc {
    let mut args = vec![
        "node",
        "--gateway",
        gateway_url,
        "--name",
        name,
        "--data-dir",
        dir.to_str().unwrap(),
    ];
    if let Some(t) = token {
        args.push("--token");
        args.push(t);
    }
    Proc::spawn(&args, dir.join("node.log"), envs)
}

pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- raw WebSocket peers ----
//
// A peer speaks through the same codec (`viber::protocol::codec`) and handshake client
// (`viber::node::handshake`) as a node; only what a test must be able to break (a connect
// frame to tamper with, raw text) is exposed separately.

pub type Ws = viber::node::handshake::WsStream;

pub async fn ws_open(url: &str) -> Ws {
    viber::node::handshake::dial(url).await.expect("ws connect")
}

/// What the peer received next.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Got {
    Frame(Frame),
    Close(u16, String),
    Ended,
}

impl Got {
    fn from_codec(e: CodecError) -> Got {
        match e {
            CodecError::Closed(Some(c)) => Got::Close(c.code, c.reason),
            CodecError::Decode(e) => panic!("gateway frame does not decode: {e}"),
            _ => Got::Ended,
        }
    }
}

/// Waits at most 10 s for what comes next.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("no message from gateway within 10 s")
}

pub async fn recv(ws: &mut Ws) -> Got {
    match within(codec::read_frame(ws)).await {
        Ok(frame) => Got::Frame(frame),
        Err(e) => Got::from_codec(e),
    }
}

/// Receives frames until one that is not a ping.
pub async fn recv_no_ping(ws: &mut Ws) -> Got {
    loop {
        match recv(ws).await {
            Got::Frame(Frame::Ping {}) => continue,
            other => return other,
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    codec::write_text(ws, text.to_string())
        .await
        .expect("ws send");
}

pub async fn send_frame(ws: &mut Ws, f: &Frame) {
    codec::write(ws, f).await.expect("ws send");
}

/// Reads the challenge nonce.
pub async fn challenge(ws: &mut Ws) -> String {
    match within(handshake::read_challenge(ws)).await {
        Ok(nonce) => nonce,
        Err(other) => panic!("expected challenge, got {other:?}"),
    }
}

/// How a raw test peer describes itself.
fn test_hello() -> NodeHello {
    NodeHello {
        name: "raw".into(),
        version: "test".into(),
        platform: "test".into(),
        capabilities: vec![],
        hostname: None,
    }
}

/// A correctly signed connect frame for `key` answering `nonce`.
pub fn connect_frame(key: &NodeKey, nonce: &str, token: &str) -> Connect {
    handshake::connect_frame(key, nonce, token, &test_hello())
}

pub fn new_key(dir: &TempDir, name: &str) -> NodeKey {
    NodeKey::load_or_create(&dir.join(name)).unwrap()
}

/// Opens a socket and completes the handshake; returns the socket and what the gateway
/// answered to `connect`.
pub async fn handshake(url: &str, key: &NodeKey, token: &str) -> (Ws, Got) {
    let mut ws = ws_open(url).await;
    let got = match within(handshake::handshake(&mut ws, key, token, &test_hello())).await {
        Ok(hello) => Got::Frame(Frame::HelloOk(hello)),
        Err(HandshakeError::Refused(e)) => Got::Frame(Frame::Error(e)),
        Err(HandshakeError::Unexpected {
            expected: "challenge",
            frame,
        }) => panic!("expected challenge, got {frame:?}"),
        Err(HandshakeError::Unexpected { frame, .. }) => Got::Frame(*frame),
        Err(HandshakeError::Codec(e)) => Got::from_codec(e),
        Err(HandshakeError::Dial(e)) => panic!("ws connect: {e}"),
    };
    (ws, got)
}

/// How many processes have exactly this command line (arguments each ended by a NUL).
pub fn processes_with_cmdline(cmdline: &str) -> usize {
    processes_where(|c| c == cmdline.as_bytes())
}

/// How many processes have `marker` in their command line (arguments joined by spaces).
pub fn processes_containing(marker: &str) -> usize {
    processes_where(|c| {
        String::from_utf8_lossy(c)
            .replace('\0', " ")
            .contains(marker)
    })
}

/// Processes of this machine whose `/proc/PID/cmdline` satisfies `f`. Sandboxed processes
/// have PIDs of their own namespace, so the tests find them by what they run.
fn processes_where(f: impl Fn(&[u8]) -> bool) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| f(&c)))
        .count()
}
