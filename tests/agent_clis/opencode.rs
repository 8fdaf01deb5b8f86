//! OpenCode (`opencode acp`) against the scripted OpenAI Chat Completions server.

use serde_json::{json, Value};

use crate::common::agent_cli::{AgentCli, T};
use crate::common::fake_openai::{text, tool_call, Reply};
use crate::common::{processes_containing, wait_until};

const KEY: &str = "sk-test-opencode-9012";
const MODEL: &str = "fake-model";

async fn opencode(script: Vec<Reply>) -> Option<AgentCli> {
    let c = AgentCli::start("opencode", script).await?;
    c.fake.answer_titles();
    Some(c)
}

fn env(c: &AgentCli) -> Value {
    json!({"OPENAI_BASE_URL": c.fake.base_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": MODEL})
}

fn bash(id: &str, command: &str) -> Reply {
    tool_call(
        id,
        "bash",
        json!({"command": command, "description": "run it"}),
    )
}

/// A multi-step turn reads a file, edits it and runs a command: the file changes on disk,
/// the `ai` package reads the stream with the tool calls in it, and the tokens are counted.
#[tokio::test]
async fn opencode_reads_edits_and_runs() {
    let Some(c) = opencode(vec![]).await else {
        return;
    };
    std::fs::write(c.work.join("greeting.txt"), "hello\n").unwrap();
    let file = c.work.join("greeting.txt").display().to_string();
    c.fake.set_script(vec![
        tool_call("call_read", "read", json!({ "filePath": file })),
        tool_call(
            "call_edit",
            "edit",
            json!({"filePath": file, "oldString": "hello", "newString": "goodbye"}),
        ),
        bash("call_run", "cat greeting.txt > seen.txt"),
        text("The greeting now says goodbye."),
    ]);
    let caps = c.gw.nodes().await[0]["capabilities"].to_string();
    assert!(
        caps.contains("\"opencode\"") && caps.contains("opencode@1."),
        "{caps}"
    );
    let id = c
        .task("opencode", "change the greeting", "always-execute", env(&c))
        .await;
    let t = c.ended(&id).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(
        std::fs::read_to_string(c.work.join("seen.txt")).unwrap(),
        "goodbye\n"
    );
    let chunks = c.gw.chunks(&id).await;
    let calls: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["type"] == "tool-input-available")
        .collect();
    assert_eq!(calls.len(), 3, "{chunks:?}");
    assert_eq!(calls[0]["toolName"], "read");
    assert_eq!(calls[2]["toolName"], "bash");
    assert_eq!(calls[2]["input"]["command"], "cat greeting.txt > seen.txt");
    let parsed = c.gw.conformance(&id);
    assert!(
        parsed["text"]
            .as_str()
            .unwrap()
            .contains("now says goodbye"),
        "{parsed}"
    );
    assert!(t["usage"]["inputTokens"].as_i64().unwrap() > 0, "{t}");
    assert_eq!(t["usage"]["model"], format!("viber/{MODEL}"), "{t}");
    let reqs = c.fake.requests();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    assert!(reqs[3].to_string().contains("tool_call_id"));
    assert!(!reqs.iter().any(|r| r.to_string().contains(KEY)));
    assert_eq!(c.fake.authorization(0).unwrap(), format!("Bearer {KEY}"));
}

/// Always-ask: bash waits for the operator; approved it runs, denied the model is told and
/// the turn goes on.
#[tokio::test]
async fn opencode_asks_before_commands() {
    let Some(c) = opencode(vec![
        bash("call_a", "echo yes > approved.txt"),
        text("Ran it."),
        bash("call_d", "echo no > denied.txt"),
        text("I did not run it."),
    ])
    .await
    else {
        return;
    };
    for pending in c.approve_then_deny("opencode", env(&c)).await {
        assert_eq!(pending["toolName"], "bash", "{pending}");
    }
    let reqs = c.fake.requests();
    assert!(reqs[3].to_string().contains("rejected"), "{}", reqs[3]);
}

/// A thread's next message resumes the OpenCode session in a new process: the model sees
/// the first turn.
#[tokio::test]
async fn opencode_follow_ups_resume_the_session() {
    let Some(c) = opencode(vec![
        text("The first answer is 41."),
        text("And the second is 42."),
    ])
    .await
    else {
        return;
    };
    c.two_messages(
        "opencode",
        json!({"OPENAI_BASE_URL": c.fake.base_url, "OPENAI_MODEL": MODEL}),
        json!({ "OPENAI_API_KEY": KEY }),
    )
    .await;
    assert!(c.saw_the_first_turn(), "{:?}", c.fake.requests().last());
}

/// Stop ends OpenCode and the command it ran; a refused key ends the task with the reason.
#[tokio::test]
async fn opencode_stops_and_reports_a_refused_key() {
    let Some(c) = opencode(vec![
        bash("call_s", "sleep 31379"),
        Reply::Status(401, None),
    ])
    .await
    else {
        return;
    };
    let id = c
        .task("opencode", "wait a while", "always-execute", env(&c))
        .await;
    wait_until("the command's sleep to start", T, || async {
        processes_containing("sleep 31379") > 0
    })
    .await;
    c.stop_and_check(&id, "sleep 31379").await;
    let id = c.task("opencode", "hello", "always-execute", env(&c)).await;
    let t = c.ended(&id).await;
    assert_eq!(t["state"], "error", "{t}");
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("scripted") || error.contains("API key"),
        "{error}"
    );
}
