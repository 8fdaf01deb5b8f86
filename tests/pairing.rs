//! Device pairing: a node started without a token waits for an operator, who approves or
//! rejects its key fingerprint; `all-in-one` lets its own machine's nodes in.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use viber::crypto::NodeKey;
use viber::protocol::sse::SseParser;
use viber::protocol::{ErrorCode, Frame};

const T: Duration = Duration::from_secs(20);

/// The pairing requests the gateway lists.
async fn pending(gw: &Gateway) -> Vec<Value> {
    let (status, v) = gw.get("/api/nodes/pending").await;
    assert_eq!(status, 200, "{v}");
    v["requests"].as_array().unwrap().clone()
}

/// Waits until the request of `fingerprint` is listed with `status` (and, for `pending`, its
/// device is connected and waiting).
async fn wait_request(gw: &Gateway, fingerprint: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let found = pending(gw).await.into_iter().find(|r| {
            r["fingerprint"] == fingerprint
                && r["status"] == status
                && (status != "pending" || r["waiting"] == true)
        });
        if let Some(r) = found {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{fingerprint} not {status}: {:?}\n{}",
            pending(gw).await,
            gw.proc.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node id (key fingerprint) of the node whose data dir is `dir`, once it made its key.
async fn fingerprint_of(dir: &TempDir) -> String {
    let key = dir.join("node-key");
    wait_until("the node's key", T, || {
        let key = key.clone();
        async move { key.exists() }
    })
    .await;
    NodeKey::load_or_create(&key).unwrap().node_id()
}

#[tokio::test]
async fn a_node_without_a_token_waits_for_approval_and_a_rejected_key_stays_out() {
    let gdir = TempDir::new("gw");
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let mut events = gw.get_ok("/api/events").await.bytes_stream();

    // A node on loopback against a plain gateway still needs an operator.
    let ndir = TempDir::new("node");
    let mut node = start_node(&gw.url, None, ndir.path(), "laptop-7");
    let fp = fingerprint_of(&ndir).await;
    let req = wait_request(&gw, &fp, "pending").await;
    assert_eq!(req["name"], "laptop-7", "{req}");
    assert!(!req["hostname"].as_str().unwrap().is_empty(), "{req}");
    assert!(
        req["platform"].as_str().unwrap().starts_with("linux"),
        "{req}"
    );
    assert_eq!(req["address"], "127.0.0.1", "{req}");
    assert_eq!(req["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        gw.nodes().await.is_empty(),
        "a pending device is not a node"
    );
    assert!(
        node.logs().contains(&format!("viber node approve {fp}")),
        "{}",
        node.logs()
    );

    // The board hears of it live.
    let mut parser = SseParser::default();
    let requested = loop {
        let bytes = tokio::time::timeout(T, events.next())
            .await
            .expect("no pairing.requested event")
            .unwrap()
            .unwrap();
        let evs = parser.push_bytes(&bytes).unwrap();
        if let Some(e) = evs
            .iter()
            .find(|e| e.event.as_deref() == Some("pairing.requested"))
        {
            break serde_json::from_str::<Value>(&e.data).unwrap();
        }
    };
    assert_eq!(requested["fingerprint"], fp.as_str());

    // The CLI lists it; too short a prefix is refused; approval by a prefix renames it.
    let listed = gw.cli(&["node", "pending"]);
    assert!(
        listed.contains(&fp) && listed.contains("waiting"),
        "{listed}"
    );
    let (status, v) = gw
        .post("/api/nodes/pending/node_ab/approve", json!({}))
        .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = gw
        .post(
            &format!("/api/nodes/pending/{fp}/approve"),
            json!({"name": "bad name!"}),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    let prefix = &fp["node_".len().."node_".len() + 10];
    let out = gw.cli(&["node", "approve", prefix, "--name", "paired-01"]);
    assert!(out.contains("coming online"), "{out}");

    // It comes online without a restart and keeps its token for later connections.
    gw.wait_node_status("paired-01", "online", T).await;
    assert!(node.is_running(), "{}", node.logs());
    assert_eq!(gw.nodes().await[0]["id"], fp.as_str());
    assert!(pending(&gw).await.is_empty());
    let creds = ndir.join("node.json");
    wait_until("saved credentials", T, || {
        let creds = creds.clone();
        async move { creds.exists() }
    })
    .await;
    node.kill9();
    gw.wait_node_status("paired-01", "offline", T).await;
    let _node = start_node(&gw.url, None, ndir.path(), "laptop-7");
    gw.wait_node_status("paired-01", "online", T).await;
    assert!(pending(&gw).await.is_empty());

    // Another device is rejected: its connection ends, the node exits, and the key is
    // refused when it comes back.
    let odir = TempDir::new("intruder");
    let mut other = start_node(&gw.url, None, odir.path(), "intruder");
    let ofp = fingerprint_of(&odir).await;
    wait_request(&gw, &ofp, "pending").await;
    let out = gw.cli(&["node", "reject", &ofp]);
    assert!(out.contains("refused"), "{out}");
    let exit = other
        .wait_exit(T)
        .unwrap_or_else(|| panic!("rejected node kept running:\n{}", other.logs()));
    assert!(!exit.success());
    assert!(other.logs().contains("PairingRejected"), "{}", other.logs());
    wait_request(&gw, &ofp, "rejected").await;
    let key = NodeKey::load_or_create(&odir.join("node-key")).unwrap();
    let (_, got) = handshake(&gw.ws_url(), &key, "").await;
    assert!(
        matches!(got, Got::Frame(Frame::Error(ref e)) if e.code == ErrorCode::PairingRejected),
        "{got:?}"
    );
    assert_eq!(gw.nodes().await.len(), 1);

    // Every decision is in the audit log.
    let (_, audit) = gw.get("/api/audit").await;
    let routes: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["route"].as_str())
        .collect();
    assert!(
        routes.contains(&"/api/nodes/pending/{fingerprint}/approve"),
        "{routes:?}"
    );
    assert!(
        routes.contains(&"/api/nodes/pending/{fingerprint}/reject"),
        "{routes:?}"
    );
}

#[tokio::test]
async fn pairing_requests_lapse_and_are_limited_per_address() {
    let gdir = TempDir::new("gw");
    let gw = Gateway::start(gdir.path(), 0, &["--pairing-ttl-secs", "1"]);
    let kdir = TempDir::new("keys");

    // Nobody answers: the request lapses and the device is told so (it may ask again).
    let key = new_key(&kdir, "k");
    let mut ws = ws_open(&gw.ws_url()).await;
    let nonce = challenge(&mut ws).await;
    send_frame(&mut ws, &Frame::Connect(connect_frame(&key, &nonce, ""))).await;
    let Got::Frame(Frame::PairingPending(p)) = recv(&mut ws).await else {
        panic!("expected pairing:pending");
    };
    assert_eq!(p.fingerprint, key.node_id());
    match recv_no_ping(&mut ws).await {
        Got::Frame(Frame::Error(e)) => assert_eq!(e.code, ErrorCode::PairingExpired, "{e:?}"),
        other => panic!("expected pairing_expired, got {other:?}"),
    }

    // Approving what lapsed is a 404.
    let (status, v) = gw
        .post(
            &format!("/api/nodes/pending/{}/approve", key.node_id()),
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "{v}");

    // One address may ask only so often: past the limit it is told to wait.
    let mut limited = None;
    for i in 0..=viber::gateway::limits::PAIRING_REQUESTS {
        let key = new_key(&kdir, &format!("many-{i}"));
        let mut ws = ws_open(&gw.ws_url()).await;
        let nonce = challenge(&mut ws).await;
        send_frame(&mut ws, &Frame::Connect(connect_frame(&key, &nonce, ""))).await;
        if let Got::Frame(Frame::Error(e)) = recv(&mut ws).await {
            limited = Some((i, e));
            break;
        }
    }
    let (i, e) = limited.expect("pairing requests were not limited");
    assert_eq!(e.code, ErrorCode::RateLimited, "{e:?}");
    // The first request above counted too.
    assert_eq!(i + 1, viber::gateway::limits::PAIRING_REQUESTS, "{e:?}");
}

#[tokio::test]
async fn all_in_one_lets_nodes_on_its_own_machine_in() {
    let dir = TempDir::new("aio");
    let gw = Gateway::all_in_one(dir.path());
    let ndir = TempDir::new("second");
    let _node = start_node(&gw.url, None, ndir.path(), "second");
    gw.wait_node_status("second", "online", T).await;
    assert_eq!(gw.nodes().await.len(), 2);
    assert!(pending(&gw).await.is_empty());
}
