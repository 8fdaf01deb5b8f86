//! Claude Code (`claude -p` in stream-json) against the scripted Anthropic Messages server.

use serde_json::{json, Value};

use crate::common::agent_cli::AgentCli;
use crate::common::fake_openai::{anthropic_text, anthropic_tool, Reply};

const KEY: &str = "sk-ant-test-claude-1234";

async fn claude(script: Vec<Reply>) -> Option<AgentCli> {
    AgentCli::start("claude", script).await
}

fn env(c: &AgentCli) -> Value {
    json!({"ANTHROPIC_BASE_URL": c.fake.anthropic_base(), "ANTHROPIC_API_KEY": KEY})
}

fn bash(id: &str, command: &str) -> Reply {
    anthropic_tool(
        id,
        "Bash",
        json!({"command": command, "description": "run it"}),
    )
}

/// Always-execute: a multi-step turn reads a file, edits it and runs a command (each
/// permission prompt answered allow); the file changes on disk, each result goes back to the
/// model, and the stream (read by the `ai` package) carries the tool calls, the text, the
/// usage and the cost, which `/api/usage` counts.
#[tokio::test]
async fn claude_code_reads_edits_and_runs() {
    let Some(c) = claude(vec![]).await else {
        return;
    };
    std::fs::write(c.work.join("greeting.txt"), "hello\n").unwrap();
    let file = c.work.join("greeting.txt").display().to_string();
    c.fake.set_script(vec![
        anthropic_tool("toolu_r", "Read", json!({ "file_path": file })),
        anthropic_tool(
            "toolu_e",
            "Edit",
            json!({"file_path": file, "old_string": "hello", "new_string": "goodbye"}),
        ),
        bash("toolu_1", "cat greeting.txt > made.txt"),
        anthropic_text("Made it."),
    ]);
    let caps = c.gw.nodes().await[0]["capabilities"].clone();
    assert!(
        caps.as_array().unwrap().contains(&json!("claude-code")),
        "{caps}"
    );
    let id = c
        .task(
            "claude-code",
            "change the greeting",
            "always-execute",
            env(&c),
        )
        .await;
    let t = c.ended(&id).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(
        std::fs::read_to_string(c.work.join("made.txt")).unwrap(),
        "goodbye\n"
    );
    let chunks = c.gw.chunks(&id).await;
    let calls: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["type"] == "tool-input-available")
        .collect();
    let names: Vec<&str> = calls
        .iter()
        .map(|c| c["toolName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Read", "Edit", "Bash"], "{chunks:?}");
    assert_eq!(calls[2]["input"]["command"], "cat greeting.txt > made.txt");
    assert!(chunks
        .iter()
        .any(|c| c["type"] == "tool-output-available" && c["toolCallId"] == "toolu_1"));
    let parsed = c.gw.conformance(&id);
    assert!(
        parsed["text"].as_str().unwrap().contains("Made it."),
        "{parsed}"
    );
    assert!(
        parsed["partTypes"].to_string().contains("tool-Bash"),
        "{parsed}"
    );
    assert!(t["usage"]["inputTokens"].as_i64().unwrap() > 0, "{t}");
    assert!(t["usage"]["costUsd"].as_f64().unwrap() > 0.0, "{t}");
    let usage = c.usage().await;
    assert!(usage["total"]["costUsd"].as_f64().unwrap() > 0.0, "{usage}");
    // The model saw the tool's result; the key only ever went in a header.
    let reqs = c.fake.requests();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    assert!(reqs[1].to_string().contains("tool_result"));
    assert!(!reqs.iter().any(|r| r.to_string().contains(KEY)));
}

/// Always-ask: the CLI's permission prompt becomes an approval; approved, the command runs;
/// denied, the CLI is told and the task goes on without running it.
#[tokio::test]
async fn claude_code_permission_prompts_are_approvals() {
    let Some(c) = claude(vec![
        bash("toolu_a", "echo yes > approved.txt"),
        anthropic_text("Ran it."),
        bash("toolu_d", "echo no > denied.txt"),
        anthropic_text("Understood, I did not run it."),
    ])
    .await
    else {
        return;
    };
    for pending in c.approve_then_deny("claude-code", env(&c)).await {
        assert_eq!(pending["toolName"], "Bash", "{pending}");
    }
    // The denial reached the model as the tool's error result.
    let reqs = c.fake.requests();
    assert!(reqs[3].to_string().contains("not this one"), "{}", reqs[3]);
}

/// A thread's second message asks the CLI to resume its session, with the executor the
/// thread remembers; the key is an environment secret. Claude Code 2.1.197 hangs on
/// `--resume` offline (it probes the API's base URL with `HEAD /` and goes quiet), so the
/// node gives up after a while and starts a new session, saying so in the stream: either
/// way the turn completes.
#[tokio::test]
async fn claude_code_follow_ups_ask_to_resume_the_session() {
    let Some(c) = claude(vec![
        anthropic_text("The first answer is 41."),
        anthropic_text("And the second is 42."),
    ])
    .await
    else {
        return;
    };
    let t = c
        .two_messages(
            "claude-code",
            json!({"ANTHROPIC_BASE_URL": c.fake.anthropic_base()}),
            json!({ "ANTHROPIC_API_KEY": KEY }),
        )
        .await;
    assert!(t["options"]["resumeSession"].is_string(), "{t}");
    let text = c.text(t["id"].as_str().unwrap()).await;
    assert!(
        c.saw_the_first_turn() || text.contains("could not resume the earlier session"),
        "{text}"
    );
    assert!(text.contains("the second is 42"), "{text}");
}

/// Stop ends the CLI and what its tool started; a refused key ends the task with the
/// provider's reason.
#[tokio::test]
async fn claude_code_stops_and_reports_a_refused_key() {
    let Some(c) = claude(vec![
        bash("toolu_s", "sleep 31377"),
        Reply::Status(401, None),
    ])
    .await
    else {
        return;
    };
    let id = c
        .task("claude-code", "wait a while", "always-execute", env(&c))
        .await;
    crate::common::wait_until(
        "the tool's sleep to start",
        crate::common::agent_cli::T,
        || async { crate::common::processes_containing("sleep 31377") > 0 },
    )
    .await;
    c.stop_and_check(&id, "sleep 31377").await;
    let id = c
        .task("claude-code", "hello", "always-execute", env(&c))
        .await;
    let t = c.ended(&id).await;
    assert_eq!(t["state"], "error", "{t}");
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("refused") && error.contains("401"),
        "{error}"
    );
}
