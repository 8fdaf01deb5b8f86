//! Terminals through the relay: keystroke echo latency (a key sent by a viewer on the
//! gateway's WebSocket, through the gateway and the node to the PTY, echoed back the same
//! way) and bulk output throughput, each beside the same thing on a PTY of this process (the
//! floor: no network, no gateway, no node).
//!
//! ```sh
//! cargo build --release --bins --example terminal_bench
//! ./target/release/examples/terminal_bench [KEYS] [MEGABYTES]    # 500 keys, 100 MB
//! ```
//! It starts a release `viber gateway` and `viber node` (bubblewrap sandbox; tmux for the
//! tmux case) on this machine.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    viber::tls::init();
    let mut args = std::env::args().skip(1);
    let keys: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let megabytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let root = std::env::temp_dir().join(format!("viber-term-bench-{}", std::process::id()));
    let (gdir, ndir, work) = (root.join("gw"), root.join("node"), root.join("work"));
    for d in [&gdir, &ndir, &work] {
        std::fs::create_dir_all(d)?;
    }
    let bin = support::viber_bin();
    let gw = support::start_gateway(&bin, &gdir);
    let http = reqwest::Client::new();
    let token = gw.enroll(&http, "bench").await;
    let node = support::start_node(&bin, &gw, &token, &ndir, "bench");
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", gw.url))
            .bearer_auth(&gw.token)
            .json(&body)
            .send()
    };
    let node_id = gw.wait_online(&http).await;
    let env: Value = post(
        "/api/environments",
        json!({"name": "bench", "type": "local", "localPath": work}),
    )
    .await?
    .json()
    .await?;
    let env_id = env["id"].as_str().unwrap().to_string();
    let binding: Value = post(
        &format!("/api/environments/{env_id}/bindings"),
        json!({"nodeId": node_id}),
    )
    .await?
    .json()
    .await?;
    let binding_id = binding["id"].as_str().unwrap().to_string();
    loop {
        let v = gw
            .get(&http, &format!("/api/environments/{env_id}/bindings"))
            .await;
        if v["bindings"][0]["status"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = |command: Vec<&str>, persistent: bool| {
        let body = json!({"bindingId": binding_id, "command": command, "persistent": persistent});
        let req = post("/api/terminals", body);
        async move {
            let v: Value = req.await?.json().await?;
            anyhow::Ok(v["id"].as_str().unwrap_or_default().to_string())
        }
    };
    let viewer = |id: String| {
        let url = format!(
            "{}/api/terminals/{id}/ws?offset=0",
            gw.url.replace("http://", "ws://")
        );
        let auth = format!("Bearer {}", gw.token);
        async move {
            let mut req = url.into_client_request()?;
            req.headers_mut().insert("authorization", auth.parse()?);
            let (ws, _) = tokio_tungstenite::connect_async(req).await?;
            anyhow::Ok(ws)
        }
    };

    println!("keystroke echo, {keys} keys (one at a time, 2 ms apart):");
    let floor = local_echo(keys)?;
    report("  local PTY (floor)", &floor, None);
    let id = open(vec!["cat"], false).await?;
    let mut ws = viewer(id.clone()).await?;
    let relayed = relay_echo(&mut ws, keys).await?;
    report("  through gateway and node", &relayed, Some(&floor));
    let id2 = open(vec!["cat"], true).await?;
    let mut ws2 = viewer(id2.clone()).await?;
    let tmux = relay_echo(&mut ws2, keys).await?;
    report("  through gateway and node, in tmux", &tmux, Some(&floor));

    let cmd = format!("head -c {megabytes}000000 /dev/urandom | base64");
    println!("bulk output: `{cmd}`:");
    let (bytes, secs) = local_bulk(&cmd)?;
    let floor_rate = bytes as f64 / secs / 1e6;
    println!("  local PTY (floor): {bytes} bytes in {secs:.2} s = {floor_rate:.0} MB/s");
    let id3 = open(vec!["sh", "-c", &cmd], false).await?;
    let started = Instant::now();
    let mut ws3 = viewer(id3).await?;
    let (got, skipped) = relay_bulk(&mut ws3).await?;
    let secs = started.elapsed().as_secs_f64();
    let rate = (got + skipped) as f64 / secs / 1e6;
    println!(
        "  through gateway and node: {} bytes delivered + {skipped} skipped in {secs:.2} s = {rate:.0} MB/s ({:.0}% of the floor)",
        got,
        100.0 * rate / floor_rate
    );
    for id in [id, id2] {
        let _ = http
            .delete(format!("{}/api/terminals/{id}", gw.url))
            .bearer_auth(&gw.token)
            .send()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(node);
    // tmux servers outlive the node by design: end any the run left.
    for e in std::fs::read_dir(ndir.join("tmux"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_none())
    {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(e.path())
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
    drop(gw);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

fn report(what: &str, times: &[Duration], floor: Option<&[Duration]>) {
    let mut t = times.to_vec();
    t.sort();
    let at = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = floor
        .map(|f| {
            let mut f = f.to_vec();
            f.sort();
            format!(
                " ({:.0}x the floor's p50)",
                ms(at(0.5)) / ms(f[f.len() / 2])
            )
        })
        .unwrap_or_default();
    println!(
        "{what}: p50 {:.3} ms, p99 {:.3} ms{ratio}",
        ms(at(0.5)),
        ms(at(0.99))
    );
}

/// Echo of one key at a time on a PTY of this process running `cat`.
fn local_echo(keys: usize) -> anyhow::Result<Vec<Duration>> {
    let pty = nix::pty::openpty(None, None)?;
    let mut child = Command::new("cat")
        .stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave))
        .spawn()?;
    let mut master = std::fs::File::from(pty.master);
    let mut times = Vec::with_capacity(keys);
    let mut buf = [0u8; 64];
    for _ in 0..keys {
        let t = Instant::now();
        master.write_all(b"x")?;
        let n = master.read(&mut buf)?;
        anyhow::ensure!(n >= 1, "no echo");
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(times)
}

/// Bytes of output: a chunk's data, or None for another event (an exit is an error here).
fn output(msg: Message) -> anyhow::Result<Option<(Vec<u8>, u64)>> {
    let Message::Text(t) = msg else {
        return Ok(None);
    };
    let e: Value = serde_json::from_str(t.as_str())?;
    match e["type"].as_str() {
        Some("output") => Ok(Some((
            base64::engine::general_purpose::STANDARD.decode(e["data"].as_str().unwrap_or(""))?,
            0,
        ))),
        Some("skipped") => Ok(Some((
            Vec::new(),
            e["to"].as_u64().unwrap_or(0) - e["from"].as_u64().unwrap_or(0),
        ))),
        Some("exit") => Ok(None),
        _ => anyhow::bail!("viewer event {e}"),
    }
}

async fn relay_echo(ws: &mut Ws, keys: usize) -> anyhow::Result<Vec<Duration>> {
    // Let the terminal start (tmux draws its screen first) and drain what it printed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await {}
    let key = json!({"type": "input", "data": "x"}).to_string();
    let mut times = Vec::with_capacity(keys);
    for _ in 0..keys {
        let t = Instant::now();
        ws.send(Message::Text(key.clone().into())).await?;
        loop {
            let msg = ws.next().await.ok_or_else(|| anyhow::anyhow!("closed"))??;
            if let Some((data, _)) = output(msg)? {
                if data.contains(&b'x') {
                    break;
                }
            }
        }
        times.push(t.elapsed());
        // tmux may send more (a redraw) after the echo: let it come before the next key.
        tokio::time::sleep(Duration::from_millis(2)).await;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_micros(100), ws.next()).await {}
    }
    Ok(times)
}

fn local_bulk(cmd: &str) -> anyhow::Result<(u64, f64)> {
    let pty = nix::pty::openpty(None, None)?;
    let started = Instant::now();
    let mut child = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave))
        .spawn()?;
    let mut master = std::fs::File::from(pty.master);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let _ = child.wait();
    Ok((total, started.elapsed().as_secs_f64()))
}

async fn relay_bulk(ws: &mut Ws) -> anyhow::Result<(u64, u64)> {
    let (mut got, mut skipped) = (0u64, 0u64);
    let debug = std::env::var_os("BENCH_DEBUG").is_some();
    let mut last = Instant::now();
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        if debug && last.elapsed() > Duration::from_millis(500) {
            last = Instant::now();
            eprintln!("progress: {got} delivered, {skipped} skipped");
        }
        if let Message::Text(t) = &msg {
            if t.as_str().contains("\"exit\"") || t.as_str().contains("\"error\"") {
                if std::env::var_os("BENCH_DEBUG").is_some() {
                    eprintln!("end: {}", t.as_str());
                }
                break;
            }
        }
        if let Some((data, skip)) = output(msg)? {
            got += data.len() as u64;
            skipped += skip;
        }
    }
    Ok((got, skipped))
}
