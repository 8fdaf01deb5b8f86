//! How long a thread's worktree takes to become ready: the time from a thread's first
//! message (a shell task that runs `true`) to its completion, for a repository of FILES
//! files, in a git environment with worktrees (a new worktree per thread: `git worktree add`,
//! then the setup script when there is one), beside the same message in the same
//! environment with `metadata.worktrees: false` (the shared checkout: the floor, everything
//! but the worktree).
//!
//! ```sh
//! cargo build --release --bins --example worktree_bench
//! ./target/release/examples/worktree_bench [FILES] [THREADS]    # 3000 files, 10 threads
//! ```
//! The setup script reads every tracked file (`git ls-files -z | xargs -0 cat`), so "with
//! setup" includes a pass over the whole tree. It starts a release `viber gateway` and
//! `viber node` (bubblewrap sandbox) on this machine.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "b")
        .env("GIT_AUTHOR_EMAIL", "b@example.com")
        .env("GIT_COMMITTER_NAME", "b")
        .env("GIT_COMMITTER_EMAIL", "b@example.com")
        .stdout(Stdio::null())
        .status()
        .expect("git")
        .success();
    assert!(ok, "git {args:?}");
}

/// A repository of `files` small source files in 30 directories, one commit on `main`.
fn make_repo(dir: &Path, files: usize) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    for i in 0..files {
        let sub = dir.join(format!("src/mod{}", i % 30));
        std::fs::create_dir_all(&sub).unwrap();
        let body: String = (0..40)
            .map(|l| format!("pub fn f{i}_{l}() -> usize {{ {l} * {i} }}\n"))
            .collect();
        std::fs::write(sub.join(format!("file{i}.rs")), body).unwrap();
    }
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "many files"]);
}

/// A benchmark's calls on the API.
trait Bench {
    async fn first_message(&self, env: &str) -> Duration;
    async fn environment(
        &self,
        name: &str,
        repo: &Path,
        node: &str,
        setup: &str,
        worktrees: bool,
    ) -> String;
}

impl Bench for support::Api {
    /// One thread's first message, to its task's end; the time it took.
    async fn first_message(&self, env: &str) -> Duration {
        let t = self
            .post("/api/threads", json!({ "environmentId": env }))
            .await;
        let thread = t["id"].as_str().unwrap();
        let start = Instant::now();
        let v = self
            .post(
                &format!("/api/threads/{thread}/messages"),
                json!({"message": "true", "executor": "shell"}),
            )
            .await;
        let task = v["taskId"].as_str().unwrap();
        loop {
            let t = self.get(&format!("/api/tasks/{task}")).await;
            match t["state"].as_str() {
                Some("completed") => return start.elapsed(),
                Some("error") | Some("stopped") => panic!("task failed: {t}"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// A git environment bound to `node` and prepared (its first thread waits for that,
    /// and is not measured).
    async fn environment(
        &self,
        name: &str,
        repo: &Path,
        node: &str,
        setup: &str,
        worktrees: bool,
    ) -> String {
        let env = self
            .post(
                "/api/environments",
                json!({
                    "name": name,
                    "type": "git",
                    "repoUrl": format!("file://{}", repo.display()),
                    "repoBranch": "main",
                    "setupScript": setup,
                    "metadata": {"worktrees": worktrees, "terminalMode": "off"},
                }),
            )
            .await;
        let id = env["id"].as_str().unwrap().to_string();
        self.post(
            &format!("/api/environments/{id}/bindings"),
            json!({ "nodeId": node }),
        )
        .await;
        self.first_message(&id).await;
        id
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, mut v: Vec<Duration>) -> f64 {
    v.sort();
    let p50 = millis(v[v.len() / 2]);
    println!(
        "{name:<40} p50 {p50:>8.1} ms   min {:>8.1} ms   max {:>8.1} ms",
        millis(v[0]),
        millis(v[v.len() - 1])
    );
    p50
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    viber::tls::init();
    let mut args = std::env::args().skip(1);
    let files: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3000);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let root = std::env::temp_dir().join(format!("viber-wt-bench-{}", std::process::id()));
    let (gdir, ndir, repo) = (root.join("gw"), root.join("node"), root.join("repo"));
    make_repo(&repo, files);
    let bin = support::viber_bin();
    let gw = support::start_gateway(&bin, &gdir);
    let http = reqwest::Client::new();
    let token = gw.enroll(&http, "bench").await;
    let node = support::start_node(&bin, &gw, &token, &ndir, "bench");
    let node_id = gw.wait_online(&http).await;
    let api = support::Api {
        http,
        url: gw.url.clone(),
        token: gw.token.clone(),
    };
    let read_all = "git ls-files -z | xargs -0 cat > /dev/null";
    println!("repository: {files} files; {threads} threads each (first message: `true`)");
    let cases = [
        ("shared checkout (floor)", "", false),
        ("worktree, no setup", "", true),
        ("shared checkout, setup (skipped)", read_all, false),
        ("worktree + setup reading every file", read_all, true),
    ];
    let mut results = Vec::new();
    for (i, (name, setup, worktrees)) in cases.iter().enumerate() {
        let env = api
            .environment(&format!("bench{i}"), &repo, &node_id, setup, *worktrees)
            .await;
        let mut times = Vec::new();
        for _ in 0..threads {
            times.push(api.first_message(&env).await);
        }
        results.push(summary(name, times));
    }
    println!(
        "worktree overhead at p50: {:.1} ms without setup, {:.1} ms with",
        results[1] - results[0],
        results[3] - results[2]
    );
    drop(node);
    drop(gw);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
