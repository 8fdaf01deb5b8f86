//! A git worktree per thread: two threads of one environment at once, the diff against
//! `git diff`, the CLI's patch applied elsewhere, commit and push to a bare repository and
//! to an https remote with a token, a pull request against a scripted GitHub API, a sync
//! that conflicts, and cleanup on archive. Real gateway and node processes, real git.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::fake_github::FakeGitHub;
use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const TOKEN: &str = "ghp_s3cretT0ken9a8b7c6d";

/// A bare repository `origin.git` under `root` with one commit on `main`, and a clone of it
/// to push more commits from.
fn make_origin(root: &Path) -> (PathBuf, PathBuf) {
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("same.txt"), "original\n").unwrap();
    std::fs::write(seed.join("edit.txt"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(
        seed.join("old-name.txt"),
        "a file that is renamed\nwith several lines\nso the rename is found\n",
    )
    .unwrap();
    std::fs::write(seed.join("gone.txt"), "deleted by the thread\n").unwrap();
    std::fs::write(seed.join(".gitignore"), ".setup-ran\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "first"]);
    let origin = root.join("origin.git");
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            seed.to_str().unwrap(),
            origin.to_str().unwrap(),
        ],
    );
    git(
        &seed,
        &["remote", "add", "origin", origin.to_str().unwrap()],
    );
    (origin, seed)
}

struct Setup {
    gw: Gateway,
    node: Proc,
    node_id: String,
    ndir: TempDir,
    _gdir: TempDir,
}

async fn setup(node_env: &[(&str, &str)]) -> Setup {
    let gdir = TempDir::new("wt-gw");
    let ndir = TempDir::new("wt-node");
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("worker").await;
    let node = start_node_env(&gw.url, Some(&token), ndir.path(), "worker", node_env);
    gw.wait_node_status("worker", "online", T).await;
    let node_id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
    Setup {
        gw,
        node,
        node_id,
        ndir,
        _gdir: gdir,
    }
}

/// Creates the environment `body` and binds it to the node; its id.
async fn bound_env(s: &Setup, body: serde_json::Value) -> String {
    let (code, env) = s.gw.post("/api/environments", body).await;
    assert_eq!(code, 201, "{env}");
    let env_id = env["id"].as_str().unwrap().to_string();
    let (code, b) =
        s.gw.post(
            &format!("/api/environments/{env_id}/bindings"),
            json!({"nodeId": s.node_id}),
        )
        .await;
    assert_eq!(code, 201, "{b}");
    env_id
}

