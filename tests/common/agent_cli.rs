//! A gateway and a node that can run the real agent CLIs (Claude Code, Codex, OpenCode:
//! pinned in tests/js/package-lock.json, installed by scripts/test.sh) against the scripted
//! model server in `fake_openai`. Nothing about the CLIs is faked.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

use super::fake_openai::{FakeOpenAi, Reply};
use super::*;

pub const T: Duration = Duration::from_secs(60);

/// Where scripts/test.sh installs the CLIs; None (the test skips) when they are missing
/// outside CI, a failure under CI.
pub fn bin_dir(command: &str) -> Option<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/node_modules/.bin");
    if Path::new(dir).join(command).is_file() {
        return Some(dir.to_string());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{command} is missing: scripts/test.sh installs it (npm ci in tests/js)"
    );
    eprintln!("SKIPPED: {command} is not installed in tests/js");
    None
}

/// A gateway, a node whose PATH has the CLIs, a working dir and a scripted model server.
pub struct AgentCli {
    pub gw: Gateway,
    pub node_id: String,
    pub work: TempDir,
    pub fake: FakeOpenAi,
    pub node: Proc,
    pub node_dir: TempDir,
    _gw_dir: TempDir,
}

impl AgentCli {
    /// None when `command` is not installed (outside CI).
    pub async fn start(command: &str, script: Vec<Reply>) -> Option<AgentCli> {
        let bin = bin_dir(command)?;
        let fake = FakeOpenAi::start(script).await;
        let (gdir, ndir, work) = (
            TempDir::new("gw"),
            TempDir::new("node"),
            TempDir::new("work"),
        );
        let gw = Gateway::start(gdir.path(), 0, &[]);
        let token = gw.enroll("agents").await;
        let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
        let node = start_node_env(
            &gw.url,
            Some(&token),
            ndir.path(),
            "agents",
            &[("PATH", &path)],
        );
        gw.wait_node_status("agents", "online", T).await;
        let node_id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
        Some(AgentCli {
            gw,
            node_id,
            work,
            fake,
            node,
            node_dir: ndir,
            _gw_dir: gdir,
        })
    }

