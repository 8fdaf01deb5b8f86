//! Tasks end to end: real gateway and node processes, real bash, SSE over real sockets.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use viber::cli::tasks::SseParser;

const T: Duration = Duration::from_secs(30);

/// A gateway with one enrolled, online node.
struct Cluster {
    gw: Gateway,
    node: Proc,
    node_id: String,
    work: TempDir,
    _gdir: TempDir,
    ndir: TempDir,
}

impl Cluster {
    async fn start(extra: &[&str]) -> Cluster {
        let gdir = TempDir::new("gw");
        let ndir = TempDir::new("node");
        let work = TempDir::new("work");
        let gw = Gateway::start(gdir.path(), 0, extra);
        let token = gw.enroll("worker").await;
        let node = start_node(&gw.url, Some(&token), ndir.path(), "worker");
        gw.wait_node_status("worker", "online", T).await;
        let node_id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
        Cluster {
            gw,
            node,
            node_id,
            work,
            _gdir: gdir,
            ndir,
        }
    }

    /// Creates a shell task running in the scratch dir; returns its id.
    async fn task(&self, goal: &str) -> String {
        self.task_with(json!({ "goal": goal, "options": { "cwd": self.work.path() } }))
            .await
    }

    async fn task_with(&self, body: Value) -> String {
        let (status, v) = self.gw.post("/api/tasks", body).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn wait_state(&self, id: &str, state: &str) -> Value {
        wait_task_state(&self.gw, id, state).await
    }

    fn stream_url(&self, id: &str) -> String {
        format!("{}/api/tasks/{id}/stream", self.gw.url)
    }
}

async fn wait_task_state(gw: &Gateway, id: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let (status, v) = gw.get(&format!("/api/tasks/{id}")).await;
        assert_eq!(status, 200, "{v}");
        if v["state"] == state {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "task {id} not {state}: {v}\ngateway log:\n{}",
                gw.proc.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One SSE event as received: (id, data).
type Event = (Option<u64>, String);

/// Reads an SSE stream until `[DONE]` or the end, calling `on_event` for each event.
async fn read_stream(
    url: &str,
    token: &str,
    last_event_id: Option<u64>,
    mut on_event: impl FnMut(&Event) -> bool,
) -> (Vec<Event>, bool) {
    let mut req = reqwest::Client::new().get(url).bearer_auth(token);
    if let Some(l) = last_event_id {
        req = req.header("last-event-id", l.to_string());
    }
    let res = req.send().await.expect("stream request");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-vercel-ai-ui-message-stream"], "v1");
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.bytes_stream();
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    while let Ok(Some(Ok(bytes))) = tokio::time::timeout(T, body.next()).await {
        for ev in parser.push_bytes(&bytes).unwrap() {
            if ev.data == "[DONE]" {
                return (events, true);
            }
            let e = (ev.id.as_deref().map(|i| i.parse().unwrap()), ev.data);
            let keep_going = on_event(&e);
            events.push(e);
            if !keep_going {
                return (events, false);
            }
        }
    }
    (events, false)
}

async fn full_stream(url: &str, token: &str) -> Vec<Event> {
    let (events, done) = read_stream(url, token, None, |_| true).await;
    assert!(done, "stream ended without [DONE]: {events:?}");
    events
}

/// The concatenated text deltas of a stream.
fn text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter(|c| c["type"] == "text-delta")
        .map(|c| c["delta"].as_str().unwrap().to_string())
        .collect()
}

fn count_type(events: &[Event], t: &str) -> usize {
    events
        .iter()
        .filter(|(_, d)| serde_json::from_str::<Value>(d).is_ok_and(|c| c["type"] == t))
        .count()
}

fn assert_ids_strictly_increase(events: &[Event]) {
    let ids: Vec<u64> = events
        .iter()
        .map(|(i, _)| i.expect("every event has an id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
}

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), b"").unwrap();
}

/// A script fragment that waits for `name` to appear in the working dir.
fn wait_for(name: &str) -> String {
    format!("while [ ! -e {name} ]; do sleep 0.02; done")
}

#[tokio::test]
async fn a_task_streams_live_to_two_watchers_and_replays_fully_to_a_late_one() {
    let c = Cluster::start(&[]).await;
    // Prints half, waits for the test to see it live, prints the rest.
    let goal = format!(
        "for i in $(seq 1 20); do echo \"line $i\"; done; {}; for i in $(seq 21 40); do echo \"line $i\"; done; echo oops >&2",
        wait_for("go")
    );
    let id = c.task(&goal).await;
    let url = c.stream_url(&id);
    let work = c.work.path().to_path_buf();
    let w1 = tokio::spawn({
        let (url, token, work) = (url.clone(), c.gw.token.clone(), work.clone());
        async move {
            let mut seen = String::new();
            let (events, done) = read_stream(&url, &token, None, |(_, d)| {
                seen.push_str(&text(&[(None, d.clone())]));
                if seen.contains("line 20\n") {
                    // Output arrived while the task was still running.
                    touch(&work, "go");
                }
                true
            })
            .await;
            assert!(done);
            events
        }
    });
    let w2 = tokio::spawn({
        let (url, token) = (url.clone(), c.gw.token.clone());
        async move { full_stream(&url, &token).await }
    });
    let (e1, e2) = (w1.await.unwrap(), w2.await.unwrap());
    let done = c.wait_state(&id, "completed").await;
    assert_eq!(done["exitCode"], 0);
    let late = full_stream(&url, &c.gw.token).await;

    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect::<String>() + "oops\n";
    for events in [&e1, &e2, &late] {
        assert_eq!(text(events), expected);
        assert_ids_strictly_increase(events);
    }
    assert_eq!(e1, e2);
    assert_eq!(e1, late);
    // Framing: start ... finish, with the text part opened and closed.
    let first: Value = serde_json::from_str(&late[0].1).unwrap();
    assert_eq!(first["type"], "start");
    let last: Value = serde_json::from_str(&late.last().unwrap().1).unwrap();
    assert_eq!(last, json!({"type": "finish", "finishReason": "stop"}));
    assert_eq!(count_type(&late, "text-start"), 1);
    assert_eq!(count_type(&late, "text-end"), 1);

    // Resume after an id: exactly the events after it.
    let mid = late[5].0.unwrap();
    let (rest, done) = read_stream(&url, &c.gw.token, Some(mid), |_| true).await;
    assert!(done);
    assert_eq!(rest, late[6..].to_vec());

    // The node kept a durable session log of the run.
    let log = c
        .ndir
        .join("agents")
        .join(&c.node_id)
        .join("sessions")
        .join(format!("{id}.jsonl"));
    let log = std::fs::read_to_string(&log).expect("session log");
    assert!(log.contains("line 40"), "{log}");
    assert!(log.lines().last().unwrap().contains("task:completed"));

    // The task is listed, filterable.
    let (_, v) =
        c.gw.get(&format!("/api/tasks?state=completed&nodeId={}", c.node_id))
            .await;
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1);
    let (_, v) = c.gw.get("/api/tasks?state=running").await;
    assert!(v["tasks"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn gateway_killed_mid_task_loses_nothing() {
    let mut c = Cluster::start(&[]).await;
    let n = 300;
    let goal = format!("for i in $(seq 1 {n}); do echo \"line $i\"; sleep 0.01; done");
    let id = c.task(&goal).await;
    let url = c.stream_url(&id);

    // A watcher reads part of the stream, then the gateway dies under it.
    let (before, done) =
        read_stream(&url, &c.gw.token, None, |(_, d)| !d.contains("line 40\\n")).await;
    assert!(!done);
    let port = c.gw.port;
    c.gw.proc.kill9();
    // The task keeps running on the node while its gateway is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(c.node.is_running());
    c.gw = Gateway::start(c._gdir.path(), port, &[]);

    // The watcher resumes after the last id it saw...
    let last_seen = before.last().unwrap().0.unwrap();
    let (after, done) = read_stream(&url, &c.gw.token, Some(last_seen), |_| true).await;
    assert!(done, "resumed stream did not finish");
    let mut joined = before.clone();
    joined.extend(after);
    assert_ids_strictly_increase(&joined);
    let expected: String = (1..=n).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text(&joined), expected);

    // ...and a stream from seq 0 has every line exactly once, in order.
    let all = full_stream(&url, &c.gw.token).await;
    assert_eq!(text(&all), expected);
    assert_eq!(all, joined);
    let done = c.wait_state(&id, "completed").await;
    assert_eq!(done["exitCode"], 0);
}

#[tokio::test]
async fn stop_kills_the_whole_process_tree_with_escalation() {
    let c = Cluster::start(&[]).await;
    // A tree of processes; the inner shell ignores SIGINT and SIGTERM, so only SIGKILL ends it.
    // They run in a sandbox with PIDs of its own: the test finds them by their command lines
    // (the subshell is a fork of the script's bash, so it has the same one).
    let goal = "trap '' INT TERM; \
                (trap '' INT TERM; sleep 300.11 & wait) & \
                sleep 300.12 & \
                echo ready; wait";
    let tree = [
        (format!("bash\0-c\0{goal}\0"), 2),
        ("sleep\x00300.11\x00".to_string(), 1),
        ("sleep\x00300.12\x00".to_string(), 1),
    ];
    let id = c
        .task_with(json!({
            "goal": goal,
            "options": { "cwd": c.work.path(), "stopGraceMs": 300 }
        }))
        .await;
    let url = c.stream_url(&id);
    let (_, _) = read_stream(&url, &c.gw.token, None, |(_, d)| !d.contains("ready")).await;
    for (cmdline, n) in &tree {
        wait_until(&format!("{n} of {cmdline:?} running"), T, || async {
            processes_with_cmdline(cmdline) == *n
        })
        .await;
    }

    let (status, v) = c.gw.post(&format!("/api/tasks/{id}/stop"), json!({})).await;
    assert_eq!(status, 202, "{v}");
    let stopped = c.wait_state(&id, "stopped").await;
    assert_eq!(stopped["error"], "stopped by operator");
    for (cmdline, _) in &tree {
        wait_until(&format!("{cmdline:?} to exit"), T, || async {
            processes_with_cmdline(cmdline) == 0
        })
        .await;
    }
    // The stream ends with an abort chunk and [DONE].
    let events = full_stream(&url, &c.gw.token).await;
    assert_eq!(count_type(&events, "abort"), 1);

    // Stopping again is a conflict.
    let (status, v) = c.gw.post(&format!("/api/tasks/{id}/stop"), json!({})).await;
    assert_eq!(status, 409, "{v}");
}

#[tokio::test]
async fn an_idempotent_retry_creates_one_task() {
    let c = Cluster::start(&[]).await;
    let send = || {
        c.gw.http
            .post(format!("{}/api/tasks", c.gw.url))
            .bearer_auth(&c.gw.token)
            .header("idempotency-key", "retry-me-1")
            .json(&json!({"goal": "echo once >> count"}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    let (_, list) = c.gw.get("/api/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);

    // Same for follow-up messages.
    let id = c.task(&format!("{}; echo end", wait_for("go"))).await;
    for _ in 0..2 {
        let res =
            c.gw.http
                .post(format!("{}/api/tasks/{id}/message", c.gw.url))
                .bearer_auth(&c.gw.token)
                .header("idempotency-key", "msg-1")
                .json(&json!({"message": "echo followup", "injectionMode": "followup"}))
                .send()
                .await
                .unwrap();
        assert_eq!(res.status(), 202);
    }
    touch(c.work.path(), "go");
    c.wait_state(&id, "completed").await;
    let events = full_stream(&c.stream_url(&id), &c.gw.token).await;
    assert_eq!(text(&events), "end\nfollowup\n");
}

async fn message(c: &Cluster, id: &str, mode: &str, msg: &str) {
    let (status, v) =
        c.gw.post(
            &format!("/api/tasks/{id}/message"),
            json!({"message": msg, "injectionMode": mode}),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    // Applied by the node before the answer: what the test does next cannot overtake it.
    assert_eq!(v["delivered"], true, "{v}");
}

#[tokio::test]
async fn injection_modes_followup_collect_and_steer() {
    let c = Cluster::start(&[]).await;
    let w = c.work.path();

    // followup: each message is a run after the current one, in order.
    let id = c.task(&format!("echo first; {}", wait_for("go1"))).await;
    message(&c, &id, "followup", "echo second").await;
    message(&c, &id, "followup", "echo third").await;
    touch(w, "go1");
    c.wait_state(&id, "completed").await;
    let ev = full_stream(&c.stream_url(&id), &c.gw.token).await;
    assert_eq!(text(&ev), "first\nsecond\nthird\n");
    assert_eq!(count_type(&ev, "start-step"), 3);

    // collect: buffered messages merge into one follow-up run.
    let id = c.task(&format!("echo A; {}", wait_for("go2"))).await;
    message(&c, &id, "collect", "echo c1").await;
    message(&c, &id, "collect", "echo c2").await;
    touch(w, "go2");
    c.wait_state(&id, "completed").await;
    let ev = full_stream(&c.stream_url(&id), &c.gw.token).await;
    assert_eq!(text(&ev), "A\nc1\nc2\n");
    assert_eq!(count_type(&ev, "start-step"), 2);

    // steer: the current run is aborted at once and the message runs next.
    let id = c.task("echo S; sleep 300; echo never").await;
    let url = c.stream_url(&id);
    read_stream(&url, &c.gw.token, None, |(_, d)| !d.contains("S\\n")).await;
    message(&c, &id, "steer", "echo steered").await;
    let done = c.wait_state(&id, "completed").await;
    assert_eq!(done["exitCode"], 0);
    let ev = full_stream(&url, &c.gw.token).await;
    assert_eq!(text(&ev), "S\nsteered\n");

    // A failing last run fails the task with its exit code.
    let id = c.task("echo before; exit 7").await;
    let failed = c.wait_state(&id, "error").await;
    assert_eq!(failed["exitCode"], 7);
    let ev = full_stream(&c.stream_url(&id), &c.gw.token).await;
    assert_eq!(count_type(&ev, "error"), 1);
}

#[tokio::test]
async fn the_ai_sdk_parses_our_stream() {
    let c = Cluster::start(&[]).await;
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let token = c.gw.token.clone();
    let node = move |args: &[&str]| {
        let out = std::process::Command::new("node")
            .arg(js.join("conformance.mjs"))
            .args(args)
            .env("VIBER_TOKEN", &token)
            .output()
            .expect("node runs (npm ci --prefix tests/js)");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "conformance {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str::<Value>(stdout.trim()).unwrap()
    };
    // The harness itself rejects bad streams (a null, a wrong field, a bad order).
    node(&["selftest"]);

    // Live: the client attaches while the task runs (multi-byte text, quotes, two runs).
    let id = c
        .task(&format!(
            "printf 'héllo \"wörld\" ✓\\n'; {}; echo 'tab\there' >&2",
            wait_for("go")
        ))
        .await;
    message(&c, &id, "followup", "echo second run").await;
    let url = c.stream_url(&id);
    let live = {
        let url = url.clone();
        let node = node.clone();
        tokio::task::spawn_blocking(move || node(&["stream", &url]))
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    touch(c.work.path(), "go");
    let live = live.await.unwrap();
    let expected = "héllo \"wörld\" ✓\ntab\there\nsecond run\n";
    assert_eq!(live["text"], expected, "{live}");
    assert_eq!(live["role"], "assistant");
    assert_eq!(live["id"], id.as_str());

    // Replayed after the end, and resumed from an id.
    c.wait_state(&id, "completed").await;
    let replay = node(&["stream", &url]);
    assert_eq!(replay["text"], expected);

    // A failed task's stream parses too (error chunk, finish reason error).
    let id = c.task("echo partial; exit 3").await;
    c.wait_state(&id, "error").await;
    let v = node(&["stream", &c.stream_url(&id)]);
    assert_eq!(v["text"], "partial\n");
    assert_eq!(v["errors"], json!(["exited with status 3"]));
}

#[tokio::test]
async fn bad_task_requests_are_refused_clearly() {
    let c = Cluster::start(&[]).await;
    for (method, path) in [
        ("GET", "/api/tasks/task_nope"),
        ("POST", "/api/tasks/task_nope/stop"),
        ("GET", "/api/tasks/task_nope/stream"),
    ] {
        let (status, v) =
            c.gw.request(method.parse().unwrap(), path, Some(json!({})))
                .await;
        assert_eq!(status, 404, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "not_found");
    }
    let (status, _) =
        c.gw.post("/api/tasks/task_nope/message", json!({"message": "hi"}))
            .await;
    assert_eq!(status, 404);

    let id = c.task("echo done").await;
    c.wait_state(&id, "completed").await;
    let (status, _) = c.gw.post(&format!("/api/tasks/{id}/stop"), json!({})).await;
    assert_eq!(status, 409);
    let (status, _) =
        c.gw.post(
            &format!("/api/tasks/{id}/message"),
            json!({"message": "more"}),
        )
        .await;
    assert_eq!(status, 409);

    let running = c.task(&wait_for("never")).await;
    let (status, v) =
        c.gw.post(
            &format!("/api/tasks/{running}/message"),
            json!({"message": "x", "injectionMode": "shout"}),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    let (status, _) =
        c.gw.post(&format!("/api/tasks/{running}/stop"), json!({}))
            .await;
    assert_eq!(status, 202);

    let res =
        c.gw.http
            .get(c.stream_url(&id))
            .bearer_auth(&c.gw.token)
            .header("last-event-id", "abc")
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 400);

    let huge = "x".repeat(300 * 1024);
    let (status, v) = c.gw.post("/api/tasks", json!({ "goal": huge })).await;
    assert_eq!(status, 413, "{v}");
    let (status, _) = c.gw.post("/api/tasks", json!({ "goal": "  " })).await;
    assert_eq!(status, 422);
    let (status, _) =
        c.gw.post("/api/tasks", json!({ "goal": "x", "executor": "nope" }))
            .await;
    assert_eq!(status, 422);
    let (status, _) =
        c.gw.post("/api/tasks", json!({ "goal": "x", "nodeId": "node_nope" }))
            .await;
    assert_eq!(status, 422);
    let (status, _) = c.gw.get("/api/tasks?state=sideways").await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn a_node_cannot_report_on_a_task_it_does_not_own() {
    let c = Cluster::start(&[]).await;
    let id = c.task(&wait_for("go")).await;
    let kdir = TempDir::new("keys");
    let key = new_key(&kdir, "intruder");
    let token = c.gw.enroll("intruder").await;
    let (mut ws, got) = handshake(&c.gw.ws_url(), &key, &token).await;
    assert!(matches!(
        got,
        Got::Frame(viber::protocol::Frame::HelloOk(_))
    ));
    send_frame(
        &mut ws,
        &viber::protocol::Frame::chunk(
            id.clone(),
            99,
            &json!({"type": "text-delta", "id": "x", "delta": "forged"}),
        ),
    )
    .await;
    match recv_no_ping(&mut ws).await {
        Got::Frame(viber::protocol::Frame::Error(e)) => {
            assert_eq!(e.code, viber::protocol::ErrorCode::NotOwner)
        }
        other => panic!("{other:?}"),
    }
    assert!(c.gw.proc.logs().contains("does not own"));
    // Progress for another node's task is refused the same way (issue 12, item 11).
    send_frame(
        &mut ws,
        &viber::protocol::Frame::TaskProgress {
            task_id: id.clone(),
            event: json!({"kind": "forged"}),
        },
    )
    .await;
    match recv_no_ping(&mut ws).await {
        Got::Frame(viber::protocol::Frame::Error(e)) => {
            assert_eq!(e.code, viber::protocol::ErrorCode::NotOwner)
        }
        other => panic!("{other:?}"),
    }
    touch(c.work.path(), "go");
    c.wait_state(&id, "completed").await;
    let events = full_stream(&c.stream_url(&id), &c.gw.token).await;
    assert!(!text(&events).contains("forged"));
}

#[tokio::test]
async fn a_node_that_stays_away_has_its_tasks_failed_as_lost() {
    let mut c = Cluster::start(&["--node-grace-secs", "1"]).await;
    let id = c.task("sleep 300").await;
    c.wait_state(&id, "running").await;
    c.node.kill9();
    let failed = c.wait_state(&id, "error").await;
    assert!(
        failed["error"].as_str().unwrap().contains("node lost"),
        "{failed}"
    );
    // Its stream ends.
    full_stream(&c.stream_url(&id), &c.gw.token).await;
}

#[tokio::test]
async fn cli_runs_a_task_streams_it_and_exits_with_its_code() {
    let c = Cluster::start(&[]).await;
    let gdir = c._gdir.path().to_str().unwrap().to_string();
    let out = std::process::Command::new(BIN)
        .args([
            "task",
            "run",
            "--gateway",
            &c.gw.url,
            "--data-dir",
            &gdir,
            "--",
        ])
        .arg("echo from-cli; exit 4")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-cli\n");

    let out = std::process::Command::new(BIN)
        .args(["task", "list", "--gateway", &c.gw.url, "--data-dir", &gdir])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("error") && listing.contains("echo from-cli"),
        "{listing}"
    );
    let id = listing
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let out = std::process::Command::new(BIN)
        .args([
            "task",
            "logs",
            &id,
            "--gateway",
            &c.gw.url,
            "--data-dir",
            &gdir,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-cli\n");

    // Events: task state changes are pushed.
    let mut body = c.gw.get_ok("/api/events").await.bytes_stream();
    let id = c.task("echo evented").await;
    let mut parser = SseParser::default();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &Value| e["type"] == "task.state" && e["state"] == "completed")
    {
        let bytes = tokio::time::timeout(T, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for ev in parser.push_bytes(&bytes).unwrap() {
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(ev.event.as_deref(), v["type"].as_str());
            if v["taskId"] == id.as_str() {
                seen.push(v);
            }
        }
    }
    let states: Vec<&str> = seen.iter().filter_map(|e| e["state"].as_str()).collect();
    assert_eq!(states, ["pending", "running", "completed"]);
}

#[tokio::test]
async fn a_node_shutting_down_stops_its_tasks_and_reports_them() {
    let mut c = Cluster::start(&[]).await;
    let id = c.task("echo up; sleep 300").await;
    read_stream(&c.stream_url(&id), &c.gw.token, None, |(_, d)| {
        !d.contains("up\\n")
    })
    .await;
    let status = c.node.terminate();
    assert!(status.success(), "{status:?}\n{}", c.node.logs());
    let v = c.wait_state(&id, "stopped").await;
    assert!(
        v["error"].as_str().unwrap().contains("shutting down"),
        "{v}"
    );
    let events = full_stream(&c.stream_url(&id), &c.gw.token).await;
    assert_eq!(text(&events), "up\n");
}

/// More tasks wait for an offline node than its connection's outgoing queue holds (1024):
/// when it connects, the gateway must hand them over while the connection already runs,
/// not fill the queue before anything drains it (which timed the handshake out forever).
#[tokio::test]
async fn a_node_that_comes_back_to_2000_waiting_tasks_runs_them_all() {
    let mut c = Cluster::start(&[]).await;
    c.node.terminate();
    c.gw.wait_node_status("worker", "offline", T).await;
    const N: usize = 2000;
    for i in 0..N {
        c.task_with(json!({ "nodeId": c.node_id, "goal": format!("echo {i}"),
                            "options": { "cwd": c.work.path() } }))
            .await;
    }
    c.node = start_node(&c.gw.url, None, c.ndir.path(), "worker");
    let unfinished = |state: &'static str| {
        let gw = &c.gw;
        async move {
            let (_, v) = gw
                .get(&format!("/api/tasks?state={state}&limit=1000"))
                .await;
            v["tasks"].as_array().unwrap().len()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let left = unfinished("pending").await + unfinished("running").await;
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} tasks still unfinished; node log:\n{}",
            c.node.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, errors) = c.gw.get("/api/tasks?state=error&limit=10").await;
    assert_eq!(errors["tasks"].as_array().unwrap().len(), 0, "{errors}");
    let (_, done) = c.gw.get("/api/tasks?state=completed&limit=1000").await;
    assert_eq!(done["tasks"].as_array().unwrap().len(), 1000);
}

/// Retries of one request that arrive together still create one task; other keys go on.
#[tokio::test]
async fn concurrent_retries_with_one_key_create_one_task() {
    let c = Cluster::start(&[]).await;
    let send = |key: &'static str| {
        c.gw.http
            .post(format!("{}/api/tasks", c.gw.url))
            .bearer_auth(&c.gw.token)
            .header("idempotency-key", key)
            .json(&json!({"goal": "true", "options": { "cwd": c.work.path() }}))
            .send()
    };
    let same = futures_util::future::join_all((0..10).map(|_| send("together-1"))).await;
    let other = send("another-1").await.unwrap();
    assert_eq!(other.status(), 201);
    let mut ids = std::collections::BTreeSet::new();
    for res in same {
        let res = res.unwrap();
        assert_eq!(res.status(), 201);
        let v: Value = res.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (_, list) = c.gw.get("/api/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 2);
}

/// A partition without a restart: the node freezes (SIGSTOP) past the heartbeat window while
/// its task keeps printing, the gateway marks it offline, then it thaws and reconnects.
/// Every line arrives exactly once, in order, and the task completes.
#[tokio::test]
async fn a_frozen_node_comes_back_and_its_task_loses_nothing() {
    use nix::sys::signal::Signal;
    let c = Cluster::start(&[]).await;
    let id = c
        .task("for i in $(seq 1 60); do echo line-$i; sleep 0.05; done")
        .await;
    c.wait_state(&id, "running").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.node.signal(Signal::SIGSTOP);
    c.gw.wait_node_status("worker", "offline", T).await;
    // The task's shell keeps running and writing while its node is frozen.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.node.signal(Signal::SIGCONT);
    c.gw.wait_node_status("worker", "online", Duration::from_secs(40))
        .await;
    c.wait_state(&id, "completed").await;
    let events = full_stream(&c.stream_url(&id), &c.gw.token).await;
    let expected: String = (1..=60).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(text(&events), expected);
    let seqs: Vec<u64> = events.iter().filter_map(|(s, _)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

/// kill -9 of the gateway 20 times in a row, at random points of a task that prints
/// numbered lines: every line exactly once, in order (issue 11's first scenario).
#[tokio::test]
async fn twenty_gateway_kills_at_random_points_lose_nothing() {
    let mut c = Cluster::start(&[]).await;
    let n = 300;
    let goal = format!("for i in $(seq 1 {n}); do echo \"line $i\"; sleep 0.03; done");
    let id = c.task(&goal).await;
    let url = c.stream_url(&id);
    let port = c.gw.port;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("kill points seeded with {seed}");
    for _ in 0..20 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis((seed >> 33) % 400)).await;
        c.gw.proc.kill9();
        c.gw = Gateway::start(c._gdir.path(), port, &[]);
    }
    // The node's reconnect backoff may have grown to its cap while the gateway kept dying.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, v) = c.gw.get(&format!("/api/tasks/{id}")).await;
        if v["state"] == "completed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && v["state"] != "error",
            "{v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = full_stream(&url, &c.gw.token).await;
    assert_ids_strictly_increase(&all);
    let expected: String = (1..=n).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text(&all), expected);
}

/// kill -9 of the node mid-task, restarted within the grace period: the task ends as an
/// error that says the node restarted, and its output up to the kill is complete, each
/// line once and in order (issue 11's second scenario).
#[tokio::test]
async fn a_node_killed_and_restarted_within_grace_ends_its_task_clearly() {
    let mut c = Cluster::start(&[]).await;
    let id = c
        .task("for i in $(seq 1 30); do echo \"line $i\"; done; sleep 20")
        .await;
    let url = c.stream_url(&id);
    let (_, _) = read_stream(&url, &c.gw.token, None, |(_, d)| !d.contains("line 30\\n")).await;
    c.node.kill9();
    c.node = start_node(&c.gw.url, None, c.ndir.path(), "worker");
    let failed = c.wait_state(&id, "error").await;
    assert!(
        failed["error"].as_str().unwrap().contains("node restarted"),
        "{failed}"
    );
    let all = full_stream(&url, &c.gw.token).await;
    assert_ids_strictly_increase(&all);
    let expected: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text(&all), expected);
}

/// A size-limited tmpfs mounted on a directory while it lives (root only).
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts it, or says why it cannot. Under CI (which runs as root) not mounting fails.
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk {
                path: path.to_path_buf(),
            }),
            other => {
                let why = format!("{other:?}");
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must run the full-disk test, but mounting a tmpfs failed: {why}"
                );
                eprintln!("\n*** SKIPPED: cannot mount a tmpfs here (run as root): {why} ***\n");
                None
            }
        }
    }

    /// Fills the disk up to `leave` free bytes; returns the filler to delete.
    fn fill(&self, leave: u64) -> std::path::PathBuf {
        let st = nix::sys::statvfs::statvfs(&self.path).unwrap();
        let free = st.blocks_available() * st.fragment_size();
        let filler = self.path.join("filler");
        let data = vec![0x5au8; free.saturating_sub(leave) as usize];
        std::fs::write(&filler, data).unwrap();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Issue 11, defect 1: the gateway's disk fills up while a task floods output. Failed
/// batches are held and retried (not dropped, not acknowledged), the node's frames wait,
/// and once space is freed every line arrives exactly once, in order, and the task
/// completes.
#[tokio::test]
async fn a_full_disk_holds_task_output_until_space_returns() {
    let disk_dir = TempDir::new("disk");
    let Some(disk) = SmallDisk::mount(disk_dir.path(), "24m") else {
        return;
    };
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    let work = TempDir::new("work");
    let log = gdir.join("gateway.log");
    // The free-disk floor is off: this test is about what happens when writes fail.
    let gw = Gateway::start_logged(disk_dir.path(), &log, 0, &["--min-free-disk-mb", "0"]);
    let token = gw.enroll("worker").await;
    let _node = start_node(&gw.url, Some(&token), ndir.path(), "worker");
    gw.wait_node_status("worker", "online", T).await;

    let n = 20_000;
    let goal = format!(
        "{}; for i in $(seq 1 {n}); do echo \"line $i of the flood, padded to make it longer\"; done",
        wait_for("go")
    );
    let (status, v) = gw
        .post(
            "/api/tasks",
            json!({"goal": goal, "options": {"cwd": work.path()}}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    wait_task_state(&gw, &id, "running").await;

    let filler = disk.fill(16 * 1024);
    touch(work.path(), "go");
    wait_until("a failed write", T, || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("writing task output failed")
    })
    .await;
    // The flood keeps going meanwhile; the node holds what the gateway could not store.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, v) = gw.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(v["state"], "running", "{v}");

    std::fs::remove_file(filler).unwrap();
    let done = wait_task_state(&gw, &id, "completed").await;
    assert_eq!(done["exitCode"], 0);
    let all = full_stream(&format!("{}/api/tasks/{id}/stream", gw.url), &gw.token).await;
    assert_ids_strictly_increase(&all);
    let expected: String = (1..=n)
        .map(|i| format!("line {i} of the flood, padded to make it longer\n"))
        .collect();
    assert!(text(&all) == expected, "lines lost or repeated");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("task writes resumed"),
        "the writer never said it recovered"
    );
}

/// Issue 11, defect 5: retention. Ended tasks older than `--retention-days` lose their
/// chunks but keep their row and summary; idempotency keys go after a day; recent tasks keep
/// everything. Time is moved by backdating rows in the real database between two runs.
#[tokio::test]
async fn retention_prunes_old_output_and_keys_and_keeps_summaries() {
    let mut c = Cluster::start(&[]).await;
    let old = c.task("echo old output").await;
    c.wait_state(&old, "completed").await;
    let recent = c.task("echo recent output").await;
    c.wait_state(&recent, "completed").await;
    let create = |gw: &Gateway| {
        gw.http
            .post(format!("{}/api/tasks", gw.url))
            .bearer_auth(&gw.token)
            .header("idempotency-key", "kept-a-day")
            .json(&json!({"goal": "true"}))
            .send()
    };
    let first = create(&c.gw).await.unwrap();
    assert_eq!(first.status(), 201);

    c.gw.proc.terminate();
    let day: i64 = 24 * 3600 * 1000;
    let db = rusqlite::Connection::open(c._gdir.join("viber.db")).unwrap();
    db.execute(
        "UPDATE tasks SET finished_at = finished_at - ?2 WHERE id = ?1",
        rusqlite::params![old, 31 * day],
    )
    .unwrap();
    db.execute(
        "UPDATE idempotency_keys SET created_at = created_at - ?1",
        [day + 1000],
    )
    .unwrap();
    drop(db);
    c.gw = Gateway::start(c._gdir.path(), c.gw.port, &["--retention-days", "30"]);

    let deadline = std::time::Instant::now() + T;
    let pruned = loop {
        let (_, v) = c.gw.get(&format!("/api/tasks/{old}")).await;
        if v["outputPrunedAt"].is_string() {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "never pruned: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pruned["state"], "completed");
    assert_eq!(pruned["exitCode"], 0);
    assert_eq!(pruned["goal"], "echo old output");
    assert_eq!(
        text(&full_stream(&c.stream_url(&old), &c.gw.token).await),
        ""
    );
    let (_, kept) = c.gw.get(&format!("/api/tasks/{recent}")).await;
    assert!(kept["outputPrunedAt"].is_null(), "{kept}");
    assert_eq!(
        text(&full_stream(&c.stream_url(&recent), &c.gw.token).await),
        "recent output\n"
    );
    c.gw.wait_node_status("worker", "online", T).await;
    let again = create(&c.gw).await.unwrap();
    assert_eq!(again.status(), 201);
    assert!(
        again.headers().get("idempotent-replayed").is_none(),
        "a key older than a day is forgotten"
    );
}

/// Issue 12, item 10: a hostile node reports absurd token usage for its own task. The sums
/// stay integers, saturated, and the task list and usage report keep answering.
#[tokio::test]
async fn absurd_token_counts_from_a_node_are_clamped() {
    use viber::protocol::Frame;
    let c = Cluster::start(&[]).await;
    let (mut ws, id) = hand_driven_task(&c, "liar").await;
    let usage = |n: Value| {
        json!({"type": "message-metadata", "messageMetadata":
        {"model": "m", "usage": {"inputTokens": n, "outputTokens": n}}})
    };
    let frames = [
        Frame::TaskStarted {
            task_id: id.clone(),
            seq: 0,
        },
        Frame::chunk(id.clone(), 1, &usage(json!(i64::MAX))),
        Frame::chunk(id.clone(), 2, &usage(json!(i64::MAX))),
        Frame::chunk(id.clone(), 3, &usage(json!(u64::MAX))),
        Frame::chunk(id.clone(), 4, &usage(json!(-5))),
        Frame::TaskCompleted {
            task_id: id.clone(),
            seq: 5,
            exit_code: Some(0),
            result: None,
        },
    ];
    for f in &frames {
        send_frame(&mut ws, f).await;
    }
    let done = c.wait_state(&id, "completed").await;
    let input = done["usage"]["inputTokens"].as_i64().unwrap();
    assert!(input > 0 && input <= 1_000_000_000, "{done}");
    let (code, list) = c.gw.get("/api/tasks").await;
    assert_eq!(code, 200, "{list}");
    let (code, usage) = c.gw.get("/api/usage").await;
    assert_eq!(code, 200, "{usage}");
}

/// A node driven by hand (our handshake client, frames written by the test) that offers the
/// shell executor, and a task sent to it: the socket (the submit read) and the task id.
async fn hand_driven_task(c: &Cluster, name: &str) -> (common::Ws, String) {
    use viber::protocol::Frame;
    let kdir = TempDir::new("keys");
    let key = new_key(&kdir, name);
    let token = c.gw.enroll(name).await;
    let mut ws = ws_open(&c.gw.ws_url()).await;
    let hello = viber::node::handshake::NodeHello {
        name: name.into(),
        version: "test".into(),
        platform: "test".into(),
        capabilities: vec!["shell".into()],
        hostname: None,
    };
    viber::node::handshake::handshake(&mut ws, &key, &token, &hello)
        .await
        .unwrap();
    let (code, v) =
        c.gw.post(
            "/api/tasks",
            json!({"goal": "true", "nodeId": key.node_id()}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    loop {
        if let Got::Frame(Frame::TaskSubmit(_)) = recv_no_ping(&mut ws).await {
            break;
        }
    }
    (ws, v["id"].as_str().unwrap().to_string())
}

/// Protocol 2's `task:stream-chunks`: batches that overlap what was sent (a resend after a
/// reconnect), skip ahead (a gap) or mix with single chunks are stored and relayed once
/// each, in order, and acknowledged up to the last frame.
#[tokio::test]
async fn chunk_batches_are_ordered_deduplicated_and_acknowledged() {
    use viber::protocol::Frame;
    let c = Cluster::start(&[]).await;
    let (mut ws, id) = hand_driven_task(&c, "batcher").await;
    let d = |s: &str| json!({"type": "text-delta", "id": "t", "delta": s});
    let batch = |seq: u64, letters: &str| Frame::TaskStreamChunks {
        task_id: id.clone(),
        seq,
        chunks: letters
            .chars()
            .map(|l| serde_json::value::to_raw_value(&d(&l.to_string())).unwrap())
            .collect(),
    };
    let frames = [
        Frame::TaskStarted {
            task_id: id.clone(),
            seq: 0,
        },
        Frame::chunk(id.clone(), 1, &json!({"type": "text-start", "id": "t"})),
        batch(2, "abc"),
        // b and c again, then d and e.
        batch(3, "BCde"),
        // Ahead of what came: dropped until resent.
        batch(9, "XY"),
        Frame::chunk(id.clone(), 7, &d("f")),
        batch(8, "gh"),
        Frame::chunk(id.clone(), 10, &json!({"type": "text-end", "id": "t"})),
        Frame::TaskCompleted {
            task_id: id.clone(),
            seq: 11,
            exit_code: Some(0),
            result: None,
        },
    ];
    for f in &frames {
        send_frame(&mut ws, f).await;
    }
    // The acknowledgement reaches the final frame.
    loop {
        match recv_no_ping(&mut ws).await {
            Got::Frame(Frame::TaskAck { seq: 11, .. }) => break,
            Got::Frame(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    c.wait_state(&id, "completed").await;
    let events = full_stream(&c.stream_url(&id), &c.gw.token).await;
    assert_eq!(text(&events), "abcdefgh");
    assert_ids_strictly_increase(&events);
    let ids: Vec<u64> = events.iter().filter_map(|(i, _)| *i).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    assert!(c.gw.proc.logs().contains("sequence gap"));
}

/// A replay longer than a page (2,000 chunks, or 256 KiB: chunks of 100 KiB among them)
/// sends every chunk once and in order, from the start and from any Last-Event-ID, the
/// page boundaries included.
#[tokio::test]
async fn a_long_replay_crosses_its_pages_without_losing_or_repeating_a_chunk() {
    use viber::protocol::Frame;
    let c = Cluster::start(&[]).await;
    let (mut ws, id) = hand_driven_task(&c, "pager").await;
    let n: u64 = 5000;
    let big = [1000, 1001, 1002, 2000, 4999];
    let delta = |seq: u64| match big.contains(&seq) {
        true => format!("<{seq}:{}>", "x".repeat(100 * 1024)),
        false => format!("<{seq}>"),
    };
    send_frame(
        &mut ws,
        &Frame::TaskStarted {
            task_id: id.clone(),
            seq: 0,
        },
    )
    .await;
    for first in (1..=n).step_by(64) {
        let chunks = (first..=(first + 63).min(n))
            .map(|s| {
                let chunk = json!({"type": "text-delta", "id": "t", "delta": delta(s)});
                serde_json::value::to_raw_value(&chunk).unwrap()
            })
            .collect();
        let frame = Frame::TaskStreamChunks {
            task_id: id.clone(),
            seq: first,
            chunks,
        };
        send_frame(&mut ws, &frame).await;
    }
    let done = Frame::TaskCompleted {
        task_id: id.clone(),
        seq: n + 1,
        exit_code: Some(0),
        result: None,
    };
    send_frame(&mut ws, &done).await;
    c.wait_state(&id, "completed").await;
    for after in [
        None,
        Some(1),
        Some(999),
        Some(1000),
        Some(1999),
        Some(2000),
        Some(4998),
        Some(n),
    ] {
        let (events, done) = read_stream(&c.stream_url(&id), &c.gw.token, after, |_| true).await;
        assert!(done, "after {after:?}: no [DONE]");
        let from = after.map_or(1, |a| a + 1);
        let ids: Vec<u64> = events.iter().filter_map(|(i, _)| *i).collect();
        assert_eq!(ids, (from..=n).collect::<Vec<_>>(), "after {after:?}");
        assert_eq!(text(&events), (from..=n).map(delta).collect::<String>());
    }
}

/// Issue 12, item 14: what the gateway and the node keep on disk is theirs alone.
#[tokio::test]
async fn data_dirs_database_and_session_logs_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start(&[]).await;
    let id = c.task("echo private").await;
    c.wait_state(&id, "completed").await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(c._gdir.path()), 0o700);
    assert_eq!(mode(c.ndir.path()), 0o700);
    for f in ["viber.db", "viber.db-wal", "viber.db-shm"] {
        assert_eq!(mode(&c._gdir.join(f)), 0o600, "{f}");
    }
    let sessions = c.ndir.join("agents").join(&c.node_id).join("sessions");
    let log = sessions.join(format!("{id}.jsonl"));
    assert_eq!(mode(&log), 0o600);
}

/// Issue 12, item 13: a task has at most 64 watchers; a place frees when one leaves.
#[tokio::test]
async fn a_task_has_a_bounded_number_of_watchers() {
    let c = Cluster::start(&[]).await;
    let id = c.task("sleep 30").await;
    c.wait_state(&id, "running").await;
    let open = || {
        reqwest::Client::new()
            .get(c.stream_url(&id))
            .bearer_auth(&c.gw.token)
            .send()
    };
    let mut held = Vec::new();
    for _ in 0..64 {
        let res = open().await.unwrap();
        assert_eq!(res.status(), 200);
        held.push(res);
    }
    let res = open().await.unwrap();
    assert_eq!(res.status(), 429);
    drop(held.pop());
    wait_until("a place frees", T, || async {
        open().await.unwrap().status() == 200
    })
    .await;
    c.gw.post(&format!("/api/tasks/{id}/stop"), json!({})).await;
}

/// Issue 12, item 12: a task past its output quota ends as an error, its node is told to
/// stop it, and what was stored stays within the quota; below the free-disk floor new output
/// is refused the same way.
#[tokio::test]
async fn output_quotas_and_the_disk_floor_end_tasks_clearly() {
    let c = Cluster::start(&["--task-output-quota-mb", "1"]).await;
    let id = c
        .task("for i in $(seq 1 100000); do echo \"line $i of a task that writes far too much\"; done; sleep 30")
        .await;
    let failed = c.wait_state(&id, "error").await;
    assert!(
        failed["error"].as_str().unwrap().contains("output quota"),
        "{failed}"
    );
    let db = rusqlite::Connection::open(c._gdir.join("viber.db")).unwrap();
    let stored: i64 = db
        .query_row(
            // A run's text is its chunks, a comma between each two, in brackets: what the
            // quota counts is the chunks.
            "SELECT coalesce(sum(length(CAST(chunks AS BLOB)) - (last_seq - first_seq + 1) - 1), 0)
             FROM task_chunk_runs WHERE task_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stored <= 1 << 20, "{stored} bytes stored");
    // The node stopped it: nothing of it still runs there.
    wait_until("node dropped the task", T, || async {
        let (_, nodes) = c.gw.get("/api/nodes").await;
        nodes["nodes"][0]["runningTasks"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;

    let c = Cluster::start(&["--min-free-disk-mb", "100000000"]).await;
    let id = c.task("echo hello").await;
    let failed = c.wait_state(&id, "error").await;
    assert!(
        failed["error"].as_str().unwrap().contains("disk"),
        "{failed}"
    );
}

/// A node killed while it stops a sandboxed task (in the grace period between signals) must
/// not leave the task running: the sandbox dies with the node. The task ignores SIGINT and
/// SIGTERM, so only the node's death can end it here.
#[tokio::test]
async fn a_node_killed_while_stopping_a_task_leaves_no_process_behind() {
    let mut c = Cluster::start(&[]).await;
    let marker = "orphan-check-7d1c";
    let id = c
        .task_with(json!({
            "goal": format!("trap '' INT TERM; echo up; while :; do sleep 0.05; done # {marker}"),
            "options": { "cwd": c.work.path(), "stopGraceMs": 20000 },
        }))
        .await;
    read_stream(&c.stream_url(&id), &c.gw.token, None, |(_, d)| {
        !d.contains("up\\n")
    })
    .await;
    let (status, _) = c.gw.post(&format!("/api/tasks/{id}/stop"), json!({})).await;
    assert_eq!(status, 202);
    // The node sent SIGINT and waits out the grace period; the task ignores it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        processes_containing(marker) > 0,
        "the task should still run"
    );
    c.node.kill9();
    wait_until("the sandbox to die with its node", T, || async {
        processes_containing(marker) == 0
    })
    .await;
}
