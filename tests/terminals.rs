//! Terminals end to end: a real gateway and node (bubblewrap sandbox, tmux), `viber shell`
//! as a user runs it, and viewers on `/api/terminals/:id/ws` through real WebSockets.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "terminal-secret-7f3a9c2e";

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// bubblewrap and tmux, or the test is skipped (CI installs both through scripts/test.sh).
fn tools_or_skip() -> bool {
    if which("bwrap") && which("tmux") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "bubblewrap or tmux is missing (scripts/test.sh installs them)"
    );
    eprintln!("SKIPPED: bubblewrap or tmux is not installed");
    false
}

/// A gateway, one node, and a prepared local environment `shell-env` with a secret.
struct Setup {
    gw: Gateway,
    node: Proc,
    node_id: String,
    env_id: String,
    binding_id: String,
    gdir: TempDir,
    ndir: TempDir,
    work: TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let (gdir, ndir, work) = (
            TempDir::new("gw"),
            TempDir::new("node"),
            TempDir::new("work"),
        );
        let gw = Gateway::start(gdir.path(), 0, &[]);
        let token = gw.enroll("term-node").await;
        let node = start_node(&gw.url, Some(&token), ndir.path(), "term-node");
        gw.wait_node_status("term-node", "online", T).await;
        let node_id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
        let (code, env) = gw
            .post(
                "/api/environments",
                json!({"name": "shell-env", "type": "local", "localPath": work.path(),
                       "vars": {"GREETING": "hello-from-env"},
                       "secrets": {"API_TOKEN": SECRET}}),
            )
            .await;
        assert_eq!(code, 201, "{env}");
        let env_id = env["id"].as_str().unwrap().to_string();
        let (code, b) = gw
            .post(
                &format!("/api/environments/{env_id}/bindings"),
                json!({"nodeId": node_id}),
            )
            .await;
        assert_eq!(code, 201, "{b}");
        let binding_id = b["id"].as_str().unwrap().to_string();
        wait_until("binding ready", T, || async {
            let (_, v) = gw
                .get(&format!("/api/environments/{env_id}/bindings"))
                .await;
            v["bindings"][0]["status"] == "ready"
        })
        .await;
        Setup {
            gw,
            node,
            node_id,
            env_id,
            binding_id,
            gdir,
            ndir,
            work,
        }
    }

    /// `viber shell ARGS` with this gateway, stdin from `input`.
    fn shell(&self, args: &[&str], input: Option<&str>) -> (i32, String, String) {
        let mut child = Command::new(BIN)
            .arg("shell")
            .args(args)
            .env("VIBER_GATEWAY", &self.gw.url)
            .env("VIBER_TOKEN", &self.gw.token)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = input {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn open(&self, body: Value) -> String {
        let (code, t) = self.gw.post("/api/terminals", body).await;
        assert_eq!(code, 201, "{t}");
        t["id"].as_str().unwrap().to_string()
    }
}

/// A viewer on `/api/terminals/:id/ws`: the bytes it got and the offset after them.
struct Viewer {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    bytes: Vec<u8>,
    next: u64,
    exit: Option<Option<i64>>,
}

impl Viewer {
    async fn open(gw: &Gateway, id: &str, offset: u64) -> Viewer {
        let url = format!(
            "ws://127.0.0.1:{}/api/terminals/{id}/ws?offset={offset}",
            gw.port
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", gw.token).parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        Viewer {
            ws,
            bytes: Vec::new(),
            next: offset,
            exit: None,
        }
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    async fn type_text(&mut self, text: &str) {
        self.send(json!({"type": "input", "data": text})).await;
    }

    /// Reads until the output so far contains `needle` (or the terminal exits).
    async fn read_until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + T;
        loop {
            let text = String::from_utf8_lossy(&self.bytes).into_owned();
            if text.contains(needle) || self.exit.is_some() {
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in time; got {text:?}"));
            match msg {
                Some(Ok(Message::Text(t))) => self.event(serde_json::from_str(t.as_str()).unwrap()),
                Some(Ok(_)) => {}
                other => panic!("viewer socket ended: {other:?}; got {text:?}"),
            }
        }
    }

    /// Reads until it has at least `n` bytes, or its output so far contains `end`.
    async fn read_bytes(&mut self, n: usize, end: &str) {
        let deadline = Instant::now() + T;
        while self.bytes.len() < n && !String::from_utf8_lossy(&self.bytes).contains(end) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    self.event(serde_json::from_str(t.as_str()).unwrap())
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("viewer: {other:?} after {} bytes", self.bytes.len()),
            }
        }
    }

    fn event(&mut self, e: Value) {
        match e["type"].as_str().unwrap() {
            "output" => {
                let offset = e["offset"].as_u64().unwrap();
                assert_eq!(offset, self.next, "a gap or a repeat in the output");
                let data = base64::engine::general_purpose::STANDARD
                    .decode(e["data"].as_str().unwrap())
                    .unwrap();
                self.next += data.len() as u64;
                self.bytes.extend(data);
            }
            "skipped" => panic!("skipped output: {e}"),
            "exit" => self.exit = Some(e["code"].as_i64()),
            other => panic!("unexpected viewer event {other}: {e}"),
        }
    }
}