    /// A task for `executor` in the working dir, with `env` (the provider's settings).
    pub async fn task(&self, executor: &str, goal: &str, mode: &str, env: Value) -> String {
        let (code, v) = self
            .gw
            .post(
                "/api/tasks",
                json!({"goal": goal, "executor": executor, "nodeId": self.node_id,
                       "options": {"cwd": self.work.path(), "workingMode": mode, "env": env}}),
            )
            .await;
        assert_eq!(code, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// A `local` environment on the working dir with these vars and secrets, bound to the
    /// node and ready, and a thread in it.
    pub async fn thread(&self, vars: Value, secrets: Value) -> String {
        let env = json!({"name": "agents", "type": "local", "localPath": self.work.path(),
                         "vars": vars, "secrets": secrets});
        self.gw.env_thread(env, &json!(self.node_id)).await.thread
    }

    /// Sends a thread message (naming the executor when given); the task it started.
    pub async fn say(&self, thread: &str, message: &str, executor: Option<&str>) -> String {
        let mut body = json!({ "message": message });
        if let Some(e) = executor {
            body["executor"] = json!(e);
        }
        let (code, m) = self
            .gw
            .post(&format!("/api/threads/{thread}/messages"), body)
            .await;
        assert_eq!(code, 201, "{m}");
        m["taskId"].as_str().unwrap().to_string()
    }

    pub async fn state(&self, id: &str) -> Value {
        self.gw.get(&format!("/api/tasks/{id}")).await.1
    }

    pub async fn wait(&self, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, T, || async { f(&self.state(id).await) }).await;
        self.state(id).await
    }

    /// Waits for the task's end; on a timeout, fails with its state and the node's log.
    pub async fn ended(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + T;
        loop {
            let t = self.state(id).await;
            if ["completed", "error", "stopped"].contains(&t["state"].as_str().unwrap_or("")) {
                return t;
            }
            if std::time::Instant::now() > deadline {
                let log = self.node.logs();
                panic!(
                    "task {id} did not end: {t}\nnode log:\n{}",
                    viber::text::tail(&log, 6000)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the task's first approval request and answers it.
    pub async fn answer(&self, id: &str, approve: bool, reason: &str) -> Value {
        let t = self
            .wait(id, "an approval", |t| t["status"] == "awaiting approval")
            .await;
        let pending = t["awaitingApproval"].clone();
        let (code, v) = self
            .gw
            .post(
                &format!(
                    "/api/tasks/{id}/approvals/{}",
                    pending["approvalId"].as_str().unwrap()
                ),
                json!({"approve": approve, "reason": reason}),
            )
            .await;
        assert_eq!(code, 202, "{v}");
        pending
    }

    /// Two always-ask tasks that each write a file with a tool call: the first call is
    /// approved (approved.txt appears), the second denied (denied.txt does not), and both
    /// tasks complete. Returns what each asked about.
    pub async fn approve_then_deny(&self, executor: &str, env: Value) -> Vec<Value> {
        let mut asked = Vec::new();
        for (file, approve) in [("approved.txt", true), ("denied.txt", false)] {
            let id = self
                .task(
                    executor,
                    &format!("write {file}"),
                    "always-ask",
                    env.clone(),
                )
                .await;
            asked.push(self.answer(&id, approve, "not this one").await);
            let t = self.ended(&id).await;
            assert_eq!(t["state"], "completed", "{t}");
            assert_eq!(self.work.join(file).exists(), approve, "{file}");
        }
        asked
    }

    /// A thread (in an environment with these vars and secrets) whose first message picks
    /// `executor` and whose second does not; both complete. Returns the second task.
    pub async fn two_messages(&self, executor: &str, vars: Value, secrets: Value) -> Value {
        let thread = self.thread(vars, secrets).await;
        let first = self
            .say(&thread, "what is the first answer?", Some(executor))
            .await;
        assert_eq!(self.ended(&first).await["state"], "completed");
        let second = self.say(&thread, "and the second?", None).await;
        let t = self.ended(&second).await;
        assert_eq!(t["state"], "completed", "{t}");
        assert_eq!(t["executor"], executor, "the thread keeps its executor");
        let (_, th) = self.gw.get(&format!("/api/threads/{thread}")).await;
        assert_eq!(th["executor"], executor, "{th}");
        t
    }

    /// Whether the model's last request carried the first turn of [`Self::two_messages`]
    /// (its question, and the answer scripted as "The first answer is 41.").
    pub fn saw_the_first_turn(&self) -> bool {
        let last = self.fake.requests().last().unwrap().to_string();
        last.contains("The first answer is 41.") && last.contains("what is the first answer?")
    }

    /// Stops a task and checks that nothing it started is left: no process whose command
    /// line holds `marker` (a command only this task ran).
    pub async fn stop_and_check(&self, id: &str, marker: &str) {
        let (code, v) = self
            .gw
            .post(&format!("/api/tasks/{id}/stop"), json!({}))
            .await;
        assert!(code == 202 || code == 200, "{code} {v}");
        let t = self.ended(id).await;
        assert_eq!(t["state"], "stopped", "{t}");
        wait_until(
            "the CLI's processes to end",
            Duration::from_secs(10),
            || async { processes_containing(marker) == 0 },
        )
        .await;
    }

    /// Text of the task's text deltas.
    pub async fn text(&self, id: &str) -> String {
        self.gw
            .chunks(id)
            .await
            .iter()
            .filter(|c| c["type"] == "text-delta")
            .map(|c| c["delta"].as_str().unwrap().to_string())
            .collect()
    }

    /// The usage report over the last day.
    pub async fn usage(&self) -> Value {
        let (code, u) = self.gw.get("/api/usage").await;
        assert_eq!(code, 200, "{u}");
        u
    }
}