/// Sends a shell message to a thread; the task's id.
async fn send(gw: &Gateway, thread: &str, script: &str) -> String {
    let (code, v) = gw
        .post(
            &format!("/api/threads/{thread}/messages"),
            json!({"message": script, "executor": "shell"}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    v["taskId"].as_str().unwrap().to_string()
}

async fn completed(s: &Setup, task: &str) {
    let gw = &s.gw;
    let deadline = std::time::Instant::now() + T;
    loop {
        let t = gw.get(&format!("/api/tasks/{task}")).await.1;
        match t["state"].as_str() {
            Some("completed") => return,
            Some("error" | "stopped") => panic!("{t}\n{}", gw.proc.logs()),
            _ if std::time::Instant::now() > deadline => panic!(
                "task {task} did not end: {t}\ngateway:\n{}\nnode:\n{}",
                gw.proc.logs(),
                s.node.logs()
            ),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn new_thread(gw: &Gateway, env: &str) -> String {
    let (code, t) = gw
        .post("/api/threads", json!({ "environmentId": env }))
        .await;
    assert_eq!(code, 201, "{t}");
    t["id"].as_str().unwrap().to_string()
}

fn cli(gw: &Gateway, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args(["--gateway", &gw.url, "--token", &gw.token])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_work_apart_and_their_work_is_diffed_committed_pushed_and_synced() {
    let root = TempDir::new("wt-repos");
    let (origin, seed) = make_origin(root.path());
    let s = setup(&[]).await;
    let gw = &s.gw;
    let env_id = bound_env(
        &s,
        json!({
            "name": "wt",
            "type": "git",
            "repoUrl": format!("file://{}", origin.display()),
            "repoBranch": "main",
            "setupScript": "echo ran >> .setup-ran",
            "vars": {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com"},
        }),
    )
    .await;

    // Two threads at once, each writing same.txt its own way.
    let (a, b) = (new_thread(gw, &env_id).await, new_thread(gw, &env_id).await);
    let ta = send(gw, &a, "echo from-a > same.txt; git status --short; pwd").await;
    let tb = send(gw, &b, "echo from-b > same.txt").await;
    completed(&s, &ta).await;
    completed(&s, &tb).await;
    let wt_of = |t: &str| s.ndir.path().join("workspace/.worktrees").join(t);
    assert_eq!(
        std::fs::read_to_string(wt_of(&a).join("same.txt")).unwrap(),
        "from-a\n"
    );
    assert_eq!(
        std::fs::read_to_string(wt_of(&b).join("same.txt")).unwrap(),
        "from-b\n"
    );
    // The setup script ran in each new worktree (its output is ignored by .gitignore).
    assert_eq!(
        std::fs::read_to_string(wt_of(&a).join(".setup-ran")).unwrap(),
        "ran\n"
    );
    // git works inside the sandbox, in the worktree.
    let (_, text) = gw.finished(&ta).await;
    assert!(text.contains(" M same.txt"), "{text}");
    assert!(text.contains(&wt_of(&a).display().to_string()), "{text}");

    let (_, view) = gw.get(&format!("/api/threads/{a}")).await;
    let branch = view["worktree"]["branch"].as_str().unwrap().to_string();
    assert!(branch.starts_with("viber/echo-from-a"), "{view}");
    let base = view["worktree"]["base"].as_str().unwrap().to_string();
    for (t, line) in [(&a, "+from-a"), (&b, "+from-b")] {
        let (code, d) = gw.get(&format!("/api/threads/{t}/diff")).await;
        assert_eq!(code, 200, "{d}");
        let files = d["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{d}");
        assert_eq!(files[0]["path"], "same.txt");
        assert_eq!(files[0]["status"], "modified");
        assert!(files[0]["patch"].as_str().unwrap().contains(line), "{d}");
        assert_eq!(d["base"], base);
    }

    // Thread A renames, deletes, adds a binary file and edits one.
    let t = send(
        gw,
        &a,
        "mv old-name.txt new-name.txt; rm gone.txt; printf 'b\\000\\001\\002in' > blob.bin; sed -i 's/two/TWO/' edit.txt",
    )
    .await;
    completed(&s, &t).await;
    let (_, d) = gw.get(&format!("/api/threads/{a}/diff")).await;
    let mut got: Vec<(String, String, u64, u64, bool)> = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["status"].as_str().unwrap().to_string(),
                f["additions"].as_u64().unwrap(),
                f["deletions"].as_u64().unwrap(),
                f["binary"].as_bool().unwrap(),
            )
        })
        .collect();
    got.sort();
    let renamed = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["status"] == "renamed")
        .unwrap_or_else(|| panic!("no rename in {d}"));
    assert_eq!(renamed["oldPath"], "old-name.txt");

    // The CLI's patch applies to a fresh clone at the base and gives the same tree.
    let out = cli(gw, &["thread", "diff", &a, "--patch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patch = root.path().join("a.patch");
    std::fs::write(&patch, &out.stdout).unwrap();
    let fresh = root.path().join("fresh");
    git(
        root.path(),
        &[
            "clone",
            "-q",
            origin.to_str().unwrap(),
            fresh.to_str().unwrap(),
        ],
    );
    git(&fresh, &["checkout", "-q", &base]);
    git(&fresh, &["apply", "--index", patch.to_str().unwrap()]);
    for f in ["same.txt", "new-name.txt", "blob.bin", "edit.txt"] {
        assert_eq!(
            std::fs::read(fresh.join(f)).unwrap(),
            std::fs::read(wt_of(&a).join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!fresh.join("gone.txt").exists() && !fresh.join("old-name.txt").exists());
    let stat = cli(gw, &["thread", "diff", &a, "--stat"]);
    let stat = String::from_utf8_lossy(&stat.stdout).to_string();
    assert!(
        stat.contains("old-name.txt -> new-name.txt") && stat.contains("5 files"),
        "{stat}"
    );

    // Commit: then the diff is what `git diff base` says of the branch.
    let (code, c) = gw
        .post(
            &format!("/api/threads/{a}/commit"),
            json!({"message": "thread a's work"}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    let head = c["head"].as_str().unwrap().to_string();
    let author = git(&wt_of(&a), &["log", "-1", "--format=%an <%ae>|%s"]);
    assert_eq!(author.trim(), "Ada <ada@example.com>|thread a's work");
    let (code, again) = gw
        .post(&format!("/api/threads/{a}/commit"), json!({}))
        .await;
    assert_eq!(code, 409, "{again}");
    let numstat = git(&wt_of(&a), &["diff", "-M", "--numstat", &base, "HEAD"]);
    let mut want: Vec<(String, u64, u64, bool)> = numstat
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, '\t').collect();
            let path = match f[2].split_once(" => ") {
                Some((_, new)) => new.trim_end_matches('}').to_string(),
                None => f[2].to_string(),
            };
            let bin = f[0] == "-";
            (
                path,
                f[0].parse().unwrap_or(0),
                f[1].parse().unwrap_or(0),
                bin,
            )
        })
        .collect();
    want.sort();
    let got: Vec<(String, u64, u64, bool)> = got
        .into_iter()
        .map(|(p, _, a, d, b)| (p, a, d, b))
        .collect();
    assert_eq!(got, want);

    // Push to the bare repository.
    let (code, p) = gw.post(&format!("/api/threads/{a}/push"), json!({})).await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(
        git(&origin, &["rev-parse", &format!("refs/heads/{branch}")]).trim(),
        head
    );

    // A thread cannot change what the node's git reads: the shared config is read-only in
    // its sandbox, and a rewritten `.git` file is not followed.
    let t = send(
        gw,
        &b,
        "git config core.fsmonitor 'touch /tmp/viber-pwned'; echo rc=$?; \
         echo '[core] fsmonitor = touch /tmp/viber-pwned' > ../evil; printf 'gitdir: ..\n' > .git; echo done",
    )
    .await;
    completed(&s, &t).await;
    let (_, text) = gw.finished(&t).await;
    assert!(
        text.contains("rc=") && !text.contains("rc=0") && text.contains("done"),
        "{text}"
    );
    let (code, d) = gw.get(&format!("/api/threads/{b}/diff")).await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["files"][0]["path"], "same.txt", "{d}");
    assert!(!Path::new("/tmp/viber-pwned").exists());

    // Thread B has uncommitted work: sync refuses. Then main moves on with a conflicting
    // change: thread A's sync reports same.txt and leaves the worktree as it was.
    let (code, v) = gw.post(&format!("/api/threads/{b}/sync"), json!({})).await;
    assert_eq!(code, 409, "{v}\n{}", s.node.logs());
    std::fs::write(seed.join("same.txt"), "changed on main\n").unwrap();
    git(&seed, &["commit", "-qam", "main moves"]);
    git(&seed, &["push", "-q", "origin", "main"]);
    let (code, v) = gw.post(&format!("/api/threads/{a}/sync"), json!({})).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["conflicts"], json!(["same.txt"]), "{v}");
    assert_eq!(git(&wt_of(&a), &["status", "--porcelain"]), "");
    assert_eq!(git(&wt_of(&a), &["rev-parse", "HEAD"]).trim(), head);
    let out = cli(gw, &["thread", "sync", &a, "--rebase"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("same.txt"));

    // Archiving removes the worktree and keeps the branch.
    let out = cli(gw, &["thread", "archive", &b]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("thread b's worktree to go", T, || async {
        !wt_of(&b).exists()
    })
    .await;
    let checkout = s.ndir.path().join("workspace");
    let branches = std::fs::read_dir(&checkout)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().join(".git").is_dir())
        .map(|e| git(&e.path(), &["branch", "--list", "viber/*"]))
        .unwrap();
    assert_eq!(branches.lines().count(), 2, "{branches}");

    // A worktree the gateway does not know (an orphan) is removed after a heartbeat.
    let orphan = s.ndir.path().join("workspace/.worktrees/thr_orphan.json");
    std::fs::copy(
        s.ndir.path().join(format!("workspace/.worktrees/{a}.json")),
        &orphan,
    )
    .unwrap();
    wait_until("the orphan to be removed", T, || async { !orphan.exists() }).await;
    drop(s.node);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_push_and_a_pull_request_use_the_token_and_never_show_it() {
    let root = TempDir::new("wt-https");
    let (origin, _seed) = make_origin(root.path());
    // A self-signed certificate for 127.0.0.1, trusted by the node's git only.
    let (cert, key) = (root.path().join("cert.pem"), root.path().join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = root.path().join("https.log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/git_https.py");
    let mut server = Killed(
        Command::new("python3")
            .arg(script)
            .args([root.path(), &cert, &key])
            .args(["x-access-token", TOKEN])
            .arg(&log)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let push_url = format!("https://127.0.0.1:{}/origin.git", port.trim());
    let github = FakeGitHub::start("acme/widget", TOKEN).await;

    let s = setup(&[("GIT_SSL_CAINFO", cert.to_str().unwrap())]).await;
    let gw = &s.gw;
    let env_id = bound_env(
        &s,
        json!({
            "name": "gh",
            "type": "git",
            "repoUrl": format!("file://{}", origin.display()),
            "repoBranch": "main",
            "secrets": {"GIT_TOKEN": "wrong-token-123456"},
            "metadata": {"pushUrl": push_url, "githubRepo": "acme/widget", "githubApiUrl": github.base_url},
        }),
    )
    .await;
    let thread = new_thread(gw, &env_id).await;
    let t = send(gw, &thread, "echo feature > feature.txt").await;
    completed(&s, &t).await;
    let (code, c) = gw
        .post(&format!("/api/threads/{thread}/commit"), json!({}))
        .await;
    assert_eq!(code, 200, "{c}");

    // A refused token: git's error, without the token.
    let (code, v) = gw
        .post(&format!("/api/threads/{thread}/push"), json!({}))
        .await;
    assert_eq!(code, 502, "{v}");
    assert!(!v.to_string().contains("wrong-token-123456"), "{v}");
    let (code, v) = gw
        .request(
            reqwest::Method::PUT,
            &format!("/api/environments/{env_id}"),
            Some(json!({"secrets": {"GIT_TOKEN": TOKEN}})),
        )
        .await;
    assert_eq!(code, 200, "{v}");

    // The pull request: pushed over https with the token, then opened on "GitHub".
    let (code, pr) = gw
        .post(
            &format!("/api/threads/{thread}/pull-request"),
            json!({"draft": true}),
        )
        .await;
    assert_eq!(code, 201, "{pr}\n{}", gw.proc.logs());
    assert!(!pr.to_string().contains(TOKEN));
    assert_eq!(pr["base"], "main");
    assert_eq!(pr["draft"], true);
    let branch = pr["head"].as_str().unwrap().to_string();
    assert_eq!(
        git(&origin, &["rev-parse", &format!("refs/heads/{branch}")]).trim(),
        c["head"].as_str().unwrap()
    );
    let sent = std::fs::read_to_string(&log).unwrap();
    assert!(sent.contains("git-receive-pack"), "{sent}");
    let reqs = github.requests();
    let (path, body) = reqs.last().unwrap();
    assert_eq!(path, "POST /repos/acme/widget/pulls");
    assert_eq!(body["head"], branch.as_str());
    assert!(body["body"]
        .as_str()
        .unwrap()
        .contains(&format!("/threads/{thread}")));
    let (_, view) = gw.get(&format!("/api/threads/{thread}")).await;
    assert_eq!(view["worktree"]["pullRequestUrl"], pr["url"]);
    // GitHub's refusal comes back in its words.
    let out = cli(gw, &["thread", "pr", &thread, "--title", "again"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(TOKEN));
    // Nothing the node or gateway logged shows the token.
    assert!(!gw.proc.logs().contains(TOKEN));
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
