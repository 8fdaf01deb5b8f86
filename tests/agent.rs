//! The `llm` executor against a scripted fake OpenAI-compatible provider: a real node process,
//! real tools on a real directory, the real streaming wire format.

mod common;

use std::time::Duration;

use common::fake_openai::{
    anthropic_text, anthropic_tool, text, text_split_in_a_character, tool_call, FakeOpenAi, Reply,
};
use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

struct Agent {
    gw: Gateway,
    node: Proc,
    work: TempDir,
    dirs: (TempDir, TempDir),
    fake: FakeOpenAi,
}

async fn agent(script: Vec<Reply>) -> Agent {
    agent_with(script, false).await
}

/// A node whose provider is the fake, over the OpenAI or the Anthropic API.
async fn agent_with(script: Vec<Reply>, anthropic: bool) -> Agent {
    let fake = FakeOpenAi::start(script).await;
    let base = if anthropic {
        fake.anthropic_base()
    } else {
        fake.base_url.clone()
    };
    let env: Vec<(&str, &str)> = if anthropic {
        vec![
            ("ANTHROPIC_BASE_URL", &base),
            ("ANTHROPIC_API_KEY", "sk-ant-test-5678"),
            ("ANTHROPIC_MODEL", "fake-claude"),
        ]
    } else {
        vec![
            ("OPENAI_BASE_URL", &base),
            ("OPENAI_API_KEY", "sk-test-key-1234"),
            ("OPENAI_MODEL", "fake-model"),
        ]
    };
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    let work = TempDir::new("work");
    // The built-in agent reports tokens but no cost: the gateway's price table prices them
    // (a dollar per input token and two per output token, so sums are easy to read).
    std::fs::write(
        gdir.join("prices.json"),
        r#"{"models": {"fake-model": {"inputPerMillion": 1000000, "outputPerMillion": 2000000}}}"#,
    )
    .unwrap();
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("agent").await;
    let node = start_node_env(&gw.url, Some(&token), ndir.path(), "agent", &env);
    gw.wait_node_status("agent", "online", T).await;
    Agent {
        gw,
        node,
        work,
        dirs: (gdir, ndir),
        fake,
    }
}

impl Agent {
    async fn start(&self, goal: &str, options: Value) -> String {
        let mut options = options;
        options["cwd"] = json!(self.work.path());
        let (code, v) = self
            .gw
            .post("/api/tasks", json!({"goal": goal, "options": options}))
            .await;
        assert_eq!(code, 201, "{v}");
        assert_eq!(
            v["executor"], "llm",
            "a node with a provider defaults to the agent"
        );
        v["id"].as_str().unwrap().to_string()
    }

