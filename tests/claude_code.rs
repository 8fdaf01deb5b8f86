//! Issue 14, first executor: the real Claude Code CLI (pinned in tests/js/package-lock.json,
//! installed by scripts/test.sh) driven by a node against the scripted Anthropic server in
//! tests/common. Nothing about the CLI is faked.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::fake_openai::{anthropic_text, anthropic_tool, FakeOpenAi, Reply};
use common::*;

const T: Duration = Duration::from_secs(60);

/// The CLI installed by scripts/test.sh; under CI its absence is a failure.
fn claude_bin_dir() -> Option<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/node_modules/.bin");
    if std::path::Path::new(dir).join("claude").is_file() {
        return Some(dir.to_string());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Claude Code is missing: scripts/test.sh installs it (npm ci in tests/js)"
    );
    eprintln!("SKIPPED: Claude Code is not installed in tests/js");
    None
}

struct Claude {
    gw: Gateway,
    node_id: String,
    work: TempDir,
    fake: FakeOpenAi,
    _node: Proc,
    _dirs: (TempDir, TempDir),
}

impl Claude {
    async fn start(bin_dir: &str, script: Vec<Reply>) -> Claude {
        let fake = FakeOpenAi::start(script).await;
        let (gdir, ndir, work) = (
            TempDir::new("gw"),
            TempDir::new("node"),
            TempDir::new("work"),
        );
        let gw = Gateway::start(gdir.path(), 0, &[]);
        let token = gw.enroll("cc").await;
        let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
        let node = start_node_env(&gw.url, Some(&token), ndir.path(), "cc", &[("PATH", &path)]);
        gw.wait_node_status("cc", "online", T).await;
        let node_id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
        Claude {
            gw,
            node_id,
            work,
            fake,
            _node: node,
            _dirs: (gdir, ndir),
        }
    }

    async fn task(&self, goal: &str, mode: &str) -> String {
        let (code, v) = self
            .gw
            .post(
                "/api/tasks",
                json!({"goal": goal, "executor": "claude-code", "nodeId": self.node_id,
                       "options": {"cwd": self.work.path(), "workingMode": mode,
                                   "env": {"ANTHROPIC_BASE_URL": self.fake.anthropic_base(),
                                           "ANTHROPIC_API_KEY": "sk-ant-test-claude-1234"}}}),
            )
            .await;
        assert_eq!(code, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn state(&self, id: &str) -> Value {
        self.gw.get(&format!("/api/tasks/{id}")).await.1
    }

    async fn wait(&self, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, T, || async { f(&self.state(id).await) }).await;
        self.state(id).await
    }

    async fn ended(&self, id: &str) -> Value {
        self.wait(id, "task to end", |t| {
            ["completed", "error", "stopped"].contains(&t["state"].as_str().unwrap_or(""))
        })
        .await
    }
}

fn bash(id: &str, command: &str) -> Reply {
    anthropic_tool(
        id,
        "Bash",
        json!({"command": command, "description": "run it"}),
    )
}

/// Always-execute: a Bash call runs (the file changes on disk), its result goes back to the
/// model, and the stream carries the tool call, the text and the usage.
#[tokio::test]
async fn claude_code_runs_a_tool_call_and_reports_usage() {
    let Some(bin) = claude_bin_dir() else { return };
    let c = Claude::start(
        &bin,
        vec![
            bash("toolu_1", "echo hi > made.txt"),
            anthropic_text("Made it."),
        ],
    )
    .await;
    let caps = c.gw.nodes().await[0]["capabilities"].clone();
    assert!(
        caps.as_array().unwrap().contains(&json!("claude-code")),
        "{caps}"
    );
    let id = c.task("make a file", "always-execute").await;
    let t = c.ended(&id).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(
        std::fs::read_to_string(c.work.join("made.txt")).unwrap(),
        "hi\n"
    );
    let chunks = c.gw.chunks(&id).await;
    let call = chunks
        .iter()
        .find(|c| c["type"] == "tool-input-available")
        .expect("a tool call");
    assert_eq!(call["toolName"], "Bash");
    assert_eq!(call["input"]["command"], "echo hi > made.txt");
    assert!(chunks
        .iter()
        .any(|c| c["type"] == "tool-output-available" && c["toolCallId"] == "toolu_1"));
    let text: String = chunks
        .iter()
        .filter(|c| c["type"] == "text-delta")
        .map(|c| c["delta"].as_str().unwrap())
        .collect();
    assert!(text.contains("Made it."), "{text}");
    assert!(t["usage"]["inputTokens"].as_i64().unwrap() > 0, "{t}");
    // The model saw the tool's result; the key only ever went in a header.
    let reqs = c.fake.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[1].to_string().contains("tool_result"));
    assert!(!reqs
        .iter()
        .any(|r| r.to_string().contains("sk-ant-test-claude-1234")));
}

/// Always-ask: the CLI's permission prompt becomes an approval; approved, the command runs;
/// denied, the CLI is told and the task goes on without running it.
#[tokio::test]
async fn claude_code_permission_prompts_are_approvals() {
    let Some(bin) = claude_bin_dir() else { return };
    let c = Claude::start(
        &bin,
        vec![
            bash("toolu_a", "echo yes > approved.txt"),
            anthropic_text("Ran it."),
            bash("toolu_d", "echo no > denied.txt"),
            anthropic_text("Understood, I did not run it."),
        ],
    )
    .await;
    for (file, approve) in [("approved.txt", true), ("denied.txt", false)] {
        let id = c.task(&format!("write {file}"), "always-ask").await;
        let t = c
            .wait(&id, "an approval", |t| t["status"] == "awaiting approval")
            .await;
        let pending = &t["awaitingApproval"];
        assert_eq!(pending["toolName"], "Bash", "{t}");
        assert!(
            !c.work.join(file).exists(),
            "nothing runs before the answer"
        );
        let (code, v) =
            c.gw.post(
                &format!(
                    "/api/tasks/{id}/approvals/{}",
                    pending["approvalId"].as_str().unwrap()
                ),
                json!({"approve": approve, "reason": "not this one"}),
            )
            .await;
        assert_eq!(code, 202, "{v}");
        let t = c.ended(&id).await;
        assert_eq!(t["state"], "completed", "{t}");
        assert_eq!(c.work.join(file).exists(), approve, "{file}");
    }
    // The denial reached the model as the tool's error result.
    let reqs = c.fake.requests();
    assert!(reqs[3].to_string().contains("not this one"), "{}", reqs[3]);
}

/// A node without the CLI does not offer it, and the gateway says so at once.
#[tokio::test]
async fn a_node_without_claude_code_does_not_offer_it() {
    let (gdir, ndir) = (TempDir::new("gw"), TempDir::new("node"));
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("plain").await;
    let _node = start_node_env(
        &gw.url,
        Some(&token),
        ndir.path(),
        "plain",
        &[("PATH", "/usr/bin:/bin")],
    );
    gw.wait_node_status("plain", "online", T).await;
    let node_id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
    let (code, v) = gw
        .post(
            "/api/tasks",
            json!({"goal": "hi", "executor": "claude-code", "nodeId": node_id}),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    assert!(v.to_string().contains("claude-code"), "{v}");
}
