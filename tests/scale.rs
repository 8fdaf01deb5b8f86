//! The node swarm (`examples/node_swarm.rs`) in small: 200 simulated nodes, each with its own
//! key, enroll with one multi-use token, stay connected through heartbeats and run the tasks
//! sent to them, against a real gateway. Keeps the benchmark's code alive; the figures at
//! 10,000 nodes are in BENCHMARKS.md.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

/// The swarm example, where `cargo build --example node_swarm` puts it.
fn swarm_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/node_swarm")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_simulated_nodes_enroll_heartbeat_and_run_tasks() {
    let bin = swarm_bin();
    // Built every time (a moment when it is up to date): `cargo test` does not put a fresh
    // build of an example at this path, so one built earlier would be run as it was.
    // Without the variables cargo set for this test (the package's name and version, its
    // directories): build scripts that watch them would build again, here and in the next
    // `cargo test`.
    let mut build = Command::new(env!("CARGO"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let ours = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_", "CARGO_CFG_"]
            .iter()
            .any(|p| key.starts_with(p))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&&*key);
        if ours {
            build.env_remove(&*key);
        }
    }
    let built = build
        .args(["build", "--example", "node_swarm"])
        .status()
        .unwrap();
    assert!(built.success());
    let dir = TempDir::new("swarm-gw");
    let gw = Gateway::start(dir.path(), 0, &[]);
    let out = tokio::task::spawn_blocking({
        let (url, token, pid) = (gw.url.clone(), gw.token.clone(), gw.proc.pid());
        move || {
            Command::new(bin)
                .args(["--gateway", &url, "--token", &token, "--nodes", "200"])
                .args([
                    "--seconds",
                    "2",
                    "--dispatch",
                    "20",
                    "--pid",
                    &pid.to_string(),
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("200 of 200 nodes connected"), "{text}");
    assert!(text.contains("gateway holding 200 nodes"), "{text}");
    assert!(text.contains("tasks run by the swarm: 40"), "{text}");
    // The floor in the same run: the same connections to a server that only reads them.
    assert!(text.contains("floor: 200 connections"), "{text}");
    assert!(text.contains("heartbeats cost"), "{text}");
    // Each enrolled under its own name from the one token; the swarm has gone.
    let nodes = gw.nodes().await;
    assert_eq!(nodes.len(), 200);
    let mut names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 200);
    assert!(names.iter().all(|n| n.starts_with("swarm-")), "{names:?}");
    wait_until("the swarm to be gone", Duration::from_secs(30), || async {
        gw.nodes().await.iter().all(|n| n["status"] == "offline")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_a_fleet_enrolls_its_count_of_nodes_and_no_more() {
    let dir = TempDir::new("fleet-gw");
    let gw = Gateway::start(dir.path(), 0, &[]);
    let (code, v) = gw
        .post(
            "/api/nodes/enroll",
            serde_json::json!({"name": "rack", "uses": 2}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["uses"], 2);
    let token = v["token"].as_str().unwrap().to_string();
    for i in 0..3 {
        let key = new_key(&dir, &format!("k{i}"));
        let (_ws, got) = handshake(&gw.ws_url(), &key, &token).await;
        match (i, got) {
            (0 | 1, Got::Frame(viber::protocol::Frame::HelloOk(ok))) => {
                assert!(ok.node_token.is_some())
            }
            (2, Got::Frame(viber::protocol::Frame::Error(e))) => {
                assert_eq!(e.code, viber::protocol::ErrorCode::EnrollmentUsed)
            }
            (i, other) => panic!("enrollment {i}: {other:?}"),
        }
    }
    let names: Vec<String> = gw
        .nodes()
        .await
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.iter().all(|n| n.starts_with("rack-")) && names[0] != names[1],
        "{names:?}"
    );
    for bad in [0, 100_001] {
        let (code, _) = gw
            .post(
                "/api/nodes/enroll",
                serde_json::json!({"name": "x", "uses": bad}),
            )
            .await;
        assert_eq!(code, 422);
    }
}
