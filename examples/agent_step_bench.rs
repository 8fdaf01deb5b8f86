//! Agent step overhead: how long the node takes from a provider's last byte to its next
//! request, i.e. parsing the stream, emitting chunks, running a cheap tool, and building the
//! next request. Runs a real `viber gateway` and `viber node` (release build) against the
//! scripted fake provider of the tests, with a task of many `read_file` steps (at most 29:
//! the agent's step limit is 30).
//!
//! ```sh
//! cargo build --release --bins && cargo run --release --example agent_step_bench -- 25
//! ```

#[path = "../tests/common/fake_openai.rs"]
mod fake;
mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    viber::tls::init();
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(25);
    let bin = support::viber_bin();
    let mut script: Vec<fake::Reply> = (0..steps)
        .map(|i| {
            fake::tool_call(
                &format!("call_{i}"),
                "read_file",
                json!({"path": "input.txt"}),
            )
        })
        .collect();
    script.push(fake::text("done"));
    let provider = fake::FakeOpenAi::start(script).await;

    let dir = std::env::temp_dir().join(format!("viber-agent-bench-{}", std::process::id()));
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("input.txt"), "a small file\n".repeat(20)).unwrap();
    let gw = support::start_gateway(&bin, &dir.join("gw"));
    let (url, token) = (gw.url.clone(), gw.token.clone());
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        http.post(format!("{url}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let enroll = gw.enroll(&http, "bench").await;
    let mut node = Command::new(&bin)
        .args(["node", "--gateway", &url, "--token", &enroll, "--data-dir"])
        .arg(dir.join("node"))
        .env("RUST_LOG", "warn")
        .env("OPENAI_BASE_URL", &provider.base_url)
        .env("OPENAI_API_KEY", "bench")
        .spawn()
        .unwrap();
    loop {
        let v = gw.get(&http, "/api/vibers").await;
        if v["nodes"][0]["status"] == "online" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let task: Value = post(
        "/api/tasks".into(),
        json!({"goal": "read it many times", "options": {"cwd": work}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = task["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let t = gw.get(&http, &format!("/api/tasks/{id}")).await;
        if t["state"] != "running" && t["state"] != "pending" {
            assert_eq!(t["state"], "completed", "{t}");
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = node.kill();
            panic!(
                "task did not finish within 120 s: {t}; provider saw {} requests",
                provider.requests().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let timings = provider.timings();
    let mut gaps: Vec<f64> = timings
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].1).as_secs_f64() * 1000.0)
        .collect();
    gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| gaps[((gaps.len() as f64 * p) as usize).min(gaps.len() - 1)];
    println!(
        "{} steps; node overhead per step (provider's last byte -> next request, incl. one read_file): \
         p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms, mean {:.2} ms",
        gaps.len(),
        pct(0.5),
        pct(0.9),
        gaps.last().unwrap(),
        gaps.iter().sum::<f64>() / gaps.len() as f64
    );
    let _ = node.kill();
    let _ = node.wait();
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