    async fn wait_end(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + T;
        loop {
            let (_, t) = self.gw.get(&format!("/api/tasks/{id}")).await;
            if ["completed", "error", "stopped"].contains(&t["state"].as_str().unwrap()) {
                return t;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "task did not end: {t}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the task waits for an approval; returns the pending approval.
    async fn wait_approval(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + T;
        loop {
            let (_, t) = self.gw.get(&format!("/api/tasks/{id}")).await;
            if t["status"] == "awaiting approval" {
                return t["awaitingApproval"].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no approval requested: {t}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    async fn run(&self, goal: &str) -> (String, Value) {
        let id = self.start(goal, json!({})).await;
        let t = self.wait_end(&id).await;
        (id, t)
    }

    async fn chunks(&self, id: &str) -> Vec<Value> {
        self.gw.chunks(id).await
    }

    /// What the stream holds so far (for a running task), as text.
    async fn chunks_live(&self, id: &str) -> String {
        let (_, t) = self.gw.get(&format!("/api/tasks/{id}")).await;
        t["lastEvents"].to_string()
    }

    fn conformance(&self, id: &str) -> Value {
        self.gw.conformance(id)
    }
}

fn types(chunks: &[Value]) -> Vec<&str> {
    chunks.iter().map(|c| c["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_multi_step_task_reads_edits_and_runs_and_the_file_changes() {
    let a = agent(vec![
        tool_call("call_1", "read_file", json!({"path": "greeting.txt"})),
        tool_call(
            "call_2",
            "edit_file",
            json!({"path": "greeting.txt", "old_string": "hello", "new_string": "goodbye"}),
        ),
        tool_call("call_3", "bash", json!({"command": "cat greeting.txt"})),
        text("Done: the greeting now says goodbye."),
    ])
    .await;
    std::fs::write(a.work.join("greeting.txt"), "hello world\n").unwrap();
    let (id, task) = a
        .run("Change hello to goodbye in greeting.txt and show it")
        .await;
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(
        std::fs::read_to_string(a.work.join("greeting.txt")).unwrap(),
        "goodbye world\n"
    );

    // The model saw each tool's result, with the key only in the Authorization header.
    let reqs = a.fake.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0]["model"], "fake-model");
    assert_eq!(reqs[0]["stream"], true);
    assert!(reqs[0]["tools"].as_array().unwrap().len() >= 6);
    let tool_msg = |r: &Value| r["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(tool_msg(&reqs[1])["role"], "tool");
    assert_eq!(tool_msg(&reqs[1])["tool_call_id"], "call_1");
    assert_eq!(tool_msg(&reqs[1])["content"], "hello world");
    assert!(tool_msg(&reqs[3])["content"]
        .as_str()
        .unwrap()
        .contains("goodbye world"));
    assert_eq!(
        a.fake.authorization(0).as_deref(),
        Some("Bearer sk-test-key-1234")
    );
    assert!(!reqs
        .iter()
        .any(|r| r.to_string().contains("sk-test-key-1234")));

    let chunks = a.chunks(&id).await;
    let t = types(&chunks);
    assert_eq!(t.iter().filter(|x| **x == "start-step").count(), 4, "{t:?}");
    assert_eq!(t.iter().filter(|x| **x == "tool-input-start").count(), 3);
    assert!(t.iter().filter(|x| **x == "tool-input-delta").count() >= 3);
    assert_eq!(
        t.iter().filter(|x| **x == "tool-output-available").count(),
        3
    );
    let available: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["type"] == "tool-input-available")
        .collect();
    assert_eq!(available[1]["input"]["new_string"], "goodbye");
    assert_eq!(*t.last().unwrap(), "finish");
    let meta = chunks
        .iter()
        .find(|c| c["type"] == "message-metadata")
        .unwrap();
    assert_eq!(meta["messageMetadata"]["usage"]["outputTokens"], 7);

    // The node's session log holds the whole conversation next to the frames.
    let agents = a.dirs.1.join("agents");
    let node_dir = std::fs::read_dir(&agents)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let log =
        std::fs::read_to_string(node_dir.join("sessions").join(format!("{id}.jsonl"))).unwrap();
    let convo: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|v| v.get("conversation").cloned())
        .collect();
    let roles: Vec<&str> = convo.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    assert_eq!(convo[3]["content"], "hello world");

    // Usage is stored per task and summed by node, environment and model.
    assert_eq!(
        task["usage"],
        json!({"inputTokens": 11, "outputTokens": 7, "model": "fake-model", "costUsd": 0.0})
    );
    let (code, u) = a.gw.get("/api/usage").await;
    assert_eq!(code, 200, "{u}");
    assert_eq!(u["total"]["inputTokens"], 11);
    assert_eq!(u["byModel"][0]["key"], "fake-model");
    assert_eq!(u["byNode"][0]["outputTokens"], 7);
    assert_eq!(u["total"]["costUsd"], 25.0, "{u}");
    assert_eq!(u["total"]["estimatedCostUsd"], 25.0, "{u}");
    assert_eq!(u["total"]["unpricedTokens"], 0, "{u}");
    assert_eq!(u["pricedModels"], 1);
    let today = &u["to"].as_str().unwrap()[..10];
    assert_eq!(u["daily"][0]["day"], today, "{u}");
    assert_eq!(u["daily"][0]["model"], "fake-model");
    assert_eq!(u["daily"][0]["costUsd"], 25.0);
    let out = a.gw.cli(&["usage", "--by", "day"]);
    assert!(out.contains(today) && out.contains("25.0000"), "{out}");
    let (code, _) = a.gw.get("/api/usage?from=yesterday").await;
    assert_eq!(code, 400);
    let (_, u) = a.gw.get("/api/usage?from=2000-01-01&to=2000-01-02").await;
    assert_eq!(u["total"]["tasks"], 0);

    // The real AI SDK client accepts the stream.
    let v = a.conformance(&id);
    assert_eq!(v["text"], "Done: the greeting now says goodbye.");
    let parts: Vec<&str> = v["partTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        parts.iter().filter(|p| p.starts_with("tool-")).count() == 3,
        "{parts:?}"
    );
}

#[tokio::test]
async fn rate_limits_are_retried_and_escapes_are_refused() {
    let a = agent(vec![
        Reply::Status(429, Some("0.2")),
        Reply::Status(503, None),
        tool_call("call_1", "read_file", json!({"path": "../../etc/passwd"})),
        text("I may not read that."),
    ])
    .await;
    let (id, task) = a.run("read a file outside").await;
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(a.fake.requests().len(), 4);
    let chunks = a.chunks(&id).await;
    let err = chunks
        .iter()
        .find(|c| c["type"] == "tool-output-error")
        .expect("tool error chunk");
    assert!(
        err["errorText"]
            .as_str()
            .unwrap()
            .contains("working directory"),
        "{err}"
    );
    let told = a.fake.requests()[3]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        told["content"].as_str().unwrap().starts_with("error:"),
        "{told}"
    );
}

#[tokio::test]
async fn auth_failures_end_the_task_with_a_clear_message() {
    let a = agent(vec![Reply::Status(401, None)]).await;
    let (_, task) = a.run("anything").await;
    assert_eq!(task["state"], "error");
    let e = task["error"].as_str().unwrap();
    assert!(
        e.contains("refused the API key") && e.contains(&a.fake.base_url),
        "{e}"
    );
    assert_eq!(a.fake.requests().len(), 1, "401 is not retried");
}

#[tokio::test]
async fn without_a_provider_an_llm_task_says_how_to_configure_one() {
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("plain").await;
    let _node = start_node(&gw.url, Some(&token), ndir.path(), "plain");
    gw.wait_node_status("plain", "online", T).await;
    let (_, v) = gw.post("/api/tasks", json!({"goal": "echo shell"})).await;
    assert_eq!(v["executor"], "shell");
    let (code, v) = gw
        .post("/api/tasks", json!({"goal": "fix it", "executor": "llm"}))
        .await;
    assert_eq!(code, 201, "{v}");
    let id = v["id"].as_str().unwrap();
    wait_until("llm task failed", T, || async {
        gw.get(&format!("/api/tasks/{id}")).await.1["state"] == "error"
    })
    .await;
    let (_, t) = gw.get(&format!("/api/tasks/{id}")).await;
    assert!(
        t["error"].as_str().unwrap().contains("OPENAI_BASE_URL"),
        "{t}"
    );
}

#[tokio::test]
async fn an_always_ask_task_pauses_until_approved_over_the_api() {
    let a = agent(vec![
        tool_call(
            "call_w",
            "write_file",
            json!({"path": "notes.txt", "content": "approved\n"}),
        ),
        text("Wrote the notes."),
    ])
    .await;
    let id = a
        .start("write notes", json!({"workingMode": "always-ask"}))
        .await;
    let pending = a.wait_approval(&id).await;
    assert_eq!(pending["toolName"], "write_file");
    assert_eq!(pending["input"]["path"], "notes.txt");
    // A real pause: nothing was written, the model was not called again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!a.work.join("notes.txt").exists());
    assert_eq!(a.fake.requests().len(), 1);

    let approval = pending["approvalId"].as_str().unwrap();
    let (code, v) =
        a.gw.post(
            &format!("/api/tasks/{id}/approvals/appr_nope"),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(code, 404, "{v}");
    let (code, v) =
        a.gw.post(
            &format!("/api/tasks/{id}/approvals/{approval}"),
            json!({"approve": "yes"}),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, v) =
        a.gw.post(
            &format!("/api/tasks/{id}/approvals/{approval}"),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let t = a.wait_end(&id).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(
        std::fs::read_to_string(a.work.join("notes.txt")).unwrap(),
        "approved\n"
    );
    let chunks = a.chunks(&id).await;
    let ty = types(&chunks);
    let req = ty
        .iter()
        .position(|t| *t == "tool-approval-request")
        .unwrap();
    let resp = ty
        .iter()
        .position(|t| *t == "tool-approval-response")
        .unwrap();
    let out = ty
        .iter()
        .position(|t| *t == "tool-output-available")
        .unwrap();
    assert!(req < resp && resp < out, "{ty:?}");
    let (code, _) =
        a.gw.post(
            &format!("/api/tasks/{id}/approvals/{approval}"),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(code, 409);
    a.conformance(&id);
}

/// A watcher sees an approval request before the gateway has stored it (chunks are relayed
/// first, and the writer gathers a trickle for up to 24 ms). Answering it the moment it shows
/// on the stream must work, and the task view must show it: the gateway reads the pending
/// request and the newest chunks from what it relayed, not only from SQLite.
#[tokio::test]
async fn an_approval_can_be_answered_the_moment_it_is_streamed() {
    use futures_util::StreamExt;
    let a = agent(vec![
        tool_call(
            "call_q",
            "write_file",
            json!({"path": "quick.txt", "content": "quick\n"}),
        ),
        text("Done."),
    ])
    .await;
    let id = a
        .start("write quickly", json!({"workingMode": "always-ask"}))
        .await;
    let mut body =
        a.gw.get_ok(&format!("/api/tasks/{id}/stream"))
            .await
            .bytes_stream();
    let mut parser = viber::cli::tasks::SseParser::default();
    let request = tokio::time::timeout(T, async {
        while let Some(bytes) = body.next().await {
            for ev in parser.push_bytes(&bytes.unwrap()).unwrap() {
                let c: Value = serde_json::from_str(&ev.data).unwrap_or_default();
                if c["type"] == "tool-approval-request" {
                    return c;
                }
            }
        }
        panic!("the stream ended without an approval request");
    })
    .await
    .expect("no approval request streamed");
    // The task view shows the request among its last events, stored yet or not.
    let (code, view) = a.gw.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(code, 200, "{view}");
    let mut shown = view["lastEvents"].as_array().unwrap().iter();
    assert!(
        shown.any(|e| e["chunk"] == request),
        "not among the last events: {view}"
    );
    let approval = request["approvalId"].as_str().unwrap();
    let (code, v) =
        a.gw.post(
            &format!("/api/tasks/{id}/approvals/{approval}"),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(code, 202, "answered at once: {v}");
    let t = a.wait_end(&id).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(
        std::fs::read_to_string(a.work.join("quick.txt")).unwrap(),
        "quick\n"
    );
}

/// Waits until the gateway whose data dir is `dir` has stored a chunk of `task` holding
/// `text`.
async fn wait_stored(dir: &std::path::Path, task: &str, text: &str) {
    let db = rusqlite::Connection::open(dir.join("viber.db")).unwrap();
    let deadline = std::time::Instant::now() + T;
    loop {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM task_chunk_runs WHERE task_id = ?1 AND instr(chunks, ?2) > 0",
                [task, text],
                |r| r.get(0),
            )
            .unwrap();
        if n > 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{text} never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Approval answers are commands the gateway keeps until the node acknowledges them (issue
/// 11, defect 3). First answer: sent to a frozen node, then the gateway is killed before the
/// node's ack; the node applies it from its socket buffer, and the new gateway's resend is
/// acknowledged without running the call again. Second answer: given while the node is
/// away, then the gateway is killed again; the third gateway delivers it. Each call runs
/// exactly once and the task completes.
#[tokio::test]
async fn approvals_survive_gateway_kills_and_apply_once() {
    use nix::sys::signal::Signal::{SIGCONT, SIGSTOP};
    let mut a = agent(vec![
        tool_call("call_1", "bash", json!({"command": "echo one >> ran.txt"})),
        tool_call("call_2", "bash", json!({"command": "echo two >> ran.txt"})),
        text("Both ran."),
    ])
    .await;
    let id = a
        .start("append twice", json!({"workingMode": "always-ask"}))
        .await;
    let port = a.gw.port;
    let restart = |a: &mut Agent| {
        a.gw.proc.kill9();
        a.gw = Gateway::start(a.dirs.0.path(), port, &[]);
    };

    let first = a.wait_approval(&id).await["approvalId"].clone();
    a.node.signal(SIGSTOP);
    let (code, v) =
        a.gw.post(
            &format!("/api/tasks/{id}/approvals/{}", first.as_str().unwrap()),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(
        v["delivered"], false,
        "a frozen node cannot acknowledge: {v}"
    );
    restart(&mut a);
    a.node.signal(SIGCONT);

    let mut second = first.clone();
    while second == first {
        tokio::time::sleep(Duration::from_millis(50)).await;
        second = a.wait_approval(&id).await["approvalId"].clone();
    }
    // The view shows a request as soon as it is relayed, up to 24 ms before it is stored; a
    // gateway killed in between learns of it only when the node sends it again, which a
    // frozen node cannot. So the kill waits for it to be stored.
    wait_stored(a.dirs.0.path(), &id, second.as_str().unwrap()).await;
    a.node.signal(SIGSTOP);
    restart(&mut a);
    let (code, v) =
        a.gw.post(
            &format!("/api/tasks/{id}/approvals/{}", second.as_str().unwrap()),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(code, 202, "an answer for an away node is kept: {v}");
    assert_eq!(v["delivered"], false, "{v}");
    restart(&mut a);
    a.node.signal(SIGCONT);

    let t = a.wait_end(&id).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(
        std::fs::read_to_string(a.work.join("ran.txt")).unwrap(),
        "one\ntwo\n"
    );
    let approvals: Vec<Value> = a
        .chunks(&id)
        .await
        .into_iter()
        .filter(|c| c["type"] == "tool-approval-response")
        .collect();
    assert_eq!(approvals.len(), 2, "{approvals:?}");
    assert!(approvals.iter().all(|c| c["approved"] == true));
}

#[tokio::test]
async fn a_denied_call_is_reported_to_the_model() {
    let a = agent(vec![
        tool_call("call_r", "list_files", json!({})),
        tool_call("call_b", "bash", json!({"command": "rm -rf important"})),
        text("Understood, I left it alone."),
    ])
    .await;
    std::fs::create_dir_all(a.work.join("important")).unwrap();
    let id = a
        .start(
            "clean up",
            json!({"workingMode": "agent-decides", "allowlist": ["ls"]}),
        )
        .await;
    // The read-only call ran without asking; bash waits.
    let pending = a.wait_approval(&id).await;
    assert_eq!(pending["toolName"], "bash");
    let approval = pending["approvalId"].as_str().unwrap();
    let (code, _) =
        a.gw.post(
            &format!("/api/tasks/{id}/approvals/{approval}"),
            json!({"approve": false, "reason": "keep that directory"}),
        )
        .await;
    assert_eq!(code, 202);
    let t = a.wait_end(&id).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert!(a.work.join("important").exists());
    let told = a.fake.requests()[2]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(told["tool_call_id"], "call_b");
    let content = told["content"].as_str().unwrap();
    assert!(
        content.contains("denied") && content.contains("keep that directory"),
        "{content}"
    );
    let chunks = a.chunks(&id).await;
    assert!(types(&chunks).contains(&"tool-output-denied"));
    a.conformance(&id);
}

#[tokio::test]
async fn steer_aborts_a_long_bash_call_and_the_conversation_continues() {
    let a = agent(vec![
        tool_call(
            "call_s",
            "bash",
            json!({"command": "echo started; sleep 300"}),
        ),
        text("Switched to the new instruction."),
    ])
    .await;
    let id = a.start("do the slow thing", json!({})).await;
    wait_until("bash running", T, || async {
        a.chunks_live(&id).await.contains("tool-input-available")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, v) =
        a.gw.post(
            &format!("/api/tasks/{id}/message"),
            json!({"message": "stop that and say hi", "injectionMode": "steer"}),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let t = a.wait_end(&id).await;
    assert_eq!(t["state"], "completed", "{t}");
    let reqs = a.fake.requests();
    assert_eq!(reqs.len(), 2);
    let msgs = reqs[1]["messages"].as_array().unwrap();
    let n = msgs.len();
    assert_eq!(msgs[n - 2]["role"], "tool");
    assert!(msgs[n - 2]["content"]
        .as_str()
        .unwrap()
        .contains("interrupted"));
    assert_eq!(
        msgs[n - 1],
        json!({"role": "user", "content": "stop that and say hi"})
    );
    a.conformance(&id);
}

#[tokio::test]
async fn a_malformed_provider_stream_ends_the_step_with_an_error() {
    let a = agent(vec![Reply::Raw(
        "data: {\"choices\": [{\"delta\": {\"content\": \"par\"}}]}\n\ndata: {not json\n\n",
    )])
    .await;
    let (id, t) = a.run("anything").await;
    assert_eq!(t["state"], "error", "{t}");
    assert!(t["error"].as_str().unwrap().contains("malformed"), "{t}");
    let chunks = a.chunks(&id).await;
    let ty = types(&chunks);
    // One error, and the text part the broken stream had opened is closed.
    assert_eq!(ty.iter().filter(|t| **t == "error").count(), 1, "{ty:?}");
    assert_eq!(
        ty.iter().filter(|t| **t == "text-start").count(),
        ty.iter().filter(|t| **t == "text-end").count(),
        "{ty:?}"
    );
    let text_end = ty.iter().position(|t| *t == "text-end").unwrap();
    let error = ty.iter().position(|t| *t == "error").unwrap();
    assert!(text_end < error, "{ty:?}");
    a.conformance(&id);
}

#[tokio::test]
async fn the_agent_speaks_the_anthropic_messages_api() {
    let a = agent_with(
        vec![
            anthropic_tool("toolu_1", "read_file", json!({"path": "todo.txt"})),
            anthropic_text("The file says: buy milk."),
        ],
        true,
    )
    .await;
    std::fs::write(a.work.join("todo.txt"), "buy milk\n").unwrap();
    let (id, task) = a.run("what does todo.txt say?").await;
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(
        task["usage"],
        json!({"inputTokens": 41, "outputTokens": 24, "model": "fake-claude", "costUsd": 0.0})
    );
    assert_eq!(
        a.fake.header(0, "x-api-key").as_deref(),
        Some("sk-ant-test-5678")
    );
    assert_eq!(
        a.fake.header(0, "anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    let reqs = a.fake.requests();
    assert_eq!(reqs[0]["model"], "fake-claude");
    assert!(reqs[0]["system"].as_str().unwrap().contains("coding agent"));
    assert_eq!(reqs[0]["tools"][0]["input_schema"]["type"], "object");
    // The tool result went back as a tool_result block after the assistant's tool_use.
    let msgs = reqs[1]["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(
        msgs[1]["content"][0],
        json!({"type": "text", "text": "Let me look."})
    );
    assert_eq!(msgs[1]["content"][1]["type"], "tool_use");
    assert_eq!(msgs[1]["content"][1]["input"], json!({"path": "todo.txt"}));
    assert_eq!(
        msgs[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "buy milk"})
    );
    let v = a.conformance(&id);
    assert_eq!(v["text"], "Let me look.The file says: buy milk.");
}

#[tokio::test]
async fn an_unanswered_approval_is_denied_after_its_timeout() {
    let a = agent(vec![
        tool_call(
            "call_t",
            "bash",
            json!({"command": "touch should-not-exist"}),
        ),
        text("No answer, so I did not run it."),
    ])
    .await;
    let id = a
        .start(
            "touch a file",
            json!({"workingMode": "always-ask", "approvalTimeoutSecs": 1}),
        )
        .await;
    let t = a.wait_end(&id).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert!(!a.work.join("should-not-exist").exists());
    let told = a.fake.requests()[1]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        told["content"]
            .as_str()
            .unwrap()
            .contains("no answer within 1 s"),
        "{told}"
    );
    let chunks = a.chunks(&id).await;
    let resp = chunks
        .iter()
        .find(|c| c["type"] == "tool-approval-response")
        .unwrap();
    assert_eq!(resp["approved"], false);
}

#[tokio::test]
async fn provider_settings_can_come_from_the_nodes_config_file() {
    let fake = FakeOpenAi::start(vec![text("configured by file")]).await;
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    std::fs::write(
        ndir.join("llm.json"),
        json!({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-file", "OPENAI_MODEL": "file-model"}).to_string(),
    )
    .unwrap();
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("filecfg").await;
    let _node = start_node(&gw.url, Some(&token), ndir.path(), "filecfg");
    gw.wait_node_status("filecfg", "online", T).await;
    let (_, v) = gw.post("/api/tasks", json!({"goal": "hi"})).await;
    assert_eq!(v["executor"], "llm", "{v}");
    let id = v["id"].as_str().unwrap();
    wait_until("task done", T, || async {
        gw.get(&format!("/api/tasks/{id}")).await.1["state"] == "completed"
    })
    .await;
    assert_eq!(fake.requests()[0]["model"], "file-model");
    assert_eq!(fake.authorization(0).as_deref(), Some("Bearer sk-file"));
}

/// A 4-byte character that a provider's stream splits across two TCP writes arrives whole
/// in the task's output.
#[tokio::test]
async fn a_character_split_across_tcp_writes_arrives_whole() {
    let answer = "😀 naïve → done";
    let a = agent(vec![text_split_in_a_character(answer)]).await;
    let (id, t) = a.run("say it").await;
    assert_eq!(t["state"], "completed", "{t}");
    let text: String = a
        .chunks(&id)
        .await
        .iter()
        .filter(|c| c["type"] == "text-delta")
        .map(|c| c["delta"].as_str().unwrap().to_string())
        .collect();
    assert!(text.contains(answer), "{text:?}");
    assert!(!text.contains('\u{fffd}'), "{text:?}");
}

/// A tool call whose input is larger than a frame (a model writing a 1.3 MB file): the file is
/// written whole, the stream shows the call with the long content cut, and the task
/// completes instead of the node resending a too-large frame for ever.
#[tokio::test]
async fn a_tool_call_larger_than_a_frame_runs_and_streams_cut() {
    // Over the 1 MiB frame limit, under the fake provider's 2 MB request limit.
    let content = "0123456789abcdef\n".repeat(1300 * 1024 / 17);
    let a = agent(vec![
        tool_call(
            "call_big",
            "write_file",
            json!({"path": "big.txt", "content": content}),
        ),
        text("Wrote it."),
    ])
    .await;
    let (id, t) = a.run("write a big file").await;
    assert_eq!(t["state"], "completed", "{}", t["error"]);
    assert!(std::fs::read_to_string(a.work.join("big.txt")).unwrap() == content);
    let chunks = a.chunks(&id).await;
    let input = chunks
        .iter()
        .find(|c| c["type"] == "tool-input-available")
        .unwrap();
    assert!(input["input"]["content"]
        .as_str()
        .unwrap()
        .contains("[cut: "));
}

/// Issue 13: the agent's `bash` tool runs in the node's sandbox: the node's key, its data
/// dir and its provider key are out of reach, the working dir is the tool's to write.
#[tokio::test]
async fn the_bash_tool_cannot_reach_the_nodes_keys() {
    let a = agent(vec![]).await;
    let ndir = a.dirs.1.path().display().to_string();
    a.fake.set_script(vec![
        tool_call(
            "call_1",
            "bash",
            json!({"command": format!(
                "for f in node-key state.key node.json; do [ -e {ndir}/$f ] && echo \"SEES $f\"; done; \
                 echo \"key=[$OPENAI_API_KEY] home=[$VIBER_HOME]\"; echo made > made.txt; echo finished"
            )}),
        ),
        text("done"),
    ]);
    assert!(a.dirs.1.join("node-key").exists());
    let (_, task) = a.run("look around").await;
    assert_eq!(task["state"], "completed", "{task}");
    let reqs = a.fake.requests();
    let out = reqs[1]["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(out.contains("finished"), "{out}");
    assert!(!out.contains("SEES"), "{out}");
    assert!(out.contains("key=[] home=[]"), "{out}");
    assert_eq!(
        std::fs::read_to_string(a.work.join("made.txt")).unwrap(),
        "made\n"
    );
}

/// The terminal dashboard (`viber tui`) driven in tmux at 80x24: it lists the environment,
/// starts a thread whose live output it shows, and approves the tool call that waits.
#[tokio::test(flavor = "multi_thread")]
async fn the_tui_starts_a_thread_shows_its_output_and_approves_a_tool_call() {
    // One answer with text, then a tool call; then the final text.
    let Reply::Stream(mut first) = tool_call(
        "call_t",
        "write_file",
        json!({"path": "notes.txt", "content": "from the tui\n"}),
    ) else {
        unreachable!()
    };
    first.insert(
        0,
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "fake",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me write the notes."}, "finish_reason": null}]}),
    );
    let a = agent(vec![
        Reply::Stream(first),
        text("Wrote the notes from the dashboard."),
    ])
    .await;
    let node_id = a.gw.nodes().await[0]["id"].clone();
    a.gw.env_bound(
        json!({"name": "tui-env", "type": "manual", "metadata": {"workingMode": "always-ask"}}),
        &node_id,
    )
    .await;

    let tmux = TempDir::new("tui");
    let sock = tmux.join("tmux.sock");
    let sock = sock.to_str().unwrap();
    let status = std::process::Command::new("tmux")
        .args([
            "-S",
            sock,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
        ])
        .arg(format!(
            "VIBER_TOKEN={} TERM=xterm-256color {BIN} tui --gateway {} 2>{}",
            a.gw.token,
            a.gw.url,
            tmux.join("tui.err").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            kill_tmux_server(std::path::Path::new(&self.0));
        }
    }
    let _kill = Kill(sock.to_string());
    let screen = || {
        let out = std::process::Command::new("tmux")
            .args(["-S", sock, "capture-pane", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let keys = |k: &[&str]| {
        let ok = std::process::Command::new("tmux")
            .args(["-S", sock, "send-keys"])
            .args(k)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    let wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + T;
        loop {
            let s = screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the dashboard never showed {what:?}:\n{s}\n{}",
                std::fs::read_to_string(tmux.join("tui.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // The main screen fits 80x24: the environment, the node online, no threads yet.
    let s = wait_for("tui-env");
    assert!(s.contains("1/1 nodes online"), "{s}");
    assert!(s.contains("press n to start one"), "{s}");
    assert!(s.lines().count() <= 24 && s.lines().all(|l| l.chars().count() <= 80));

    // A new thread from the dashboard: it opens, shows the agent's text live, and stops at
    // the tool call that waits for approval.
    keys(&["n"]);
    wait_for("New thread, first message");
    keys(&["-l", "write the notes"]);
    keys(&["Enter"]);
    wait_for("Let me write the notes.");
    let s = wait_for("Approval needed");
    assert!(s.contains("write_file") && s.contains("notes.txt"), "{s}");
    assert!(!a.fake.requests().is_empty());
    let id = a.gw.get("/api/tasks").await.1["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = a.gw.get(&format!("/api/tasks/{id}")).await.1;
    assert_eq!(task["status"], "awaiting approval", "{task}");

    // `a` approves; the run finishes and the dashboard shows its end.
    keys(&["a"]);
    wait_for("Wrote the notes from the dashboard.");
    wait_for("[completed]");
    let (_, t) = a.gw.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(t["state"], "completed", "{t}");

    // Back on the main screen the thread is listed as completed; q quits.
    keys(&["Escape"]);
    let s = wait_for("write the notes");
    assert!(s.contains("completed"), "{s}");
    keys(&["q"]);
    let deadline = std::time::Instant::now() + T;
    while screen().contains("tui-env") {
        assert!(std::time::Instant::now() < deadline, "q did not quit");
        std::thread::sleep(Duration::from_millis(100));
    }
}
