//! `/metrics`: the operator's token is needed on the main address, not on
//! `--metrics-listen`; the text parses with the Prometheus project's own Python parser
//! (`prometheus_client`, installed into a venv by scripts/test.sh), and its counters move
//! when a task runs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The metric families and samples, as `prometheus_client.parser` reads `text`.
fn parse(text: &str) -> Value {
    let Some(python) = std::env::var_os("PROMETHEUS_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must parse /metrics with prometheus_client: set PROMETHEUS_PYTHON (scripts/test.sh does)"
        );
        eprintln!(
            "\n*** SKIPPED the parse: PROMETHEUS_PYTHON is not set; run ./scripts/test.sh ***\n"
        );
        return Value::Null;
    };
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = {"type": fam.type, "samples": [[s.name, s.labels, s.value] for s in fam.samples]}
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `sample` (with all of `labels`) in a parsed scrape.
fn sample(parsed: &Value, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    parsed[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family} in {parsed}"))
        .iter()
        .find(|s| s[0] == sample && labels.iter().all(|(k, v)| s[1][k] == *v))
        .and_then(|s| s[2].as_f64())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_with_prometheus_and_move_when_a_task_runs() {
    let gdir = TempDir::new("metrics-gw");
    let ndir = TempDir::new("metrics-node");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gw = Gateway::start(gdir.path(), 0, &["--metrics-listen", &listen]);
    let token = gw.enroll("m").await;
    let _node = start_node(&gw.url, Some(&token), ndir.path(), "m");
    gw.wait_node_status("m", "online", Duration::from_secs(30))
        .await;

    // The main address wants the operator token; the metrics address does not, and serves
    // nothing else.
    let plain = reqwest::get(format!("{}/metrics", gw.url)).await.unwrap();
    assert_eq!(plain.status(), 401);
    let scrape = |url: String| async move {
        let res = reqwest::get(url).await.unwrap();
        assert_eq!(res.status(), 200);
        let ct = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        res.text().await.unwrap()
    };
    let before = parse(&scrape(format!("http://{listen}/metrics")).await);
    let other = reqwest::get(format!("http://{listen}/api/nodes"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    let (code, t) = gw
        .post(
            "/api/tasks",
            json!({"goal": "for i in 1 2 3; do echo line-$i; done", "executor": "shell"}),
        )
        .await;
    assert_eq!(code, 201, "{t}");
    let (task, _) = gw.finished(t["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "completed");

    // A prepare, timed from its queueing to ready.
    let node_id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
    let (code, env) = gw
        .post(
            "/api/environments",
            json!({"name": "m-env", "type": "manual"}),
        )
        .await;
    assert_eq!(code, 201, "{env}");
    let bindings = format!("/api/environments/{}/bindings", env["id"].as_str().unwrap());
    let (code, b) = gw.post(&bindings, json!({"nodeId": node_id})).await;
    assert!(code == 201 || code == 200, "{b}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = gw.get(&bindings).await;
        if v["bindings"][0]["status"] == "ready" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ready: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let text = gw.get_ok("/metrics").await.text().await.unwrap();
    // Only bounded label values: no task or node ids.
    assert!(
        !text.contains(t["id"].as_str().unwrap()) && !text.contains("node_"),
        "{text}"
    );
    // The CLI prints the same scrape.
    assert!(gw
        .cli(&["metrics"])
        .contains("# TYPE viber_chunks_relayed counter"));
    let after = parse(&text);
    if after.is_null() {
        return;
    }
    assert_eq!(
        sample(
            &after,
            "viber_nodes",
            "viber_nodes",
            &[("status", "online")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "viber_tasks",
            "viber_tasks",
            &[("state", "completed"), ("executor", "shell")]
        ),
        1.0
    );
    let chunks = |p: &Value| sample(p, "viber_chunks_relayed", "viber_chunks_relayed_total", &[]);
    assert!(chunks(&after) >= chunks(&before) + 3.0, "{after}");
    // Chunks come one to a frame or, when they pile up, several to a batch.
    let frames = |p: &Value| {
        ["task:stream-chunk", "task:stream-chunks"]
            .iter()
            .map(|t| {
                sample(
                    p,
                    "viber_ws_frames_received",
                    "viber_ws_frames_received_total",
                    &[("type", t)],
                )
            })
            .sum::<f64>()
    };
    assert!(frames(&after) > frames(&before));
    assert_eq!(after["viber_sqlite_batch_seconds"]["type"], "histogram");
    assert!(
        sample(
            &after,
            "viber_sqlite_batch_seconds",
            "viber_sqlite_batch_seconds_count",
            &[]
        ) >= 1.0
    );
    assert_eq!(after["viber_prepare_seconds"]["type"], "histogram");
    assert_eq!(
        sample(
            &after,
            "viber_prepare_seconds",
            "viber_prepare_seconds_count",
            &[("outcome", "ready")]
        ),
        1.0,
        "{after}"
    );
}
