//! Idle memory of `viber gateway` and `viber node` (connected to it), and of `viber
//! all-in-one`: what `/proc` says each holds, and what each touches while idle.
//!
//! ```sh
//! cargo build --release --bins --example idle_bench
//! ./target/release/examples/idle_bench [SETTLE_SECS] [WINDOW_SECS]    # 5, 10
//! ```
//! Each process runs `SETTLE_SECS` after its node is online, then its resident set is read
//! (VmRSS, split into anonymous memory and pages of files, mostly the executable, mapped in).
//! Then its pages' referenced bits are cleared (`/proc/PID/clear_refs`) and, `WINDOW_SECS`
//! later, the pages it touched meanwhile are summed (`Referenced` in `smaps_rollup`): its
//! idle working set. The difference is pages mapped at start (the kernel maps 64 KiB of a
//! file around each page fault) and not used since, clean and shared with the page cache,
//! which the kernel takes back when memory is wanted.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[tokio::main]
async fn main() {
    viber::tls::init();
    let mut args = std::env::args().skip(1);
    let settle: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let window: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let root = std::env::temp_dir().join(format!("viber-idle-bench-{}", std::process::id()));
    let bin = support::viber_bin();
    let http = reqwest::Client::new();

    let gw = support::start_gateway(&bin, &root.join("gw"));
    let token = gw.enroll(&http, "idle").await;
    let node = support::start_node(&bin, &gw, &token, &root.join("node"), "idle");
    gw.wait_online(&http).await;
    let aio = start_all_in_one(&bin, &root.join("aio"));
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let pids = [
        ("viber gateway (one node)", gw.child.id()),
        ("viber node (connected)", node.0.id()),
        ("viber all-in-one", aio.child.id()),
    ];
    let resident: Vec<_> = pids.iter().map(|(_, pid)| resident(*pid)).collect();
    for (_, pid) in &pids {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "1").expect("clear_refs");
    }
    tokio::time::sleep(Duration::from_secs(window)).await;
    println!(
        "after {settle} s idle; working set: pages touched in the next {window} s\n\
         | process | VmRSS | anonymous | files mapped | idle working set |\n\
         |---|---|---|---|---|"
    );
    let mb = |kb: u64| kb as f64 / 1024.0;
    for ((name, pid), (rss, anon, file)) in pids.iter().zip(resident) {
        let working_set = support::proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Referenced:");
        println!(
            "| {name} | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB |",
            mb(rss),
            mb(anon),
            mb(file),
            mb(working_set)
        );
    }
    drop((aio, node, gw));
    let _ = std::fs::remove_dir_all(&root);
}

/// VmRSS, RssAnon and RssFile + RssShmem of a process, in KiB.
fn resident(pid: u32) -> (u64, u64, u64) {
    let kb = |f| support::status_kb(pid, f);
    (
        kb("VmRSS:"),
        kb("RssAnon:"),
        kb("RssFile:") + kb("RssShmem:"),
    )
}

/// `viber all-in-one` on a free port with its data in `dir`, once it is ready (its node
/// online: the ready line comes after it).
fn start_all_in_one(bin: &Path, dir: &Path) -> support::GatewayProc {
    let child: Child = Command::new(bin)
        .args(["all-in-one", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting viber all-in-one");
    support::GatewayProc::from_ready(child)
}
