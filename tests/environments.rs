//! Environments, secrets, bindings and threads: real repositories (file:// and a loopback
//! `git daemon`), real gateway and node processes, real bash.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
const SECRET: &str = "s3cr3t-T0ken-4f9a";

/// A repository with a README on `main` and a `feature` branch.
fn make_repo(root: &Path) -> std::path::PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(repo.join("app")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello from the repo\n").unwrap();
    std::fs::write(repo.join("app/main.sh"), "echo app\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    git(&repo, &["branch", "feature"]);
    repo
}

/// `git daemon` serving `base` on a free loopback port.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = free_port();
        // The real daemon binary: `git daemon` would fork it and leave it behind when killed.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--export-all",
                "--reuseaddr",
                "--informative-errors",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                &base.display().to_string(),
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it accepts connections.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    gw: Gateway,
    _node: Proc,
    node_id: String,
    gdir: TempDir,
    ndir: TempDir,
}

async fn setup() -> Setup {
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("worker").await;
    let node = start_node(&gw.url, Some(&token), ndir.path(), "worker");
    gw.wait_node_status("worker", "online", T).await;
    let node_id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
    Setup {
        gw,
        _node: node,
        node_id,
        gdir,
        ndir,
    }
}

async fn wait_binding(gw: &Gateway, env: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let (code, v) = gw.get(&format!("/api/environments/{env}/bindings")).await;
        assert_eq!(code, 200, "{v}");
        let b = v["bindings"][0].clone();
        if b["status"] == status {
            return b;
        }
        if std::time::Instant::now() > deadline {
            panic!("binding not {status}: {b}\n{}", gw.proc.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn logs(gw: &Gateway, env: &str, binding: &str) -> String {
    let (_, v) = gw
        .get(&format!("/api/environments/{env}/bindings/{binding}/logs"))
        .await;
    v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect()
}

async fn wait_task(gw: &Gateway, id: &str) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let (_, v) = gw.get(&format!("/api/tasks/{id}")).await;
        if ["completed", "error", "stopped"].contains(&v["state"].as_str().unwrap_or("")) {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("task {id} did not end: {v}\n{}", gw.proc.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stream_text(gw: &Gateway, id: &str) -> String {
    reqwest::Client::new()
        .get(format!("{}/api/tasks/{id}/stream", gw.url))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn assert_no_secret_in_files(dir: &Path) {
    for entry in walk(dir) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "secret plaintext found in {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn run_environment_flow(s: &Setup, repo_url: &str, name: &str) {
    let gw = &s.gw;
    let (code, env) = gw
        .post(
            "/api/environments",
            json!({
                "name": name,
                "type": "git",
                "repoUrl": repo_url,
                "repoBranch": "main",
                "setupScript": "echo \"setup ran with $GREETING\" > setup-done.txt\necho \"setup sees token $API_TOKEN\"\necho \"setup-only secret: ${#SETUP_ONLY} chars\"\ncat README.md",
                "vars": {"GREETING": "hello-var"},
                "secrets": {"API_TOKEN": SECRET, "SETUP_ONLY": {"value": "only-for-setup-xyz", "scope": "setup"}},
            }),
        )
        .await;
    assert_eq!(code, 201, "{env}");
    let env_id = env["id"].as_str().unwrap().to_string();
    assert_eq!(env["secrets"]["API_TOKEN"]["value"], "••••••••");
    assert!(env["secrets"]["API_TOKEN"]["updatedAt"].is_string());
    assert_eq!(env["secrets"]["SETUP_ONLY"]["scope"], "setup");
    assert!(!env.to_string().contains(SECRET));

    // Validate: script parses, repository reachable, branch present.
    let (code, v) = gw
        .post(&format!("/api/environments/{env_id}/validate"), json!({}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["ok"], true, "{v}");

    // Bind: preparing -> ready, with the setup log streamed and redacted.
    let (code, b) = gw
        .post(
            &format!("/api/environments/{env_id}/bindings"),
            json!({"nodeId": s.node_id, "strategy": "auto"}),
        )
        .await;
    assert_eq!(code, 201, "{b}");
    let bid = b["id"].as_str().unwrap().to_string();
    let ready = wait_binding(gw, &env_id, "ready").await;
    let workdir = ready["resolvedWorkingDir"].as_str().unwrap().to_string();
    assert!(ready["commit"].as_str().unwrap().len() >= 40);
    assert_eq!(
        std::fs::read_to_string(Path::new(&workdir).join("setup-done.txt")).unwrap(),
        "setup ran with hello-var\n"
    );
    let log = logs(gw, &env_id, &bid).await;
    assert!(log.contains("setup sees token [REDACTED]"), "{log}");
    // The setup phase has the setup-scoped secret (the task below does not).
    assert!(log.contains("setup-only secret: 18 chars"), "{log}");
    assert!(log.contains("hello from the repo"), "{log}");

    // A thread whose message is a shell task using both.
    let (code, t) = gw
        .post(
            "/api/threads",
            json!({"environmentId": env_id, "title": "first"}),
        )
        .await;
    assert_eq!(code, 201, "{t}");
    let tid = t["id"].as_str().unwrap().to_string();
    let (code, m) = gw
        .post(
            &format!("/api/threads/{tid}/messages"),
            json!({"message": "echo \"var=$GREETING\"; echo \"secret=$API_TOKEN\"; echo \"setup-only=${SETUP_ONLY:-absent}\"; cat setup-done.txt"}),
        )
        .await;
    assert_eq!(code, 201, "{m}");
    let task_id = m["taskId"].as_str().unwrap().to_string();
    let done = wait_task(gw, &task_id).await;
    assert_eq!(done["state"], "completed", "{done}");
    let sse = stream_text(gw, &task_id).await;
    assert!(sse.contains("var=hello-var"), "{sse}");
    assert!(sse.contains("secret=[REDACTED]"), "{sse}");
    assert!(sse.contains("setup-only=absent"), "{sse}");
    assert!(!sse.contains(SECRET));
    let (_, history) = gw.get(&format!("/api/threads/{tid}/messages")).await;
    let output = history["messages"][0]["output"].as_str().unwrap();
    assert!(
        output.contains("var=hello-var\nsecret=[REDACTED]\n"),
        "{history}"
    );
    // The board asks for states only; it streams the output itself.
    let (_, lean) = gw
        .get(&format!("/api/threads/{tid}/messages?output=false"))
        .await;
    let m0 = &lean["messages"][0];
    assert!(m0.get("output").is_none(), "{lean}");
    assert_eq!(m0["task"]["state"], "completed");
    assert_eq!(
        m0["task"]["executor"],
        history["messages"][0]["task"]["executor"]
    );
    for path in [
        format!("/api/environments/{env_id}"),
        "/api/environments".to_string(),
        format!("/api/environments/{env_id}/bindings"),
        format!("/api/tasks/{task_id}"),
        format!("/api/threads/{tid}/messages"),
        "/api/tasks".to_string(),
    ] {
        let (_, v) = gw.get(&path).await;
        assert!(!v.to_string().contains(SECRET), "secret in {path}");
    }

    // A second prepare skips setup.
    let (code, _) = gw
        .post(
            &format!("/api/environments/{env_id}/bindings/{bid}/prepare"),
            json!({}),
        )
        .await;
    assert_eq!(code, 202);
    wait_binding(gw, &env_id, "ready").await;
    wait_until("setup skipped in log", T, || async {
        logs(gw, &env_id, &bid).await.contains("setup skipped")
    })
    .await;

    // Changing the script makes the binding stale; the next prepare runs it again.
    let (code, v) = gw
        .request(
            reqwest::Method::PUT,
            &format!("/api/environments/{env_id}"),
            Some(json!({"setupScript": "echo second-setup-run > setup-done.txt"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["bindings"][0]["status"], "stale");
    let (code, _) = gw
        .post(
            &format!("/api/environments/{env_id}/bindings/{bid}/prepare"),
            json!({}),
        )
        .await;
    assert_eq!(code, 202);
    wait_until("setup re-ran", T, || async {
        std::fs::read_to_string(Path::new(&workdir).join("setup-done.txt")).unwrap_or_default()
            == "second-setup-run\n"
    })
    .await;
    wait_binding(gw, &env_id, "ready").await;
}

#[tokio::test]
async fn a_git_environment_prepares_on_a_node_and_runs_a_thread_without_leaking_its_secret() {
    let s = setup().await;
    let root = TempDir::new("repos");
    let repo = make_repo(root.path());
    run_environment_flow(&s, &format!("file://{}", repo.display()), "over-file").await;
    let daemon = GitDaemon::start(root.path());
    run_environment_flow(
        &s,
        &format!("git://127.0.0.1:{}/repo", daemon.port),
        "over-git-daemon",
    )
    .await;

    // The plaintext is in no file of the gateway (database, WAL, logs) or the node.
    assert_no_secret_in_files(s.gdir.path());
    for f in walk(s.ndir.path()) {
        // Only the prepared worktrees may hold what setup wrote; nothing of ours may.
        if f.to_string_lossy().contains("/workspace/")
            && !f.to_string_lossy().contains(".viber-setup")
        {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "secret in {}",
            f.display()
        );
    }
    // The secret key file exists and is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.gdir.join("secret.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn a_repository_update_is_fetched_and_checked_out() {
    let s = setup().await;
    let root = TempDir::new("repos");
    let repo = make_repo(root.path());
    let (code, env) = s
        .gw
        .post(
            "/api/environments",
            json!({"name": "moving", "type": "git", "repoUrl": format!("file://{}", repo.display()), "workingDir": "app"}),
        )
        .await;
    assert_eq!(code, 201, "{env}");
    let env_id = env["id"].as_str().unwrap();
    let (_, b) =
        s.gw.post(
            &format!("/api/environments/{env_id}/bindings"),
            json!({"nodeId": s.node_id}),
        )
        .await;
    let bid = b["id"].as_str().unwrap();
    let first = wait_binding(&s.gw, env_id, "ready").await;
    let workdir = first["resolvedWorkingDir"].as_str().unwrap().to_string();
    assert!(workdir.ends_with("/app"));

    // Upstream moves on: a file changes, one is added, one is deleted.
    std::fs::write(repo.join("app/main.sh"), "echo app v2\n").unwrap();
    std::fs::write(repo.join("app/new.txt"), "new\n").unwrap();
    git(&repo, &["rm", "-q", "README.md"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "second"]);
    let (code, _) =
        s.gw.post(
            &format!("/api/environments/{env_id}/bindings/{bid}/prepare"),
            json!({"force": true}),
        )
        .await;
    assert_eq!(code, 202);
    wait_until("new commit checked out", T, || async {
        std::fs::read_to_string(Path::new(&workdir).join("main.sh")).unwrap_or_default()
            == "echo app v2\n"
    })
    .await;
    let b = wait_binding(&s.gw, env_id, "ready").await;
    assert_ne!(b["commit"], first["commit"]);
    assert!(Path::new(&workdir).join("new.txt").exists());
    assert!(!Path::new(&workdir).join("../README.md").exists());
}

#[tokio::test]
async fn bad_environment_input_is_refused_clearly() {
    let s = setup().await;
    let gw = &s.gw;
    let root = TempDir::new("repos");
    let repo = make_repo(root.path());
    let url = format!("file://{}", repo.display());

    let (code, _) = gw
        .post(
            "/api/environments",
            json!({"name": "dup", "type": "manual"}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, v) = gw
        .post(
            "/api/environments",
            json!({"name": "dup", "type": "manual"}),
        )
        .await;
    assert_eq!(code, 409, "{v}");
    for (body, why) in [
        (json!({"name": "x1", "type": "svn"}), "unknown type"),
        (
            json!({"name": "x2", "type": "github"}),
            "github without a repo",
        ),
        (json!({"name": "x3", "type": "git"}), "git without a url"),
        (
            json!({"name": "x4", "type": "local", "localPath": "/srv/../etc"}),
            "local path with ..",
        ),
        (
            json!({"name": "x5", "type": "local", "localPath": "relative/path"}),
            "relative local path",
        ),
        (
            json!({"name": "x6", "type": "manual", "workingDir": "../outside"}),
            "working dir escaping",
        ),
        (
            json!({"name": "x7", "type": "manual", "vars": {"BAD-NAME": "v"}}),
            "bad var name",
        ),
        (
            json!({"name": "x8", "type": "manual", "colour": "red"}),
            "unknown field",
        ),
        (
            json!({"name": "x9", "type": "manual", "metadata": {"workingMode": "yolo"}}),
            "unknown working mode",
        ),
        (
            json!({"name": "x10", "type": "manual", "metadata": ["a"]}),
            "metadata not an object",
        ),
        // Issue 12, item 9: a secret too short to redact.
        (
            json!({"name": "x14", "type": "manual", "secrets": {"PIN": "123"}}),
            "a three-character secret",
        ),
        // Issue 12, item 16: credentials in a repository URL.
        (
            json!({"name": "x11", "type": "git", "repoUrl": "https://user:ghp_tok123@example.com/r.git"}),
            "user and token in an https URL",
        ),
        (
            json!({"name": "x12", "type": "git", "repoUrl": "https://ghp_tok123@example.com/r.git"}),
            "a token as the user of an https URL",
        ),
        (
            json!({"name": "x13", "type": "github", "repoUrl": "https://x:ghp_tok@github.com/o/r"}),
            "credentials in a github URL",
        ),
    ] {
        let (code, v) = gw.post("/api/environments", body).await;
        assert_eq!(code, 422, "{why}: {v}");
        assert!(
            !v.to_string().contains("ghp_tok"),
            "{why}: the refusal echoes it: {v}"
        );
    }
    let (code, v) = gw
        .post(
            "/api/environments",
            json!({"name": "ssh-user", "type": "git", "repoUrl": "ssh://git@example.com/r.git"}),
        )
        .await;
    assert_eq!(code, 201, "a plain ssh user is not a secret: {v}");
    let (code, v) = gw
        .post("/api/environments", json!({"name": "gh", "type": "github", "repoUrl": "https://github.com/dustland/openviber"}))
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["repoOrg"], "dustland");
    assert_eq!(v["repoName"], "openviber");

    // validate reports the line of a syntax error.
    let (_, env) = gw
        .post("/api/environments", json!({"name": "broken", "type": "git", "repoUrl": url, "setupScript": "echo one\nfi\necho three"}))
        .await;
    let (code, v) = gw
        .post(
            &format!("/api/environments/{}/validate", env["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["ok"], false);
    assert_eq!(v["checks"][0]["line"], 2, "{v}");

    // Unreachable repository and missing branch: prepare fails with that message, quickly.
    for (name, repo_url, branch, expect) in [
        ("gone", "file:///nonexistent/repo".to_string(), None, "not"),
        (
            "nobranch",
            url.clone(),
            Some("no-such-branch"),
            "no-such-branch",
        ),
    ] {
        let mut body = json!({"name": name, "type": "git", "repoUrl": repo_url});
        if let Some(b) = branch {
            body["repoBranch"] = json!(b);
        }
        let (_, env) = gw.post("/api/environments", body).await;
        let id = env["id"].as_str().unwrap();
        let (_, v) = gw
            .post(&format!("/api/environments/{id}/validate"), json!({}))
            .await;
        assert_eq!(v["checks"][1]["ok"], false, "{v}");
        gw.post(
            &format!("/api/environments/{id}/bindings"),
            json!({"nodeId": s.node_id}),
        )
        .await;
        let b = wait_binding(gw, id, "error").await;
        assert_eq!(b["step"], "clone", "{b}");
        assert!(b["lastError"].as_str().unwrap().contains(expect), "{b}");
    }

    // http(s) is a supported transport: a closed port is "not reachable", not "unsupported".
    let (_, env) = gw
        .post("/api/environments", json!({"name": "web", "type": "git", "repoUrl": format!("http://127.0.0.1:{}/r.git", free_port())}))
        .await;
    let (_, v) = gw
        .post(
            &format!("/api/environments/{}/validate", env["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    let msg = v["checks"][1]["message"].as_str().unwrap();
    assert!(
        msg.contains("not reachable") && msg.to_lowercase().contains("connect"),
        "{v}"
    );

    // An existing path that does not exist on the node.
    let (_, env) = gw
        .post(
            "/api/environments",
            json!({"name": "exist", "type": "manual"}),
        )
        .await;
    let id = env["id"].as_str().unwrap();
    let (code, v) = gw
        .post(
            &format!("/api/environments/{id}/bindings"),
            json!({"nodeId": s.node_id, "strategy": "existing-path", "path": "/no/such/dir"}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let b = wait_binding(gw, id, "error").await;
    assert_eq!(b["step"], "resolve");
    assert!(
        b["lastError"].as_str().unwrap().contains("does not exist"),
        "{b}"
    );
    let (code, _) = gw
        .post(
            &format!("/api/environments/{id}/bindings"),
            json!({"nodeId": s.node_id, "strategy": "existing-path", "path": "/tmp/../etc"}),
        )
        .await;
    assert_eq!(code, 422);
    let (code, _) = gw
        .post(
            &format!("/api/environments/{id}/bindings"),
            json!({"nodeId": "node_nope"}),
        )
        .await;
    assert_eq!(code, 422);
    let (code, _) = gw.get("/api/environments/env_nope").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_binding_to_an_offline_node_waits_and_prepares_when_it_comes() {
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("later").await;
    // Enroll the node once so it is known, then stop it.
    let mut node = start_node(&gw.url, Some(&token), ndir.path(), "later");
    gw.wait_node_status("later", "online", T).await;
    let node_id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
    node.kill9();
    gw.wait_node_status("later", "offline", T).await;

    let made = gw
        .env_thread(
            json!({"name": "waits", "type": "manual", "setupScript": "touch prepared"}),
            &json!(node_id),
        )
        .await;
    let env_id = made.env["id"].as_str().unwrap();
    assert_eq!(made.binding["status"], "pending");
    // A thread message waits for it too.
    let (code, m) = gw
        .post(
            &format!("/api/threads/{}/messages", made.thread),
            json!({"message": "ls prepared"}),
        )
        .await;
    assert_eq!(code, 201, "{m}");
    let task_id = m["taskId"].as_str().unwrap().to_string();

    let _node = start_node(&gw.url, None, ndir.path(), "later");
    wait_binding(&gw, env_id, "ready").await;
    let done = wait_task(&gw, &task_id).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert!(stream_text(&gw, &task_id).await.contains("prepared"));

    // Deleting an environment with a running thread is refused.
    let (_, m) = gw
        .post(
            &format!("/api/threads/{}/messages", made.thread),
            json!({"message": "sleep 30"}),
        )
        .await;
    let running = m["taskId"].as_str().unwrap().to_string();
    wait_until("task running", T, || async {
        gw.get(&format!("/api/tasks/{running}")).await.1["state"] == "running"
    })
    .await;
    let (code, v) = gw.delete(&format!("/api/environments/{env_id}")).await;
    assert_eq!(code, 409, "{v}");
    gw.post(&format!("/api/tasks/{running}/stop"), json!({}))
        .await;
    wait_task(&gw, &running).await;
    let (code, _) = gw.delete(&format!("/api/environments/{env_id}")).await;
    assert_eq!(code, 204);
}

#[tokio::test]
async fn node_config_pull_and_push() {
    let s = setup().await;
    let gw = &s.gw;
    let (_, env) = gw
        .post("/api/environments", json!({"name": "cfg", "type": "manual", "setupScript": "if then", "secrets": {"K": "some-value"}}))
        .await;
    gw.post(
        &format!("/api/environments/{}/bindings", env["id"].as_str().unwrap()),
        json!({"nodeId": s.node_id}),
    )
    .await;
    // The config endpoint takes the node's own token, not an operator token.
    let url = format!("{}/api/vibers/{}/config", gw.url, s.node_id);
    let res = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let creds: Value =
        serde_json::from_slice(&std::fs::read(s.ndir.join("node.json")).unwrap()).unwrap();
    let res = reqwest::Client::new()
        .get(&url)
        .bearer_auth(creds["nodeToken"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let config: Value = res.json().await.unwrap();
    assert_eq!(config["bindings"].as_array().unwrap().len(), 1);
    assert!(config["version"].as_str().unwrap().len() >= 8);
    assert!(!config.to_string().contains("some-value"));

    let (code, _) = gw
        .post(&format!("/api/vibers/{}/config-push", s.node_id), json!({}))
        .await;
    assert_eq!(code, 202);
    let conn = s.gdir.path().to_path_buf();
    wait_until("config ack stored", T, || {
        let conn = conn.clone();
        async move {
            let db = rusqlite::Connection::open(conn.join("viber.db")).unwrap();
            let state: Option<String> = db
                .query_row("SELECT config_state FROM nodes", [], |r| r.get(0))
                .unwrap_or(None);
            state.is_some_and(|s| s.contains("setup_script"))
        }
    })
    .await;
    let (_, node) = gw.get(&format!("/api/nodes/{}", s.node_id)).await;
    let validations = node["config"]["validations"].as_array().unwrap();
    let setup = validations
        .iter()
        .find(|v| v["category"] == "setup_script")
        .unwrap();
    assert_eq!(setup["status"], "failed", "{node}");
    assert_eq!(node["config"]["configVersion"], config["version"]);
}

#[tokio::test]
async fn the_cli_drives_environments_and_threads() {
    let s = setup().await;
    let gdir = s.gdir.path().to_str().unwrap().to_string();
    let cli = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .args(args)
            .env("VIBER_GATEWAY", &s.gw.url)
            .env("VIBER_HOME", &gdir)
            .env_remove("VIBER_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = cli(
        &[
            "env",
            "create",
            "cli env",
            "--type",
            "manual",
            "--setup",
            "echo setting up with $TOKEN",
            "--var",
            "GREETING=hi",
            "--working-mode",
            "agent-decides",
            "--network",
            "allowlist",
            "--allow-host",
            "*.Example.com",
            "--allow-host",
            "pypi.org:443",
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    let (_, v) = s.gw.get("/api/environments/cli%20env").await;
    assert_eq!(v["networkAccess"], "allowlist", "{v}");
    assert_eq!(
        v["networkAllowlist"],
        json!(["*.example.com", "pypi.org:443"])
    );
    // Metadata merges key by key; null removes one.
    let (code, v) =
        s.gw.request(
            reqwest::Method::PUT,
            "/api/environments/cli%20env",
            Some(json!({"metadata": {"team": "web"}})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["metadata"],
        json!({"workingMode": "agent-decides", "team": "web"})
    );
    let (_, v) =
        s.gw.request(
            reqwest::Method::PUT,
            "/api/environments/cli%20env",
            Some(json!({"metadata": {"team": null}})),
        )
        .await;
    assert_eq!(v["metadata"], json!({"workingMode": "agent-decides"}));
    let (code, out) = cli(
        &["env", "secret", "set", "cli env", "TOKEN"],
        Some("cli-secret-value-123\n"),
    );
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cli(&["env", "show", "cli env"], None);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("TOKEN") && !out.contains("cli-secret-value-123"),
        "{out}"
    );
    let (code, out) = cli(&["env", "validate", "cli env"], None);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cli(&["env", "bind", "cli env", &s.node_id], None);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("setting up with [REDACTED]") && out.contains("ready:"),
        "{out}"
    );
    // The node checks its config (now with this environment's setup script) on request.
    let (code, out) = cli(&["node", "check-config", &s.node_id], None);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("setup_script") && out.contains("verified"),
        "{out}"
    );
    let (code, out) = cli(&["env", "list"], None);
    assert!(
        out.contains("cli env") && out.contains(":ready"),
        "{code:?} {out}"
    );

    let (code, out) = cli(
        &[
            "thread",
            "new",
            "cli env",
            "--title",
            "from cli",
            "--",
            "echo $GREETING $TOKEN",
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("hi [REDACTED]"), "{out}");
    let (_, out) = cli(&["thread", "list"], None);
    assert!(out.contains("from cli"), "{out}");
    let id = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (code, out) = cli(&["thread", "send", &id, "--", "exit 5"], None);
    assert_eq!(code, Some(5), "{out}");
    let (_, out) = cli(&["thread", "show", &id], None);
    assert!(
        out.contains("> echo $GREETING $TOKEN") && out.contains("hi [REDACTED]"),
        "{out}"
    );
    let (code, out) = cli(&["env", "rm", "cli env"], None);
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test]
async fn a_node_cannot_report_on_bindings_it_does_not_own() {
    let s = setup().await;
    let gw = &s.gw;
    let (_, env) = gw
        .post(
            "/api/environments",
            json!({"name": "owned", "type": "manual"}),
        )
        .await;
    let env_id = env["id"].as_str().unwrap();
    let (_, b) = gw
        .post(
            &format!("/api/environments/{env_id}/bindings"),
            json!({"nodeId": s.node_id}),
        )
        .await;
    let bid = b["id"].as_str().unwrap().to_string();
    wait_binding(gw, env_id, "ready").await;

    let kdir = TempDir::new("keys");
    let key = new_key(&kdir, "intruder");
    let token = gw.enroll("intruder").await;
    let (mut ws, got) = handshake(&gw.ws_url(), &key, &token).await;
    assert!(matches!(
        got,
        Got::Frame(viber::protocol::Frame::HelloOk(_))
    ));
    let state = |id: &str| viber::protocol::BindingState {
        binding_id: id.into(),
        status: viber::protocol::BindingStatus::Error,
        step: Some("setup".into()),
        message: Some("forged".into()),
        working_dir: None,
        commit: None,
        version: 1,
        setup_skipped: false,
    };
    send_frame(
        &mut ws,
        &viber::protocol::Frame::EnvironmentStatus(state(&bid)),
    )
    .await;
    match recv_no_ping(&mut ws).await {
        Got::Frame(viber::protocol::Frame::Error(e)) => {
            assert_eq!(e.code, viber::protocol::ErrorCode::NotOwner)
        }
        other => panic!("{other:?}"),
    }
    // A sync with unknown and foreign bindings is applied where it can be, and nothing else.
    send_frame(
        &mut ws,
        &viber::protocol::Frame::EnvironmentSync {
            bindings: vec![state("bind_nope"), state(&bid)],
        },
    )
    .await;
    send_frame(&mut ws, &viber::protocol::Frame::Ping {}).await;
    assert!(matches!(
        recv_no_ping(&mut ws).await,
        Got::Frame(viber::protocol::Frame::Pong {})
    ));
    let (_, v) = gw
        .get(&format!("/api/environments/{env_id}/bindings"))
        .await;
    assert_eq!(v["bindings"][0]["status"], "ready", "{v}");
}

/// The gateway never runs a setup script or opens a repository itself: validation is asked of
/// a node, which answers for its own request only.
#[tokio::test]
async fn validation_is_answered_by_a_node() {
    use viber::protocol::{Frame, ValidationCheck, ValidationReport};
    let dir = TempDir::new("validate-node");
    let gw = Gateway::start(dir.path(), 0, &[]);
    let (_, env) = gw
        .post(
            "/api/environments",
            json!({"name": "v", "type": "manual", "setupScript": "echo ok"}),
        )
        .await;
    let path = format!("/api/environments/{}/validate", env["id"].as_str().unwrap());

    // No node online: a clear 503, not a check run on the gateway's host.
    let (code, v) = gw.post(&path, json!({})).await;
    assert_eq!(code, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no online node"),
        "{v}"
    );

    // A node (here a raw one) gets `environment:validate` and its answer is the response.
    let key = new_key(&dir, "raw-key");
    let token = gw.enroll("raw").await;
    let (mut ws, got) = handshake(&gw.ws_url(), &key, &token).await;
    assert!(matches!(got, Got::Frame(Frame::HelloOk(_))), "{got:?}");
    let asked = {
        let (url, token, path) = (gw.url.clone(), gw.token.clone(), path.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}{path}"))
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let req = loop {
        match recv_no_ping(&mut ws).await {
            Got::Frame(Frame::EnvironmentValidate(req)) => break req,
            Got::Frame(_) => continue,
            other => panic!("expected environment:validate, got {other:?}"),
        }
    };
    assert_eq!(req.setup_script, "echo ok");
    assert_eq!(
        req.repo_url, None,
        "a manual environment has no repository to check"
    );
    let check = ValidationCheck {
        name: "setupScript".into(),
        ok: false,
        message: "line 1: from the node".into(),
        line: Some(1),
    };
    // An answer to a request nobody made is refused; the real one goes through.
    send_frame(
        &mut ws,
        &Frame::EnvironmentValidated(ValidationReport {
            request_id: "val_forged".into(),
            checks: vec![check.clone()],
        }),
    )
    .await;
    match recv_no_ping(&mut ws).await {
        Got::Frame(Frame::Error(e)) => assert!(e.message.contains("val_forged"), "{e:?}"),
        other => panic!("expected an error frame, got {other:?}"),
    }
    send_frame(
        &mut ws,
        &Frame::EnvironmentValidated(ValidationReport {
            request_id: req.request_id,
            checks: vec![check],
        }),
    )
    .await;
    let v = asked.await.unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["checks"][0]["message"], "line 1: from the node", "{v}");
    assert_eq!(v["checks"][0]["line"], 1, "{v}");
}

/// Issue 11, defect 6: a node that shuts down stops the setup script it is running (its
/// whole process group), as `task stop` does, instead of leaving it behind.
#[tokio::test]
async fn a_node_shutting_down_stops_its_setup_script() {
    let mut s = setup().await;
    // A local environment, so the test sees the marker the script leaves in its working
    // dir (the sandbox gives the script a private /tmp). The sleep's argument names it among
    // the host's processes (its PID inside the sandbox means nothing outside).
    let work = TempDir::new("setup-work");
    let marker = work.join("started");
    let script = "sleep 300.4242 &\ntouch started\nwait";
    let (code, env) =
        s.gw.post(
            "/api/environments",
            json!({"name": "slow-setup", "type": "local", "localPath": work.path(),
                   "setupScript": script}),
        )
        .await;
    assert_eq!(code, 201, "{env}");
    let env_id = env["id"].as_str().unwrap();
    let (code, b) =
        s.gw.post(
            &format!("/api/environments/{env_id}/bindings"),
            json!({"nodeId": s.node_id}),
        )
        .await;
    assert_eq!(code, 201, "{b}");
    wait_until("setup script running", T, || async { marker.exists() }).await;
    let alive = || processes_with_cmdline("sleep\x00300.4242\x00") > 0;
    assert!(alive());

    let status = s._node.terminate();
    assert!(status.success(), "node exit: {status:?}");
    wait_until("setup's child gone", T, || async { !alive() }).await;
}

/// Issue 12, item 3: a working dir that is a symlink out of the environment's directory (as a
/// repository or setup script can make) fails the prepare clearly instead of moving the
/// agent's confinement root, here to `/`.
#[tokio::test]
async fn a_working_dir_that_links_out_of_the_environment_fails_prepare() {
    let s = setup().await;
    let project = TempDir::new("project");
    std::os::unix::fs::symlink("/", project.join("app")).unwrap();
    let (code, env) =
        s.gw.post(
            "/api/environments",
            json!({"name": "escapes", "type": "local", "localPath": project.path(),
                   "workingDir": "app"}),
        )
        .await;
    assert_eq!(code, 201, "{env}");
    let env_id = env["id"].as_str().unwrap();
    let (code, b) =
        s.gw.post(
            &format!("/api/environments/{env_id}/bindings"),
            json!({"nodeId": s.node_id}),
        )
        .await;
    assert_eq!(code, 201, "{b}");
    let b = wait_binding(&s.gw, env_id, "error").await;
    assert_eq!(b["step"], "workdir", "{b}");
    assert!(b["lastError"].as_str().unwrap().contains("outside"), "{b}");
}

/// A node killed in the middle of a prepare and started again prepares the binding again,
/// instead of leaving it `preparing` for ever.
#[tokio::test]
async fn a_prepare_lost_with_a_node_restart_runs_again() {
    let mut s = setup().await;
    let work = TempDir::new("mark");
    let mark = work.join("first-run");
    // The first run hangs (the node is killed during it); the second one passes. A local
    // environment, so the marker in the script's working dir is the test's to see.
    let script = "if [ ! -e first-run ]; then touch first-run; sleep 60; fi\necho prepared";
    let (_, env) =
        s.gw.post(
            "/api/environments",
            json!({"name": "restarts", "type": "local", "localPath": work.path(),
                   "setupScript": script}),
        )
        .await;
    let env_id = env["id"].as_str().unwrap();
    s.gw.post(
        &format!("/api/environments/{env_id}/bindings"),
        json!({"nodeId": s.node_id}),
    )
    .await;
    wait_until("setup running", T, || async { mark.exists() }).await;
    s._node.kill9();
    s._node = start_node(&s.gw.url, None, s.ndir.path(), "worker");
    let b = wait_binding(&s.gw, env_id, "ready").await;
    let binding = b["id"].as_str().unwrap();
    assert!(logs(&s.gw, env_id, binding).await.contains("prepared"));
}

/// Shared credentials (`viber config set`): every environment runs with them unless it sets
/// the same name itself; secrets stay masked and out of the CLI's argv.
#[tokio::test]
async fn shared_credentials_reach_environments_that_do_not_override_them() {
    let s = setup().await;
    let gw = &s.gw;
    // A secret from stdin through the CLI; a variable and a secret file over the API.
    let mut cli = Command::new(BIN)
        .args(["config", "set", "env.SHARED_TOKEN", "--gateway", &gw.url])
        .env("VIBER_TOKEN", &gw.token)
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(format!("{SECRET}\n").as_bytes());
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    cli = Command::new(BIN)
        .args([
            "config",
            "set",
            "env.X",
            "on-argv-1234",
            "--gateway",
            &gw.url,
        ])
        .env("VIBER_TOKEN", &gw.token)
        .output()
        .unwrap();
    assert!(!cli.status.success(), "a secret on argv was taken");
    let (code, v) = gw
        .request(
            reqwest::Method::PUT,
            "/api/config/var.GREETING",
            Some(json!({"value": "hello-shared"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = gw
        .request(
            reqwest::Method::PUT,
            "/api/config/file..config%2Ftool%2Ftoken",
            Some(json!({"value": "file-secret-value\n"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["vars"]["GREETING"], "hello-shared");
    assert_eq!(
        v["secrets"]["FILE__CONFIG_TOOL_TOKEN"]["file"],
        ".config/tool/token"
    );
    assert!(v["secrets"]["SHARED_TOKEN"]["value"].is_string(), "{v}");
    for (key, code) in [("var.1X", 422), ("file./etc/passwd", 422), ("nope", 422)] {
        let (got, v) = gw
            .request(
                reqwest::Method::PUT,
                &format!("/api/config/{}", key.replace('/', "%2F")),
                Some(json!({"value": "some-value"})),
            )
            .await;
        assert_eq!(got, code, "{key}: {v}");
    }
    // Two keys that make one name: the second is refused, not swapped in.
    let (code, v) = gw
        .request(
            reqwest::Method::PUT,
            "/api/config/env.FILE__CONFIG_TOOL_TOKEN",
            Some(json!({"value": "another-value-1234"})),
        )
        .await;
    assert_eq!(code, 409, "{v}");
    let (code, _) = gw
        .request(
            reqwest::Method::PUT,
            "/api/config/env.SHORT",
            Some(json!({"value": "ab"})),
        )
        .await;
    assert_eq!(code, 422, "a secret too short to redact");
    let listed = gw.cli(&["config", "list"]);
    assert!(
        listed.contains("var.GREETING")
            && listed.contains("hello-shared")
            && listed.contains("env.SHARED_TOKEN")
            && listed.contains("file..config/tool/token"),
        "{listed}"
    );
    assert!(
        !listed.contains(SECRET) && !listed.contains("file-secret-value"),
        "{listed}"
    );

    // One environment inherits them; another sets its own of the same names.
    let probe = r#"echo "len=${#SHARED_TOKEN} greeting=$GREETING""#;
    let mut seen = Vec::new();
    for (name, own) in [
        ("inherits", json!({})),
        (
            "overrides",
            json!({"vars": {"GREETING": "own"}, "secrets": {"SHARED_TOKEN": "own-token-value-123456"}}),
        ),
    ] {
        let mut env = json!({"name": name, "type": "manual"});
        env.as_object_mut()
            .unwrap()
            .extend(own.as_object().unwrap().clone());
        let et = gw.env_thread(env, &json!(s.node_id)).await;
        let (code, task) = gw
            .post(
                &format!("/api/threads/{}/messages", et.thread),
                json!({"message": probe, "executor": "shell"}),
            )
            .await;
        assert_eq!(code, 201, "{task}");
        let id = task["id"].as_str().unwrap();
        assert_eq!(wait_task(gw, id).await["state"], "completed");
        seen.push(stream_text(gw, id).await);
    }
    assert!(
        seen[0].contains(&format!("len={} greeting=hello-shared", SECRET.len())),
        "{}",
        seen[0]
    );
    assert!(seen[1].contains("len=22 greeting=own"), "{}", seen[1]);

    // Removed: gone for everyone; removing again is a 404.
    gw.cli(&["config", "rm", "var.GREETING"]);
    let (code, _) = gw.delete("/api/config/var.GREETING").await;
    assert_eq!(code, 404);
    let (_, v) = gw.get("/api/config").await;
    assert!(v["vars"].as_object().unwrap().is_empty(), "{v}");
    assert_no_secret_in_files(s.gdir.path());
}

/// `Command::output` with bytes written to the child's stdin.
trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output;
}

impl OutputWithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}
