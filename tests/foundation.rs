//! The foundation: roles, enrollment, handshake, presence, reconnect, auth and bad input.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use serde_json::json;
use viber::protocol::{close, ErrorCode, Frame};

const T: Duration = Duration::from_secs(20);

fn refusal(got: Got) -> ErrorCode {
    match got {
        Got::Frame(Frame::Error(e)) => e.code,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test]
async fn node_enrolls_connects_and_is_listed() {
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    let gw = Gateway::start(gdir.path(), 0, &[]);

    let (status, v) = gw
        .post("/api/nodes/enroll", json!({"name": "build-01"}))
        .await;
    assert_eq!(status, 201, "{v}");
    let token = v["token"].as_str().unwrap();
    assert!(token.starts_with("vbr_enr_"));
    assert!(v["expiresAt"].as_str().unwrap().ends_with('Z'));
    let command = v["command"].as_str().unwrap();
    assert_eq!(
        command,
        format!(
            "viber node --gateway {} --token {token} --name build-01",
            gw.url
        )
    );

    let mut node = start_node(&gw.url, Some(token), ndir.path(), "build-01");
    gw.wait_node_status("build-01", "online", T).await;

    let listed = gw.nodes().await;
    assert_eq!(listed.len(), 1);
    let n = &listed[0];
    assert!(n["id"].as_str().unwrap().starts_with("node_"));
    assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));
    assert!(n["platform"].as_str().unwrap().starts_with("linux"));
    assert!(n["runningTasks"].is_array());
    assert!(n["lastSeen"].is_string());
    // The alias lists the same thing.
    let (_, alias) = gw.get("/api/nodes").await;
    assert_eq!(alias["nodes"][0]["id"], n["id"]);
    let (_, one) = gw
        .get(&format!("/api/nodes/{}", n["id"].as_str().unwrap()))
        .await;
    assert_eq!(one["name"], "build-01");

    // Credentials are private files; the token is stored only hashed. The node writes its
    // token after the gateway's hello-ok, which can land after the gateway lists it online.
    use std::os::unix::fs::PermissionsExt;
    let creds = ndir.join("node.json");
    wait_until("the node saved its credentials", T, || {
        let creds = creds.clone();
        async move { creds.exists() }
    })
    .await;
    for f in ["node-key", "node.json"] {
        let mode = std::fs::metadata(ndir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let admin_mode = std::fs::metadata(gdir.join("admin-token"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(admin_mode, 0o600);
    let db = std::fs::read(gdir.join("viber.db")).unwrap();
    let wal = std::fs::read(gdir.join("viber.db-wal")).unwrap_or_default();
    for secret in [token, gw.token.as_str()] {
        let needle = secret.as_bytes();
        assert!(
            !db.windows(needle.len()).any(|w| w == needle),
            "plaintext token in db"
        );
        assert!(
            !wal.windows(needle.len()).any(|w| w == needle),
            "plaintext token in wal"
        );
    }

    // Health counts it; the CLI lists it.
    let health: serde_json::Value = reqwest::get(format!("{}/health", gw.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["nodes"], 1);
    assert_eq!(health["tasks"], 0);
    let out = std::process::Command::new(BIN)
        .args([
            "nodes",
            "--gateway",
            &gw.url,
            "--data-dir",
            gdir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("build-01") && stdout.contains("online"),
        "{stdout}"
    );

    // The enrollment token was one-time; the node now uses its own token and reconnects
    // after a restart without it.
    node.kill9();
    gw.wait_node_status("build-01", "offline", T).await;
    let _node = start_node(&gw.url, None, ndir.path(), "build-01");
    gw.wait_node_status("build-01", "online", T).await;
}

#[tokio::test]
async fn node_started_before_its_gateway_connects_when_it_comes_up() {
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    // Create the gateway's state and an enrollment token, then stop it.
    let mut first = Gateway::start(gdir.path(), 0, &[]);
    let token = first.enroll("early").await;
    let port = first.port;
    assert!(first.proc.terminate().success());

    let node = start_node(
        &format!("http://127.0.0.1:{port}"),
        Some(&token),
        ndir.path(),
        "early",
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let gw = Gateway::start(gdir.path(), port, &[]);
    gw.wait_node_status("early", "online", Duration::from_secs(40))
        .await;
    assert!(
        node.logs().contains("cannot connect"),
        "node should have retried:\n{}",
        node.logs()
    );
}

#[tokio::test]
async fn gateway_kill_and_restart_brings_the_node_back_without_restarting_it() {
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    let mut gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("steady").await;
    let mut node = start_node(&gw.url, Some(&token), ndir.path(), "steady");
    gw.wait_node_status("steady", "online", T).await;
    let port = gw.port;

    gw.proc.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(node.is_running());
    let gw = Gateway::start(gdir.path(), port, &[]);
    gw.wait_node_status("steady", "online", Duration::from_secs(40))
        .await;
    assert!(node.is_running(), "node must survive its gateway's restart");
}

#[tokio::test]
async fn missed_heartbeats_mark_a_node_offline_and_it_comes_back() {
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("sleepy").await;
    let node = start_node(&gw.url, Some(&token), ndir.path(), "sleepy");
    gw.wait_node_status("sleepy", "online", T).await;

    // A stopped process keeps its TCP connection open but sends nothing.
    node.signal(Signal::SIGSTOP);
    gw.wait_node_status("sleepy", "offline", T).await;
    assert!(
        gw.proc.logs().contains("missed heartbeats"),
        "{}",
        gw.proc.logs()
    );
    node.signal(Signal::SIGCONT);
    gw.wait_node_status("sleepy", "online", Duration::from_secs(40))
        .await;
}

#[tokio::test]
async fn revoked_node_is_disconnected_and_refused() {
    let gdir = TempDir::new("gw");
    let ndir = TempDir::new("node");
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("doomed").await;
    let mut node = start_node(&gw.url, Some(&token), ndir.path(), "doomed");
    gw.wait_node_status("doomed", "online", T).await;
    let id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();

    let (status, _) = gw.delete(&format!("/api/nodes/{id}")).await;
    assert_eq!(status, 204);
    // The node is told, exits with an error, and is no longer listed.
    let exit = node
        .wait_exit(T)
        .unwrap_or_else(|| panic!("revoked node kept running:\n{}", node.logs()));
    assert!(!exit.success());
    assert!(node.logs().contains("revoked"), "{}", node.logs());
    assert!(gw.nodes().await.is_empty());
    let (status, _) = gw.delete(&format!("/api/nodes/{id}")).await;
    assert_eq!(status, 404);

    // Its saved credentials are refused with a typed error.
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ndir.join("node.json")).unwrap()).unwrap();
    let key = viber::crypto::NodeKey::load_or_create(&ndir.join("node-key")).unwrap();
    let (_, got) = handshake(&gw.ws_url(), &key, creds["nodeToken"].as_str().unwrap()).await;
    assert_eq!(refusal(got), ErrorCode::Revoked);
}

#[tokio::test]
async fn handshake_refusals_are_typed() {
    let gdir = TempDir::new("gw");
    let kdir = TempDir::new("keys");
    let gw = Gateway::start(gdir.path(), 0, &["--heartbeat-ms", "60000"]);
    let url = gw.ws_url();

    // A healthy node stays connected through everything below.
    let good_key = new_key(&kdir, "good");
    let token = gw.enroll("good").await;
    let (mut good, got) = handshake(&url, &good_key, &token).await;
    // A current node is answered in the newest protocol revision.
    assert!(
        matches!(got, Got::Frame(Frame::HelloOk(ref h)) if h.protocol == viber::protocol::PROTOCOL_VERSION),
        "{got:?}"
    );

    // Malformed JSON, unknown type and a non-connect frame before the handshake: refused, 1008.
    for (text, code) in [
        ("{not json", ErrorCode::BadFrame),
        (r#"{"type":"warp-drive"}"#, ErrorCode::UnknownType),
        (
            r#"{"type":"heartbeat","status":{"runningTasks":[],"version":"x"}}"#,
            ErrorCode::NotAuthenticated,
        ),
    ] {
        let mut ws = ws_open(&url).await;
        challenge(&mut ws).await;
        send_text(&mut ws, text).await;
        assert_eq!(refusal(recv(&mut ws).await), code, "{text}");
        match recv(&mut ws).await {
            Got::Close(c, _) => assert_eq!(c, close::POLICY),
            other => panic!("{text}: expected close, got {other:?}"),
        }
    }

    // Wrong signature.
    let key = new_key(&kdir, "k1");
    let enroll = gw.enroll("k1").await;
    let mut ws = ws_open(&url).await;
    let nonce = challenge(&mut ws).await;
    let mut c = connect_frame(&key, &nonce, &enroll);
    c.signature = key.sign_b64(b"something else");
    send_frame(&mut ws, &Frame::Connect(c)).await;
    assert_eq!(refusal(recv(&mut ws).await), ErrorCode::BadSignature);

    // A node id that is not the key's fingerprint.
    let mut ws = ws_open(&url).await;
    let nonce = challenge(&mut ws).await;
    let mut c = connect_frame(&key, &nonce, &enroll);
    c.node_id = good_key.node_id();
    send_frame(&mut ws, &Frame::Connect(c)).await;
    assert_eq!(refusal(recv(&mut ws).await), ErrorCode::BadSignature);

    // No protocol revision in common.
    let mut ws = ws_open(&url).await;
    let nonce = challenge(&mut ws).await;
    let mut c = connect_frame(&key, &nonce, &enroll);
    (c.min_protocol, c.max_protocol) = (90, 99);
    send_frame(&mut ws, &Frame::Connect(c)).await;
    assert_eq!(refusal(recv(&mut ws).await), ErrorCode::ProtocolMismatch);

    // Replayed nonce: a connect frame captured from another connection.
    let mut ws1 = ws_open(&url).await;
    let old_nonce = challenge(&mut ws1).await;
    let captured = connect_frame(&key, &old_nonce, &enroll);
    drop(ws1);
    let mut ws = ws_open(&url).await;
    challenge(&mut ws).await;
    send_frame(&mut ws, &Frame::Connect(captured)).await;
    assert_eq!(refusal(recv(&mut ws).await), ErrorCode::BadNonce);

    // The enrollment token was not spent by the failures above; it works once, not twice.
    // A node that speaks only protocol 1 (no chunk batches) is answered in protocol 1.
    let mut _ws_ok = ws_open(&url).await;
    let nonce = challenge(&mut _ws_ok).await;
    let mut c = connect_frame(&key, &nonce, &enroll);
    c.max_protocol = 1;
    send_frame(&mut _ws_ok, &Frame::Connect(c)).await;
    let got = recv(&mut _ws_ok).await;
    assert!(
        matches!(got, Got::Frame(Frame::HelloOk(ref h)) if h.node_token.is_some() && h.protocol == 1),
        "{got:?}"
    );
    let other = new_key(&kdir, "k2");
    let (_, got) = handshake(&url, &other, &enroll).await;
    assert_eq!(refusal(got), ErrorCode::EnrollmentUsed);

    // Expired enrollment token.
    let (status, v) = gw
        .post(
            "/api/nodes/enroll",
            json!({"name": "late", "expiresInSecs": 1}),
        )
        .await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, got) = handshake(&url, &other, v["token"].as_str().unwrap()).await;
    assert_eq!(refusal(got), ErrorCode::EnrollmentExpired);

    // Unknown token, and a node token presented by another key.
    let (_, got) = handshake(&url, &other, "vbr_node_nope").await;
    assert_eq!(refusal(got), ErrorCode::BadToken);
    let (_, got) = handshake(&url, &other, "vbr_enr_nope").await;
    assert_eq!(refusal(got), ErrorCode::BadToken);

    // The healthy connection saw none of it.
    send_frame(&mut good, &Frame::Ping {}).await;
    assert!(matches!(
        recv_no_ping(&mut good).await,
        Got::Frame(Frame::Pong {})
    ));
}

#[tokio::test]
async fn bad_frames_after_the_handshake_get_errors_and_the_connection_stays_up() {
    let gdir = TempDir::new("gw");
    let kdir = TempDir::new("keys");
    let gw = Gateway::start(gdir.path(), 0, &["--heartbeat-ms", "60000"]);
    let key = new_key(&kdir, "k");
    let token = gw.enroll("k").await;
    let (mut ws, got) = handshake(&gw.ws_url(), &key, &token).await;
    assert!(matches!(got, Got::Frame(Frame::HelloOk(_))));

    for (text, code) in [
        ("][", ErrorCode::BadFrame),
        (r#"{"no":"type"}"#, ErrorCode::BadFrame),
        (r#"{"type":"teleport"}"#, ErrorCode::UnknownType),
        (
            r#"{"type":"heartbeat","status":"fine"}"#,
            ErrorCode::InvalidFrame,
        ),
        (
            r#"{"type":"task:submit","taskId":"t","goal":"x"}"#,
            ErrorCode::InvalidFrame,
        ),
    ] {
        send_text(&mut ws, text).await;
        assert_eq!(refusal(recv_no_ping(&mut ws).await), code, "{text}");
    }
    // Still up.
    send_frame(&mut ws, &Frame::Ping {}).await;
    assert!(matches!(
        recv_no_ping(&mut ws).await,
        Got::Frame(Frame::Pong {})
    ));

    // An oversized frame closes with 1009; a new connection is fine afterwards.
    let big = format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(viber::protocol::MAX_FRAME_BYTES + 10)
    );
    let _ =
        futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(big))
            .await;
    match recv_no_ping(&mut ws).await {
        Got::Close(c, _) => assert_eq!(c, close::TOO_BIG),
        other => panic!("expected close 1009, got {other:?}"),
    }
    let mut ws = ws_open(&gw.ws_url()).await;
    challenge(&mut ws).await;
    let big = "y".repeat(viber::protocol::MAX_FRAME_BYTES + 10);
    // The gateway may close (and the kernel reset) the socket before the client has written
    // the whole megabyte: then the write fails and the close frame can be lost with the reset.
    let sent =
        futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(big))
            .await;
    match recv(&mut ws).await {
        Got::Close(c, _) => assert_eq!(c, close::TOO_BIG),
        Got::Ended if sent.is_err() => {}
        other => panic!("expected close 1009 before handshake, got {other:?} (sent: {sent:?})"),
    }
    let health = reqwest::get(format!("{}/health", gw.url)).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn every_api_route_requires_the_operator_token() {
    let gdir = TempDir::new("gw");
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let http = reqwest::Client::new();
    let routes = [
        ("GET", "/api/vibers"),
        ("GET", "/api/nodes"),
        ("GET", "/api/nodes/node_x"),
        ("DELETE", "/api/nodes/node_x"),
        ("POST", "/api/nodes/enroll"),
        ("GET", "/api/tasks"),
        ("POST", "/api/tasks"),
        ("GET", "/api/tasks/t"),
        ("POST", "/api/tasks/t/stop"),
        ("POST", "/api/tasks/t/message"),
        ("GET", "/api/tasks/t/stream"),
        ("GET", "/api/events"),
        ("GET", "/api/no-such-route"),
    ];
    for (method, path) in routes {
        let m: reqwest::Method = method.parse().unwrap();
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic abc"),
            Some("Bearer "),
        ] {
            let mut req = http.request(m.clone(), format!("{}{}", gw.url, path));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let res = req.body("{}").send().await.unwrap();
            assert_eq!(res.status(), 401, "{method} {path} with {auth:?}");
            assert!(res.headers().contains_key("www-authenticate"));
            let v: serde_json::Value = res.json().await.unwrap();
            assert_eq!(v["error"]["code"], "unauthorized", "{method} {path}");
            assert!(v["error"]["message"].is_string());
        }
    }
    // /health needs no token.
    assert_eq!(
        reqwest::get(format!("{}/health", gw.url))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn bad_request_bodies_get_clear_errors() {
    let gdir = TempDir::new("gw");
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let post_raw = |body: &'static str| {
        gw.http
            .post(format!("{}/api/nodes/enroll", gw.url))
            .bearer_auth(&gw.token)
            .body(body)
            .send()
    };
    let res = post_raw("this is not json").await.unwrap();
    assert_eq!(res.status(), 400);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_request");

    let res = post_raw(r#"{"name": 5}"#).await.unwrap();
    assert_eq!(res.status(), 422);
    let res = post_raw(r#"{"name": "a b c"}"#).await.unwrap();
    assert_eq!(res.status(), 422);
    let res = post_raw(r#"{"name": "ok", "unknownField": 1}"#)
        .await
        .unwrap();
    assert_eq!(res.status(), 422);

    // Its own client: the server answers 413 without reading the body and drops that
    // connection, which a shared pool might otherwise try to reuse.
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let res = reqwest::Client::new()
        .post(format!("{}/api/nodes/enroll", gw.url))
        .bearer_auth(&gw.token)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);

    let (status, v) = gw.get("/api/nodes/node_doesnotexist").await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "not_found");
    let (status, _) = gw.get("/api/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_the_node_hears_why() {
    let gdir = TempDir::new("gw");
    let kdir = TempDir::new("keys");
    let mut gw = Gateway::start(gdir.path(), 0, &[]);
    let key = new_key(&kdir, "k");
    let token = gw.enroll("k").await;
    let (mut ws, got) = handshake(&gw.ws_url(), &key, &token).await;
    assert!(matches!(got, Got::Frame(Frame::HelloOk(_))));

    let status = gw.proc.terminate();
    assert!(status.success(), "exit {status:?}\n{}", gw.proc.logs());
    match recv_no_ping(&mut ws).await {
        Got::Close(c, _) => assert_eq!(c, close::GOING_AWAY),
        other => panic!("expected close 1001, got {other:?}"),
    }
    let logs = gw.proc.logs();
    assert!(logs.contains("database closed"), "{logs}");
    // The WAL was checkpointed into the database file.
    let wal = std::fs::metadata(gdir.join("viber.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0);
}

#[tokio::test]
async fn all_in_one_prints_a_login_url_and_its_node_is_online() {
    let dir = TempDir::new("aio");
    let gw = Gateway::all_in_one(dir.path());
    assert_eq!(
        std::fs::read_to_string(dir.join("admin-token"))
            .unwrap()
            .trim(),
        gw.token
    );
    let nodes = gw.nodes().await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["status"], "online");
    // The URL serves a page.
    let res = reqwest::get(format!("{}/", gw.url)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    // Restarting reuses the node's identity: still exactly one node.
    let mut gw = gw;
    assert!(gw.proc.terminate().success(), "{}", gw.proc.logs());
    let gw = Gateway::all_in_one(dir.path());
    let nodes = gw.nodes().await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["status"], "online");
}

/// Issue 12, item 13: what unauthenticated clients can hold is bounded (watchers: tasks.rs).
#[tokio::test]
async fn handshakes_and_sign_ins_are_limited() {
    let dir = TempDir::new("gw");
    let gw = Gateway::start(dir.path(), 0, &["--max-pending-handshakes", "2"]);

    // Two sockets sit in their handshake (challenge received, never answered); a third is
    // refused before the upgrade.
    let mut a = ws_open(&gw.ws_url()).await;
    let mut b = ws_open(&gw.ws_url()).await;
    challenge(&mut a).await;
    challenge(&mut b).await;
    match tokio_tungstenite::connect_async(gw.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 503)
        }
        other => panic!("expected a 503, got {:?}", other.map(|_| ())),
    }
    drop((a, b));
    wait_until("places freed", Duration::from_secs(10), || async {
        tokio_tungstenite::connect_async(gw.ws_url()).await.is_ok()
    })
    .await;

    // Ten failed sign-ins from one address, then even the right token waits.
    let login = |token: &str| {
        reqwest::Client::new()
            .post(format!("{}/api/session", gw.url))
            .json(&json!({ "token": token }))
            .send()
    };
    for _ in 0..10 {
        assert_eq!(login("wrong").await.unwrap().status(), 401);
    }
    let res = login(&gw.token).await.unwrap();
    assert_eq!(res.status(), 429);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // Operator tokens on the API are not affected.
    let (code, _) = gw.get("/api/nodes").await;
    assert_eq!(code, 200);
}

/// Issue 18: the audit log records who changed what, from where and how it ended, sign-ins
/// included, and never a value: a secret set and changed appears as its name only.
#[tokio::test]
async fn the_audit_log_records_changes_and_sign_ins_without_values() {
    const SECRET: &str = "sk-audit-secret-value-4242";
    const SECRET2: &str = "sk-audit-secret-value-9999";
    let gdir = TempDir::new("gw");
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let url = |p: &str| format!("{}{p}", gw.url);
    let res = gw
        .http
        .post(url("/api/session"))
        .json(&json!({"token": "vbr_op_wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = gw
        .http
        .post(url("/api/session"))
        .json(&json!({"token": gw.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let csrf = res.json::<serde_json::Value>().await.unwrap()["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, v) = gw
        .post(
            "/api/environments",
            json!({"name": "aud", "type": "manual", "secrets": {"API_KEY": SECRET}}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    // Changed from the board: the session, not the token.
    let res = gw
        .http
        .put(url("/api/environments/aud"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"secrets": {"API_KEY": SECRET2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    // Reads are not recorded.
    let (code, _) = gw.get("/api/environments").await;
    assert_eq!(code, 200);

    let (code, page) = gw.get("/api/audit?limit=10").await;
    assert_eq!(code, 200, "{page}");
    let text = page.to_string();
    assert!(!text.contains(SECRET) && !text.contains(SECRET2), "{page}");
    let e = page["entries"].as_array().unwrap();
    let summary: Vec<(String, String, String, u64)> = e
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (
                s("actor"),
                s("method"),
                s("route"),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let session = e[0]["actor"].as_str().unwrap().to_string();
    assert!(session.starts_with("session:"), "{page}");
    assert_eq!(
        summary,
        [
            (session, "PUT".into(), "/api/environments/{id}".into(), 200),
            (
                "operator-token".into(),
                "POST".into(),
                "/api/environments".into(),
                201
            ),
            (
                "anonymous".into(),
                "POST".into(),
                "/api/session".into(),
                201
            ),
            (
                "anonymous".into(),
                "POST".into(),
                "/api/session".into(),
                401
            ),
        ]
    );
    assert_eq!(e[0]["path"], "/api/environments/aud");
    assert_eq!(e[0]["fields"], json!(["secrets", "secrets.API_KEY"]));
    assert_eq!(e[0]["peer"], "127.0.0.1");
    assert!(e[0]["at"].is_string());

    // Pages, newest first.
    let (_, first) = gw.get("/api/audit?limit=3").await;
    let before = first["nextBefore"].as_i64().unwrap();
    let (_, rest) = gw.get(&format!("/api/audit?limit=3&before={before}")).await;
    // Four writes in all (the reads of the log are not recorded): one is left, the first.
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["entries"][0]["status"], 401);
    assert!(rest.get("nextBefore").is_none(), "{rest}");
    let (code, _) = gw.get("/api/audit?limit=0").await;
    assert_eq!(code, 422);

    // The CLI prints the same log.
    let printed = gw.cli(&["audit", "--limit", "5"]);
    assert!(printed.contains("PUT /api/environments/aud"), "{printed}");
    assert!(printed.contains("secrets.API_KEY"), "{printed}");
    assert!(!printed.contains(SECRET2), "{printed}");
}

/// Issue 18: `install` writes a systemd unit that `systemd-analyze verify` accepts without a
/// word, keeps the node's enrollment token out of the unit (in a 0600 environment file), and
/// `uninstall` removes it. (Starting it needs a running systemd, which this machine has not.)
#[tokio::test]
async fn service_units_verify_and_keep_secrets_out() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("svc");
    let home = dir.join("home");
    let units = dir.join("units");
    let verify = |unit: &std::path::Path| {
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(unit)
            .output()
            .expect("systemd-analyze (scripts/test.sh installs systemd)");
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{}: {said}",
            unit.display()
        );
    };
    let viber = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("VIBER_HOME")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // --print, for each role: written nowhere, valid as it is.
    for role in ["gateway", "all-in-one"] {
        let unit = viber(&[role, "install", "--print", "--", "--listen", "0.0.0.0:7391"]);
        let path = dir.join(&format!("viber-{role}.service"));
        std::fs::write(&path, &unit).unwrap();
        verify(&path);
        for key in [
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "EnvironmentFile=-",
            &format!(" {role} --listen 0.0.0.0:7391"),
        ] {
            assert!(unit.contains(key), "{role}: no {key} in\n{unit}");
        }
    }
    // A node's user service, written but not started.
    const TOKEN: &str = "vbr_enr_service_test_4242";
    let said = viber(&[
        "node",
        "install",
        "--gateway",
        "http://127.0.0.1:7391",
        "--token",
        TOKEN,
        "--name",
        "box 1",
        "--user",
        "--no-start",
        "--unit-dir",
        units.to_str().unwrap(),
    ]);
    assert!(said.contains("not started"), "{said}");
    let unit_path = units.join("viber-node.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    verify(&unit_path);
    assert!(!unit.contains(TOKEN), "{unit}");
    assert!(unit.contains(" node --name \"box 1\""), "{unit}");
    assert!(unit.contains("WantedBy=default.target"), "{unit}");
    let env_file = home.join(".config/viber/node.env");
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains(&format!("VIBER_NODE_TOKEN={TOKEN}")), "{env}");
    assert!(env.contains("VIBER_GATEWAY=http://127.0.0.1:7391"), "{env}");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Installing again with a new gateway keeps the operator's own lines.
    std::fs::write(&env_file, env + "VIBER_SANDBOX=auto\n").unwrap();
    viber(&[
        "node",
        "install",
        "--gateway",
        "https://gw.example:7391",
        "--user",
        "--no-start",
        "--unit-dir",
        units.to_str().unwrap(),
    ]);
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        env.contains("VIBER_SANDBOX=auto") && env.contains(TOKEN),
        "{env}"
    );
    assert_eq!(env.matches("VIBER_GATEWAY=").count(), 1, "{env}");
    assert!(
        env.contains("VIBER_GATEWAY=https://gw.example:7391"),
        "{env}"
    );
    // Uninstall removes the unit and keeps the settings.
    let said = viber(&[
        "node",
        "uninstall",
        "--user",
        "--no-stop",
        "--unit-dir",
        units.to_str().unwrap(),
    ]);
    assert!(said.contains("removed"), "{said}");
    assert!(!unit_path.exists());
    assert!(env_file.exists());
}
