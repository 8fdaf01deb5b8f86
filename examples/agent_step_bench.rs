//! Agent step overhead: how long the node takes from a provider's last byte to its next
//! request, i.e. parsing the stream, emitting chunks, running a cheap tool, and building the
//! next request. Runs a real `viber gateway` and `viber node` (release build) against the
//! scripted fake provider of the tests, with a task of many `read_file` steps.
//!
//! ```sh
//! cargo build --release --bins && cargo run --release --example agent_step_bench -- 50
//! ```

#[path = "../tests/common/fake_openai.rs"]
mod fake;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    viber::tls::init();
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/viber");
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
    let mut gw = Command::new(&bin)
        .args(["gateway", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("gw"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("cargo build --release first");
    let mut line = String::new();
    std::io::BufReader::new(gw.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .trim_start_matches("viber ready: ")
        .split("/?token=")
        .next()
        .unwrap()
        .to_string();
    let token = line.trim().split("/?token=").nth(1).unwrap().to_string();
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        http.post(format!("{url}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let enroll: Value = post("/api/nodes/enroll".into(), json!({"name": "bench"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut node = Command::new(&bin)
        .args([
            "node",
            "--gateway",
            &url,
            "--token",
            enroll["token"].as_str().unwrap(),
            "--data-dir",
        ])
        .arg(dir.join("node"))
        .env("RUST_LOG", "warn")
        .env("OPENAI_BASE_URL", &provider.base_url)
        .env("OPENAI_API_KEY", "bench")
        .spawn()
        .unwrap();
    loop {
        let v: Value = http
            .get(format!("{url}/api/vibers"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
    loop {
        let t: Value = http
            .get(format!("{url}/api/tasks/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if t["state"] != "running" && t["state"] != "pending" {
            assert_eq!(t["state"], "completed", "{t}");
            break;
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
    let _ = gw.kill();
    let _ = node.wait();
    let _ = gw.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
