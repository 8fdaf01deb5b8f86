//! Codex (`codex app-server`) against the scripted OpenAI Responses server.

use serde_json::{json, Value};

use crate::common::agent_cli::{AgentCli, T};
use crate::common::fake_openai::{responses_call, responses_custom, responses_text, Reply};
use crate::common::{processes_containing, wait_until};

const KEY: &str = "sk-test-codex-5678";
/// A model Codex knows (it offers `apply_patch` only to those).
const MODEL: &str = "gpt-5.5";

async fn codex(script: Vec<Reply>) -> Option<AgentCli> {
    AgentCli::start("codex", script).await
}

fn env(c: &AgentCli) -> Value {
    json!({"OPENAI_BASE_URL": c.fake.base_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": MODEL})
}

fn exec(id: &str, cmd: &str) -> Reply {
    responses_call(id, "exec_command", json!({ "cmd": cmd }))
}

/// A multi-step turn reads a file, patches it and runs a command: the file changes on disk,
/// the `ai` package reads the stream with the tool calls in it, and the tokens are counted.
#[tokio::test]
async fn codex_reads_edits_and_runs() {
    let Some(c) = codex(vec![
        exec("call_read", "cat greeting.txt"),
        responses_custom(
            "call_patch",
            "apply_patch",
            "*** Begin Patch\n*** Update File: greeting.txt\n@@\n-hello\n+goodbye\n*** End Patch\n",
        ),
        exec("call_run", "cat greeting.txt > seen.txt"),
        responses_text("The greeting now says goodbye."),
    ])
    .await
    else {
        return;
    };
    std::fs::write(c.work.join("greeting.txt"), "hello\n").unwrap();
    let caps = c.gw.nodes().await[0]["capabilities"].to_string();
    assert!(
        caps.contains("\"codex\"") && caps.contains("codex@0."),
        "{caps}"
    );
    let id = c
        .task("codex", "change the greeting", "always-execute", env(&c))
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
    assert_eq!(calls[0]["toolName"], "exec_command");
    assert_eq!(calls[0]["input"]["command"], "cat greeting.txt");
    assert_eq!(calls[1]["toolName"], "apply_patch");
    assert!(
        calls[1]["input"].to_string().contains("greeting.txt"),
        "{}",
        calls[1]
    );
    let read = chunks
        .iter()
        .find(|c| c["type"] == "tool-output-available" && c["toolCallId"] == "call_read")
        .expect("the read's output");
    assert!(
        read["output"]["output"].as_str().unwrap().contains("hello"),
        "{read}"
    );
    let parsed = c.gw.conformance(&id);
    assert!(
        parsed["text"]
            .as_str()
            .unwrap()
            .contains("now says goodbye"),
        "{parsed}"
    );
    assert_eq!(t["usage"]["inputTokens"], 400, "{t}");
    assert_eq!(t["usage"]["model"], MODEL, "{t}");
    let usage = c.usage().await;
    assert_eq!(usage["byModel"][0]["key"], MODEL, "{usage}");
    // Codex's provider came from the task's settings; the key went only in a header.
    let reqs = c.fake.requests();
    assert_eq!(reqs.len(), 4);
    assert!(reqs[1].to_string().contains("function_call_output"));
    assert!(!reqs.iter().any(|r| r.to_string().contains(KEY)));
    assert_eq!(c.fake.authorization(0).unwrap(), format!("Bearer {KEY}"));
}

/// Always-ask: the command waits for the operator; approved it runs, denied the model is
/// told and the turn goes on.
#[tokio::test]
async fn codex_asks_before_commands() {
    let Some(c) = codex(vec![
        exec("call_a", "echo yes > approved.txt"),
        responses_text("Ran it."),
        exec("call_d", "echo no > denied.txt"),
        responses_text("I did not run it."),
    ])
    .await
    else {
        return;
    };
    let asked = c.approve_then_deny("codex", env(&c)).await;
    for (pending, file) in asked.iter().zip(["approved.txt", "denied.txt"]) {
        assert_eq!(pending["toolName"], "exec_command", "{pending}");
        assert!(
            pending["input"]["command"].as_str().unwrap().contains(file),
            "{pending}"
        );
    }
    let reqs = c.fake.requests();
    assert!(reqs[3].to_string().contains("rejected"), "{}", reqs[3]);
}

/// A thread's next message resumes the Codex thread in a new app-server process: the model
/// sees the first turn.
#[tokio::test]
async fn codex_follow_ups_resume_the_thread() {
    let Some(c) = codex(vec![
        responses_text("The first answer is 41."),
        responses_text("And the second is 42."),
    ])
    .await
    else {
        return;
    };
    c.two_messages(
        "codex",
        json!({"OPENAI_BASE_URL": c.fake.base_url, "OPENAI_MODEL": MODEL}),
        json!({ "OPENAI_API_KEY": KEY }),
    )
    .await;
    assert!(c.saw_the_first_turn(), "{:?}", c.fake.requests().last());
}

/// Stop ends Codex and the command it ran; a refused key ends the task with the reason.
#[tokio::test]
async fn codex_stops_and_reports_a_refused_key() {
    // The interrupted turn and Codex's retries may each take a refusal.
    let mut script = vec![exec("call_s", "sleep 31378")];
    script.extend((0..8).map(|_| Reply::Status(401, None)));
    let Some(c) = codex(script).await else {
        return;
    };
    let id = c
        .task("codex", "wait a while", "always-execute", env(&c))
        .await;
    wait_until("the command's sleep to start", T, || async {
        processes_containing("sleep 31378") > 0
    })
    .await;
    c.stop_and_check(&id, "sleep 31378").await;
    let id = c.task("codex", "hello", "always-execute", env(&c)).await;
    let t = c.ended(&id).await;
    assert_eq!(t["state"], "error", "{t}");
    let error = t["error"].as_str().unwrap();
    assert!(error.contains("Incorrect API key"), "{error}");
}

/// A secret file reaches the CLI's home (0600) and not its environment; its content stays
/// out of the stream.
#[tokio::test]
async fn codex_gets_secret_files_in_its_home() {
    const TOKEN: &str = "file-secret-value-73519";
    let Some(c) = codex(vec![
        exec(
            "call_f",
            "cat \"$HOME/.creds/token.txt\"; echo; echo \"var=${FILE_TOKEN:-absent}\"; cp \"$HOME/.creds/token.txt\" seen.txt",
        ),
        responses_text("Read it."),
    ])
    .await
    else {
        return;
    };
    let thread = c
        .thread(
            json!({"OPENAI_BASE_URL": c.fake.base_url, "OPENAI_MODEL": MODEL}),
            json!({"OPENAI_API_KEY": KEY,
                   "FILE_TOKEN": {"value": TOKEN, "file": ".creds/token.txt"}}),
        )
        .await;
    let id = c.say(&thread, "read the token", Some("codex")).await;
    let t = c.ended(&id).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(
        std::fs::read_to_string(c.work.join("seen.txt")).unwrap(),
        TOKEN
    );
    let chunks =
        c.gw.chunks(&id)
            .await
            .iter()
            .map(Value::to_string)
            .collect::<String>();
    assert!(chunks.contains("var=absent"), "{chunks}");
    assert!(
        chunks.contains("[REDACTED]") && !chunks.contains(TOKEN),
        "{chunks}"
    );
    let homes = c.node_dir.join("workspace/.agent-homes");
    let home = std::fs::read_dir(&homes)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(home.join(".creds/token.txt"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // A path that leaves the home is refused.
    let (code, v) =
        c.gw.post(
            "/api/environments",
            json!({"name": "bad-file", "type": "local", "localPath": c.work.path(),
                   "secrets": {"X": {"value": TOKEN, "file": "../escape.txt"}}}),
        )
        .await;
    assert_eq!(code, 422, "{v}");
}
