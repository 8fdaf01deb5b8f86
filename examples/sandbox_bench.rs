//! What the sandbox adds to starting a process: `bash -c true` started and reaped N times
//! through the node's own command builder, unconfined (`--sandbox off`, the floor) and under
//! bubblewrap with each `networkAccess` (`on`, `off`: a network namespace of its own,
//! `allowlist`: that plus the node's proxy and the forwarder inside).
//!
//! `cargo build --release && cargo run --release --example sandbox_bench -- [RUNS]` (200 by
//! default; the allowlist case runs the release `viber` binary's forwarder).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use viber::node::sandbox::{Allowlist, Mode, Network, Sandbox};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let root = std::env::temp_dir().join(format!("viber-sandbox-bench-{}", std::process::id()));
    let data = root.join("data");
    let work = data.join("workspace").join("bench");
    std::fs::create_dir_all(&work)?;
    let env = BTreeMap::new();
    let off = Sandbox::detect(
        Mode::Off,
        &data,
        &data.join("workspace"),
        HashMap::new(),
        Vec::new(),
    )?;
    // The allowlist case runs `viber sandbox-forward` inside: the release binary next to this
    // example.
    let viber = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|release| release.join("viber"))
        .filter(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("build the viber binary first: cargo build --release"))?;
    let bwrap = Sandbox::detect(
        Mode::Bwrap,
        &data,
        &data.join("workspace"),
        HashMap::new(),
        Vec::new(),
    )?
    .with_forwarder(viber);
    let cases = [
        ("unconfined (floor)", &off, Network::On),
        ("bwrap, network on", &bwrap, Network::On),
        ("bwrap, network off", &bwrap, Network::Off),
        (
            "bwrap, allowlist (proxy + forwarder)",
            &bwrap,
            Network::Allowlist(Arc::new(Allowlist::new(vec!["example.com".into()], None))),
        ),
    ];
    let mut floor = None;
    println!("{runs} runs of `bash -c true` each");
    for (name, sandbox, net) in cases {
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let mut p = sandbox
                .command("bash", &["-c", "true"], &work, &env, &net)
                .map_err(anyhow::Error::msg)?;
            let status = p.cmd.status().await?;
            anyhow::ensure!(status.success(), "{name}: {status}");
            times.push(t.elapsed());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let p50 = times[runs / 2];
        let p99 = times[(runs * 99 / 100).min(runs - 1)];
        let ratio = match floor {
            None => {
                floor = Some(p50);
                String::new()
            }
            Some(f) => format!(" ({:.1}x the floor)", ms(p50) / ms(f)),
        };
        println!(
            "{name:40} p50 {:6.2} ms  p99 {:6.2} ms{ratio}",
            ms(p50),
            ms(p99)
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
