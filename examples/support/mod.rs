//! Shared by the benchmarks: start a release `viber gateway` and enroll a node.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

/// The release binary the benchmarks measure.
pub fn viber_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/viber")
}

pub struct GatewayProc {
    pub child: Child,
    pub url: String,
    pub token: String,
}

/// Starts `viber gateway` on a free port with its data in `dir`; returns once it is ready.
pub fn start_gateway(bin: &Path, dir: &Path) -> GatewayProc {
    let child = Command::new(bin)
        .args(["gateway", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "starting {}: {e} (cargo build --release first)",
                bin.display()
            )
        });
    GatewayProc::from_ready(child)
}

/// The first line a child started with its stdout piped prints, trimmed (a ready line, a
/// port).
pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout piped"))
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

/// A `viber node` process, killed when dropped.
pub struct NodeProc(pub Child);

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `viber node` named `name` against `gw` with its data in `dir`, enrolled with
/// `token` (its log at warn, its stdout dropped).
pub fn start_node(bin: &Path, gw: &GatewayProc, token: &str, dir: &Path, name: &str) -> NodeProc {
    let child = Command::new(bin)
        .args([
            "node",
            "--gateway",
            &gw.url,
            "--name",
            name,
            "--token",
            token,
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting viber node");
    NodeProc(child)
}

impl GatewayProc {
    /// A started `viber gateway` or `viber all-in-one` (stdout piped), once it prints its
    /// ready line.
    pub fn from_ready(mut child: Child) -> GatewayProc {
        let line = first_line(&mut child);
        let line = line.trim_start_matches("viber ready: ");
        let (url, token) = line.split_once("/?token=").expect("ready line");
        GatewayProc {
            child,
            url: url.to_string(),
            token: token.to_string(),
        }
    }

    /// Waits until the gateway's first node is online; returns its id.
    pub async fn wait_online(&self, http: &reqwest::Client) -> String {
        loop {
            let v = self.get(http, "/api/nodes").await;
            if let Some(n) = v["nodes"].as_array().and_then(|a| a.first()) {
                if n["status"] == "online" {
                    return n["id"].as_str().unwrap().to_string();
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `GET path` with the admin token, as JSON.
    pub async fn get(&self, http: &reqwest::Client, path: &str) -> Value {
        http.get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A one-time enrollment token for a node named `name`.
    pub async fn enroll(&self, http: &reqwest::Client, name: &str) -> String {
        let v: Value = http
            .post(format!("{}/api/nodes/enroll", self.url))
            .bearer_auth(&self.token)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["token"].as_str().unwrap().to_string()
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, in seconds (0 when it is gone).
pub fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// utime + stime of the calling thread, in seconds.
#[allow(dead_code)]
pub fn thread_cpu_secs() -> f64 {
    stat_cpu_secs("/proc/thread-self/stat")
}

fn stat_cpu_secs(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`), 0 when absent.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    proc_kb(&format!("/proc/{pid}/status"), field)
}

/// A field in KiB of a `/proc` file of `field: N kB` lines, 0 when absent.
pub fn proc_kb(path: &str, field: &str) -> u64 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// The gateway's REST API with the operator token, for the benchmarks.
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Api {
    /// `POST path` with `body`; the answer, which must be a success.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// `GET path`, as JSON.
    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .unwrap_or(Value::Null)
    }
}

/// A benchmark's command line, read flag by flag: `--help` prints its usage, and a flag it
/// does not know or a value that does not parse ends it with why and the usage (exit 2).
pub struct Flags {
    args: std::vec::IntoIter<String>,
    usage: &'static str,
}

impl Flags {
    pub fn new(usage: &'static str) -> Flags {
        let args: Vec<String> = std::env::args().skip(1).collect();
        Flags {
            args: args.into_iter(),
            usage,
        }
    }

    /// The next flag, or None at the end.
    pub fn next_flag(&mut self) -> Option<String> {
        let flag = self.args.next()?;
        if flag == "--help" || flag == "-h" {
            println!("{}", self.usage);
            std::process::exit(0);
        }
        Some(flag)
    }

    /// The value after `flag`, parsed.
    pub fn value<T: std::str::FromStr>(&mut self, flag: &str) -> T
    where
        T::Err: std::fmt::Display,
    {
        let Some(v) = self.args.next() else {
            self.fail(&format!("{flag} needs a value"));
        };
        v.parse()
            .unwrap_or_else(|e| self.fail(&format!("{flag} {v}: {e}")))
    }

    pub fn unknown(&self, flag: &str) -> ! {
        self.fail(&format!("unknown argument {flag}"))
    }

    pub fn fail(&self, why: &str) -> ! {
        eprintln!("{why}\n{}", self.usage);
        std::process::exit(2);
    }
}