#[tokio::test]
async fn shell_runs_commands_under_a_real_pty_with_codes_stdin_and_redaction() {
    if !tools_or_skip() {
        return;
    }
    let s = Setup::start().await;
    // A real terminal of the size asked for.
    let (code, out, err) = s.shell(
        &[
            "shell-env",
            "--size",
            "100x30",
            "--",
            "sh",
            "-c",
            "tty; stty size",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("/dev/"), "no tty: {out:?}");
    assert!(out.contains("30 100"), "size: {out:?}");
    // Exit codes come back.
    let (code, _, err) = s.shell(&["shell-env", "--", "sh", "-c", "exit 7"], None);
    assert_eq!(code, 7, "{err}");
    // Stdin is piped through (not echoed), and its end ends the program's input.
    let (code, out, err) = s.shell(
        &["shell-env", "--", "sh", "-c", "cat; echo done-$?"],
        Some("piped line\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("piped line").count(), 1, "{out:?}");
    assert!(out.contains("done-0"), "{out:?}");
    // The environment's vars are there, its secrets too, and redacted on the way out.
    let (code, out, err) = s.shell(
        &[
            "shell-env",
            "--",
            "sh",
            "-c",
            "echo $GREETING; echo \"key=$API_TOKEN\"",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hello-from-env"), "{out:?}");
    assert!(out.contains("key=[REDACTED]"), "{out:?}");
    assert!(!out.contains(SECRET), "{out:?}");

    // A node's own token is not an operator's: it cannot open a terminal.
    let creds: Value =
        serde_json::from_slice(&std::fs::read(s.ndir.join("node.json")).unwrap()).unwrap();
    let node_token = creds["node_token"]
        .as_str()
        .or(creds["nodeToken"].as_str())
        .unwrap();
    let res =
        s.gw.http
            .post(format!("{}/api/terminals", s.gw.url))
            .bearer_auth(node_token)
            .json(&json!({"environment": "shell-env"}))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 401);
    // Bad requests get clear errors.
    let (code, v) = s.gw.post("/api/terminals", json!({})).await;
    assert_eq!(code, 422, "{v}");
    let (code, v) =
        s.gw.post("/api/terminals", json!({"bindingId": "nope"}))
            .await;
    assert_eq!(code, 404, "{v}");
    let (code, v) =
        s.gw.post(
            "/api/terminals",
            json!({"bindingId": s.binding_id, "cols": 0}),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, _) = s.gw.get("/api/terminals/term_nope").await;
    assert_eq!(code, 404);
    // Ended commands are listed with their codes.
    let (_, list) = s.gw.get("/api/terminals?all=true").await;
    let codes: Vec<_> = list["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["exitCode"].clone())
        .collect();
    assert!(codes.contains(&json!(7)), "{list}");
}

#[tokio::test]
async fn viewers_share_a_terminal_resume_without_gaps_and_survive_restarts() {
    if !tools_or_skip() {
        return;
    }
    let mut s = Setup::start().await;
    let id = s
        .open(json!({"bindingId": s.binding_id, "cols": 100, "rows": 30}))
        .await;
    let mut a = Viewer::open(&s.gw, &id, 0).await;
    let mut b = Viewer::open(&s.gw, &id, 0).await;
    a.type_text("export MARK=kept-$((40+2)); echo ready-$((1+1))\r")
        .await;
    a.read_until("ready-2").await;
    b.read_until("ready-2").await;
    // Lots of output; b leaves in the middle and comes back from where it was.
    a.type_text("for i in $(seq 1 3000); do echo line$i; done; echo end-$((2+2))\r")
        .await;
    // tmux draws the screen, not every line: wait for an amount of output instead.
    b.read_bytes(b.bytes.len() + 1500, "end-4").await;
    let offset = b.next;
    let mut seen = std::mem::take(&mut b.bytes);
    drop(b);
    a.read_until("end-4").await;
    let mut b = Viewer::open(&s.gw, &id, offset).await;
    // Up to where the viewer that stayed is (it may have left after the end already).
    b.read_bytes(a.bytes.len().saturating_sub(seen.len()), "end-4")
        .await;
    seen.extend(std::mem::take(&mut b.bytes));
    // The same bytes as the viewer that stayed, with nothing lost or repeated.
    let n = seen.len().min(a.bytes.len());
    assert!(n > 2_000, "{n}");
    assert_eq!(seen[..n], a.bytes[..n]);

    // The gateway is killed and comes back on the same port: the terminal goes on and the
    // viewer resumes from its offset.
    let port = s.gw.port;
    s.gw.proc.kill9();
    let resume = a.next;
    let gw = Gateway::start(s.gdir.path(), port, &[]);
    s.gw = gw;
    s.gw.wait_node_status("term-node", "online", T).await;
    let mut a = Viewer::open(&s.gw, &id, resume).await;
    a.type_text("echo after-gw-$MARK\r").await;
    a.read_until("after-gw-kept-42").await;

    // The node is killed and restarted: the tmux session and its shell survive, the node
    // adopts them, and the shell still has what was set in it.
    let resume = a.next;
    s.node.kill9();
    let node = start_node(&s.gw.url, None, s.ndir.path(), "term-node");
    // Not dropped: dropping a node's process ends its terminals' tmux servers.
    std::mem::forget(std::mem::replace(&mut s.node, node));
    s.gw.wait_node_status("term-node", "online", T).await;
    let mut a2 = Viewer::open(&s.gw, &id, resume).await;
    let mut got = String::new();
    // The stream restarted with the node: a marker, then tmux redraws the screen.
    let deadline = Instant::now() + T;
    while !got.contains("after-node-kept-42") {
        assert!(
            Instant::now() < deadline,
            "no output after the node restarted: {got:?}"
        );
        a2.type_text("echo after-node-$MARK\r").await;
        let msg = tokio::time::timeout(Duration::from_secs(2), a2.ws.next()).await;
        if let Ok(Some(Ok(Message::Text(t)))) = msg {
            let e: Value = serde_json::from_str(t.as_str()).unwrap();
            if e["type"] == "output" {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(e["data"].as_str().unwrap())
                    .unwrap();
                got.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
    let (_, t) = s.gw.get(&format!("/api/terminals/{id}")).await;
    assert_eq!(t["status"], "running", "{t}");

    // Closing it ends the shell and the tmux session; viewers get the exit.
    let (code, t) = s.gw.delete(&format!("/api/terminals/{id}")).await;
    assert_eq!(code, 200, "{t}");
    wait_until("tmux session gone", T, || async {
        std::fs::read_dir(s.ndir.join("tmux"))
            .map(|d| {
                d.flatten()
                    .all(|e| !e.file_name().to_string_lossy().starts_with("term_"))
            })
            .unwrap_or(true)
    })
    .await;
    let _ = (&s.node_id, &s.env_id);
}

#[tokio::test]
async fn interactive_shell_echoes_detaches_with_ctrl_bracket_and_reattaches() {
    if !tools_or_skip() {
        return;
    }
    let s = Setup::start().await;
    // The test's own tmux plays the user's terminal (ended however the test ends).
    let sock = s.gdir.join("user-tmux");
    struct EndTmux(std::path::PathBuf);
    impl Drop for EndTmux {
        fn drop(&mut self) {
            kill_tmux_server(&self.0);
        }
    }
    let _end = EndTmux(sock.clone());
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cmd = format!(
        "VIBER_GATEWAY={} VIBER_TOKEN={} {BIN} shell shell-env; echo viber-exit=$?; sleep 60",
        s.gw.url, s.gw.token
    );
    let user_terminal = || {
        tmux(&[
            "new-session",
            "-d",
            "-s",
            "user",
            "-x",
            "120",
            "-y",
            "30",
            &cmd,
        ])
    };
    user_terminal();
    let screen = |needle: &'static str| {
        let tmux = &tmux;
        async move {
            let deadline = Instant::now() + T;
            loop {
                let text = tmux(&["capture-pane", "-p", "-t", "user"]);
                let prompt =
                    needle == "PROMPT" && text.lines().any(|l| l.trim_end().ends_with(['#', '$']));
                if prompt || text.contains(needle) {
                    return text;
                }
                assert!(
                    Instant::now() < deadline,
                    "no {needle:?} on screen:\n{text}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // The remote shell's prompt (tmux clears the screen as it attaches).
    screen("PROMPT").await;
    tmux(&["send-keys", "-t", "user", "echo typed-$((3*5))", "Enter"]);
    screen("typed-15").await;
    // Ctrl-] detaches; `viber shell` exits 0 and the terminal keeps running.
    tmux(&["send-keys", "-t", "user", "C-]"]);
    screen("viber-exit=0").await;
    let (_, list) = s.gw.get("/api/terminals").await;
    assert_eq!(list["terminals"].as_array().unwrap().len(), 1, "{list}");
    // Attaching again shows the earlier screen.
    tmux(&["kill-session", "-t", "user"]);
    user_terminal();
    screen("typed-15").await;
}

async fn say(gw: &Gateway, thread: &str, message: &str) -> (Value, String) {
    let (code, m) = gw
        .post(
            &format!("/api/threads/{thread}/messages"),
            json!({"message": message, "executor": "shell"}),
        )
        .await;
    assert_eq!(code, 201, "{m}");
    gw.finished(m["taskId"].as_str().unwrap()).await
}

#[tokio::test]
async fn thread_scripts_run_in_its_tmux_shell_and_its_ports_preview_through_the_gateway() {
    if !tools_or_skip() {
        return;
    }
    let s = Setup::start().await;
    let (code, t) =
        s.gw.post("/api/threads", json!({"environmentId": s.env_id}))
            .await;
    assert_eq!(code, 201, "{t}");
    let thread = t["id"].as_str().unwrap().to_string();
    let port = free_port();
    // The first task starts a web server in the background and ends.
    let (task, text) = say(
        &s.gw,
        &thread,
        &format!(
            "mkdir -p site/assets && cd site && echo '<h1>served-from-the-thread</h1>' > index.html \
             && echo 'console.log(42)' > assets/app.js\n\
             (python3 -m http.server {port} --bind 127.0.0.1 > /dev/null 2>&1 &)\n\
             echo started-$((3+4))"
        ),
    )
    .await;
    assert_eq!(task["state"], "completed", "{task} {text}");
    assert!(text.contains("started-7"), "{text:?}");
    // The next task of the thread reaches it: it outlived the task that started it.
    let fetch = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do python3 -c \"import urllib.request as u; \
         print(u.urlopen('http://127.0.0.1:{port}/').read().decode())\" 2>/dev/null && break; sleep 0.5; done"
    );
    let (task, text) = say(&s.gw, &thread, &fetch).await;
    assert_eq!(task["state"], "completed", "{task} {text}");
    assert!(text.contains("served-from-the-thread"), "{text:?}");
    // A failing script's code comes back as it does outside tmux, and its stdin is at its
    // end as it is elsewhere (a `cat` does not wait for the terminal).
    let (task, text) = say(&s.gw, &thread, "cat; echo stdin-closed-$?; exit 3").await;
    assert!(text.contains("stdin-closed-0"), "{text:?}");
    assert_eq!(task["state"], "error", "{task}");
    assert_eq!(task["exitCode"], 3, "{task}");
    // A script that does not parse ends with bash's error instead of waiting; a `cd` in one
    // does not move the next.
    let (task, text) = say(&s.gw, &thread, "cd site; if true; then echo never").await;
    assert_eq!(task["state"], "error", "{task} {text}");
    assert!(text.contains("syntax error"), "{text:?}");
    let (_, text) = say(&s.gw, &thread, "cd site && pwd").await;
    let (_, again) = say(&s.gw, &thread, "pwd").await;
    assert!(text.trim_end().ends_with("/site"), "{text:?}");
    assert!(!again.trim_end().ends_with("/site"), "{again:?}");

    // Whoever opens the thread's terminal sees the agent's commands and their output.
    let (_, list) = s.gw.get(&format!("/api/terminals?threadId={thread}")).await;
    let terms = list["terminals"].as_array().unwrap().clone();
    assert_eq!(terms.len(), 1, "{list}");
    let term = terms[0]["id"].as_str().unwrap().to_string();
    let mut v = Viewer::open(&s.gw, &term, 0).await;
    let screen = v.read_until("started-7").await;
    assert!(screen.contains("# viber: task_"), "{screen:?}");
    // The server's port is listed, and the gateway proxies it.
    wait_until("the port listed", T, || async {
        let (_, t) = s.gw.get(&format!("/api/terminals/{term}")).await;
        t["ports"].as_array().unwrap().contains(&json!(port))
    })
    .await;
    // Previews have an origin of their own; the gateway's /preview/... sends browsers there.
    let (_, t) = s.gw.get(&format!("/api/terminals/{term}")).await;
    let base = t["previewUrl"].as_str().unwrap().to_string();
    let origin = base.split("/preview/").next().unwrap().to_string();
    assert_ne!(origin, s.gw.url, "{base}");
    let preview = format!("{base}{port}/");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects
        .get(format!(
            "{}/preview/{}/{port}/x?y=1",
            s.gw.url, s.binding_id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 307);
    assert_eq!(
        res.headers()["location"],
        format!("{origin}/preview/{}/{port}/x?y=1", s.binding_id).as_str()
    );
    let res =
        s.gw.http
            .get(&preview)
            .bearer_auth(&s.gw.token)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("served-from-the-thread"));
    // A page's absolute paths land under its preview.
    let res = no_redirects
        .get(format!("{origin}/assets/app.js"))
        .header("referer", &preview)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 307);
    let to = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        to,
        format!("/preview/{}/{port}/assets/app.js", s.binding_id)
    );
    let res =
        s.gw.http
            .get(format!("{origin}{to}"))
            .bearer_auth(&s.gw.token)
            .send()
            .await
            .unwrap();
    assert_eq!(res.text().await.unwrap().trim(), "console.log(42)");
    // WebSockets go through too: a small echo server started by another task of the thread.
    let ws_port = free_port();
    std::fs::write(s.work.join("wsecho.py"), WS_ECHO).unwrap();
    let (task, text) = say(
        &s.gw,
        &thread,
        &format!("(python3 wsecho.py {ws_port} > /dev/null 2>&1 &); echo ws-started"),
    )
    .await;
    assert_eq!(task["state"], "completed", "{task} {text}");
    wait_until("the WebSocket port listed", T, || async {
        let (_, t) = s.gw.get(&format!("/api/terminals/{term}")).await;
        t["ports"].as_array().unwrap().contains(&json!(ws_port))
    })
    .await;
    let url = format!("{}{ws_port}/socket", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", s.gw.token).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Text("through-the-preview".into()))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(T, ws.next()).await.unwrap();
    match echoed {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "through-the-preview"),
        other => panic!("{other:?}"),
    }

    // No operator, no preview; and only ports the terminals listen on.
    let res = s.gw.http.get(&preview).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let other = format!("{base}{}/", s.gw.port);
    let res =
        s.gw.http
            .get(&other)
            .bearer_auth(&s.gw.token)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 404);
    // Archiving the thread ends its shell, the servers it started and its tmux session.
    let (code, v) =
        s.gw.request(
            reqwest::Method::PATCH,
            &format!("/api/threads/{thread}"),
            Some(json!({"status": "archived"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let socket = s.ndir.join("tmux").join(&term);
    wait_until("the thread's tmux session gone", T, || async {
        !socket.exists()
    })
    .await;
    let (_, t) = s.gw.get(&format!("/api/terminals/{term}")).await;
    assert_eq!(t["status"], "exited", "{t}");
    wait_until("its server gone", T, || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    })
    .await;
}

/// A viewer that reads slower than the terminal prints is skipped forward with markers
/// (never waited for), sees every byte it gets exactly once and in order, and gets the end.
#[tokio::test]
async fn a_slow_viewer_is_skipped_forward_and_still_gets_the_end() {
    if !tools_or_skip() {
        return;
    }
    let s = Setup::start().await;
    let id = s
        .open(json!({"bindingId": s.binding_id, "command": ["sh", "-c", "head -c 6000000 /dev/zero | base64"]}))
        .await;
    let mut v = Viewer::open(&s.gw, &id, 0).await;
    let (mut next, mut delivered, mut skipped) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + T;
    let code = loop {
        assert!(
            Instant::now() < deadline,
            "no end: {delivered} delivered, {skipped} skipped"
        );
        let msg = tokio::time::timeout(T, v.ws.next()).await.unwrap();
        let Some(Ok(Message::Text(t))) = msg else {
            continue;
        };
        let e: Value = serde_json::from_str(t.as_str()).unwrap();
        match e["type"].as_str().unwrap() {
            "output" => {
                assert_eq!(e["offset"].as_u64().unwrap(), next, "a gap or a repeat");
                let n = base64::engine::general_purpose::STANDARD
                    .decode(e["data"].as_str().unwrap())
                    .unwrap()
                    .len() as u64;
                next += n;
                delivered += n;
                // Slower than the terminal.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            "skipped" => {
                assert_eq!(e["from"].as_u64().unwrap(), next, "{e}");
                let to = e["to"].as_u64().unwrap();
                assert!(to > next, "{e}");
                skipped += to - next;
                next = to;
            }
            "exit" => break e["code"].clone(),
            other => panic!("{other}: {e}"),
        }
    };
    assert_eq!(code, 0);
    assert!(
        skipped > 0,
        "the viewer was never behind: {delivered} delivered"
    );
    // 6,000,000 bytes as base64 in lines of 76, each line ending in CR LF on a terminal.
    assert_eq!(
        delivered + skipped,
        8_000_000 + 2 * 105_264,
        "{delivered} + {skipped}"
    );
}

/// A WebSocket echo server of one message per connection (Python's standard library only).
const WS_ECHO: &str = r#"
import base64, hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
while True:
    c, _ = s.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n")
           if l.lower().startswith(b"sec-websocket-key")][0]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    head = c.recv(2)
    n = head[1] & 127
    mask = c.recv(4)
    data = b""
    while len(data) < n:
        data += c.recv(n - len(data))
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    c.sendall(bytes([0x81, len(data)]) + data)
    c.close()
"#;
