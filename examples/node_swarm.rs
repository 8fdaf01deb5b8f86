//! A swarm of simulated nodes on one gateway: how many stay connected, how fast they
//! handshake, what they cost the gateway (RSS and CPU from `/proc`), how fast a task reaches
//! its node with all of them connected, and (`--storm`) how long they take to come back
//! after the gateway is killed with `kill -9` and restarted.
//!
//! Each simulated node has its own Ed25519 key and speaks the real protocol through the
//! project's own handshake client and codec: it enrolls with a multi-use enrollment token
//! (`POST /api/nodes/enroll {uses}`), heartbeats at the interval the gateway gives it, answers
//! pings, runs the tasks it is sent (a task ends at once, `completed`), and reconnects with
//! the node's own jittered backoff.
//!
//! The floor, in the same run: the same number of connections, sending the same heartbeat
//! frames at the same interval (and answering a ping every two intervals, as the gateway
//! sends them), to a server that does nothing but read them: this example started again as
//! `node_swarm --floor-server`, its own process so its CPU is measured as the gateway's is.
//!
//! ```sh
//! cargo build --release --bins --example node_swarm
//! # against a running gateway (its pid for RSS and CPU):
//! ./target/release/examples/node_swarm --gateway http://127.0.0.1:7391 --token ADMIN_TOKEN \
//!     --nodes 10000 --seconds 30 --pid $(pgrep -f 'viber gateway')
//! # or let it start (and for --storm, kill -9 and restart) a release gateway of its own:
//! ./target/release/examples/node_swarm --spawn --nodes 10000 --seconds 30 --dispatch 200 --storm
//! ```

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use viber::crypto::NodeKey;
use viber::node::handshake::{self, NodeHello};
use viber::node::Backoff;
use viber::protocol::codec;
use viber::protocol::{Frame, NodeStatus};

struct Args {
    gateway: Option<String>,
    token: Option<String>,
    pid: Option<u32>,
    spawn: bool,
    nodes: usize,
    seconds: u64,
    /// Handshakes in flight at once while the swarm connects.
    ramp: usize,
    /// Tasks for a named node, one at a time (latency), then as many spread at once.
    dispatch: usize,
    storm: bool,
    /// The `viber` binary `--spawn` starts.
    viber: std::path::PathBuf,
}

const USAGE: &str = "usage: node_swarm (--gateway URL --token TOKEN [--pid PID] | --spawn) \
[--nodes N] [--seconds S] [--ramp N] [--dispatch N] [--storm] [--viber PATH]";

fn parse_args() -> Args {
    let mut a = Args {
        gateway: None,
        token: None,
        pid: None,
        spawn: false,
        nodes: 200,
        seconds: 5,
        ramp: 256,
        dispatch: 0,
        storm: false,
        viber: support::viber_bin(),
    };
    let mut f = support::Flags::new(USAGE);
    while let Some(k) = f.next_flag() {
        match k.as_str() {
            "--gateway" => a.gateway = Some(f.value(&k)),
            "--token" => a.token = Some(f.value(&k)),
            "--pid" => a.pid = Some(f.value(&k)),
            "--spawn" => a.spawn = true,
            "--nodes" => a.nodes = f.value(&k),
            "--seconds" => a.seconds = f.value(&k),
            "--ramp" => a.ramp = f.value(&k),
            "--dispatch" => a.dispatch = f.value(&k),
            "--storm" => a.storm = true,
            "--viber" => a.viber = f.value(&k),
            other => f.unknown(other),
        }
    }
    if !(a.spawn || (a.gateway.is_some() && a.token.is_some())) {
        f.fail("give --gateway URL --token TOKEN, or --spawn");
    }
    if a.storm && !a.spawn {
        f.fail("--storm needs --spawn (it kills and restarts the gateway)");
    }
    a
}

/// What every simulated node shares with the driver.
#[derive(Default)]
struct Swarm {
    connected: AtomicUsize,
    handshakes: AtomicU64,
    failures: AtomicU64,
    tasks_run: AtomicU64,
    /// When each task (by goal) reached its node.
    received: Mutex<HashMap<String, Instant>>,
    /// Node ids, in the order they first connected.
    ids: Mutex<Vec<String>>,
    /// The heartbeat interval the gateway gave (ms).
    heartbeat_ms: AtomicU64,
}

/// CPU seconds (user + system) and RSS (KiB) of a process, from `/proc`.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    std::fs::metadata(format!("/proc/{pid}")).ok()?;
    Some((support::cpu_secs(pid), support::status_kb(pid, "VmRSS:")))
}

/// One simulated node, for ever (until `stop`): connect, serve, reconnect with backoff.
async fn node(
    ws_url: String,
    enroll: String,
    swarm: Arc<Swarm>,
    gate: Arc<tokio::sync::Semaphore>,
    stop: CancellationToken,
) {
    let key = NodeKey::generate().expect("key");
    let hello = NodeHello {
        name: "swarm".into(),
        version: "swarm".into(),
        platform: "linux".into(),
        capabilities: vec!["shell".into()],
        hostname: None,
    };
    let mut token = enroll;
    let mut first = true;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    while !stop.is_cancelled() {
        let permit = gate.acquire().await.expect("gate");
        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            handshake::connect(&ws_url, &key, &token, &hello),
        )
        .await;
        drop(permit);
        match connected {
            Ok(Ok((ws, ok))) => {
                if let Some(t) = ok.node_token {
                    token = t;
                }
                if first {
                    swarm.ids.lock().unwrap().push(ok.node_id.clone());
                    swarm
                        .heartbeat_ms
                        .store(ok.heartbeat_interval_ms, Ordering::Relaxed);
                    first = false;
                }
                swarm.handshakes.fetch_add(1, Ordering::Relaxed);
                swarm.connected.fetch_add(1, Ordering::Relaxed);
                backoff.reset();
                serve(ws, ok.heartbeat_interval_ms, &swarm, &stop).await;
                swarm.connected.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {
                swarm.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// One connection to the floor's server, served as a node's until `stop`.
async fn floor_node(
    url: String,
    heartbeat_ms: u64,
    swarm: Arc<Swarm>,
    gate: Arc<tokio::sync::Semaphore>,
    stop: CancellationToken,
) {
    let permit = gate.acquire().await.expect("gate");
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
        swarm.failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    drop(permit);
    swarm.connected.fetch_add(1, Ordering::Relaxed);
    serve(ws, heartbeat_ms, &swarm, &stop).await;
    swarm.connected.fetch_sub(1, Ordering::Relaxed);
}

/// The floor's server (`node_swarm --floor-server MS`): prints its port, then reads every
/// frame of every connection and does nothing with it, and pings each connection every two
/// heartbeat intervals of MS, as the gateway does.
async fn floor_server(heartbeat_ms: u64) {
    let _ = viber::os::raise_fd_limit();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    let every = Duration::from_millis(heartbeat_ms.max(100) * 2);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    m = rx.next() => if !matches!(m, Some(Ok(_))) {
                        return;
                    },
                    _ = ping.tick() => if codec::write(&mut tx, &Frame::Ping {}).await.is_err() {
                        return;
                    },
                }
            }
        });
    }
}

/// Runs the floor: `nodes` connections for `seconds` to a server of its own; the server's
/// share of a core.
async fn floor(nodes: usize, heartbeat_ms: u64, seconds: u64, ramp: usize) -> f64 {
    let mut server = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--floor-server", &heartbeat_ms.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the floor's server");
    let url = format!("ws://127.0.0.1:{}/", support::first_line(&mut server));
    let swarm = Arc::new(Swarm::default());
    let stop = CancellationToken::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(ramp));
    for _ in 0..nodes {
        tokio::spawn(floor_node(
            url.clone(),
            heartbeat_ms,
            swarm.clone(),
            gate.clone(),
            stop.clone(),
        ));
    }
    wait_connected(&swarm, nodes, Duration::from_secs(120)).await;
    let connected = swarm.connected.load(Ordering::Relaxed);
    let t0 = support::cpu_secs(server.id());
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let share = (support::cpu_secs(server.id()) - t0) / start.elapsed().as_secs_f64() * 100.0;
    stop.cancel();
    let _ = server.kill();
    let _ = server.wait();
    println!(
        "floor: {connected} connections sending the same heartbeats for {seconds} s to a server that only reads them (and pings each every {} s): {share:.1}% of a core",
        heartbeat_ms * 2 / 1000
    );
    share
}

/// One connection: heartbeats, pongs, tasks that end at once; returns when it closes.
async fn serve(
    ws: handshake::WsStream,
    heartbeat_ms: u64,
    swarm: &Swarm,
    stop: &CancellationToken,
) {
    let (mut tx, mut rx) = ws.split();
    let period = Duration::from_millis(heartbeat_ms.max(100));
    // Spread the swarm's heartbeats over the interval.
    let offset = Duration::from_millis(viber::crypto::random_u64() % period.as_millis() as u64);
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    loop {
        let reply: Vec<Frame> = tokio::select! {
            _ = stop.cancelled() => return,
            _ = beat.tick() => vec![Frame::Heartbeat { status: NodeStatus { version: "swarm".into(), ..Default::default() } }],
            frame = codec::read_frame(&mut rx) => match frame {
                Ok(Frame::Ping {}) => vec![Frame::Pong {}],
                Ok(Frame::TaskSubmit(s)) => {
                    swarm.received.lock().unwrap().insert(s.goal.clone(), Instant::now());
                    swarm.tasks_run.fetch_add(1, Ordering::Relaxed);
                    vec![
                        Frame::TaskStarted { task_id: s.task_id.clone(), seq: 0 },
                        Frame::TaskCompleted { task_id: s.task_id, seq: 1, exit_code: Some(0), result: None },
                    ]
                }
                Ok(_) => continue,
                Err(_) => return,
            },
        };
        for f in &reply {
            if codec::feed(&mut tx, f).await.is_err() {
                return;
            }
        }
        if codec::flush(&mut tx).await.is_err() {
            return;
        }
    }
}

/// Waits until `want` nodes are connected (or `limit` passes); the time it took.
async fn wait_connected(swarm: &Swarm, want: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    while swarm.connected.load(Ordering::Relaxed) < want && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Task dispatch with every node connected: `n` tasks for a named node one at a time (from
/// `POST /api/tasks` to the node's `task:submit`), then `n` spread over the nodes at once.
async fn dispatch(api: &support::Api, swarm: &Swarm, n: usize) {
    let ids = swarm.ids.lock().unwrap().clone();
    let mut lat = Vec::new();
    for i in 0..n {
        let goal = format!("one-{i}");
        let node = &ids[i * 7919 % ids.len()];
        let start = Instant::now();
        api.post("/api/tasks", json!({"nodeId": node, "goal": goal}))
            .await;
        loop {
            if let Some(at) = swarm.received.lock().unwrap().get(&goal) {
                lat.push((*at - start).as_secs_f64() * 1000.0);
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "dispatch to a named node, {n} one at a time: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let start = Instant::now();
    let posts = (0..n).map(|i| {
        let node = ids[(i * 104_729) % ids.len()].clone();
        async move {
            let t = Instant::now();
            api.post(
                "/api/tasks",
                json!({"nodeId": node, "goal": format!("many-{i}")}),
            )
            .await;
            (format!("many-{i}"), t)
        }
    });
    let sent: Vec<(String, Instant)> = futures_util::future::join_all(posts).await;
    while !{
        let got = swarm.received.lock().unwrap();
        sent.iter().all(|(g, _)| got.contains_key(g))
    } {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = swarm.received.lock().unwrap();
    let mut lat: Vec<f64> = sent
        .iter()
        .map(|(g, t)| (got[g] - *t).as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "dispatch of {n} tasks at once over {} nodes: all received in {:.0} ms; per task p50 {:.1} ms, p99 {:.1} ms",
        ids.len().min(n),
        start.elapsed().as_secs_f64() * 1000.0,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
}

/// A release gateway of this run's own, on a free port (so `--storm` can kill and restart it
/// on the same port and data).
fn spawn_gateway(viber: &Path, dir: &Path, port: u16) -> support::GatewayProc {
    let child = std::process::Command::new(viber)
        .args([
            "gateway",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the gateway (cargo build --release first)");
    support::GatewayProc::from_ready(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main]
async fn main() {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("--floor-server") {
        let ms = argv.next().and_then(|v| v.parse().ok()).unwrap_or(15_000);
        return floor_server(ms).await;
    }
    viber::tls::init();
    let args = parse_args();
    let _ = viber::os::raise_fd_limit();
    let dir = std::env::temp_dir().join(format!("viber-swarm-{}", std::process::id()));
    let port = free_port();
    // Killed when dropped.
    let mut spawned = None;
    let (url, token, pid) = if args.spawn {
        let gw = spawned.insert(spawn_gateway(&args.viber, &dir, port));
        (gw.url.clone(), gw.token.clone(), Some(gw.child.id()))
    } else {
        (
            args.gateway.clone().unwrap(),
            args.token.clone().unwrap(),
            args.pid,
        )
    };
    let api = support::Api {
        http: reqwest::Client::new(),
        url: url.clone(),
        token,
    };
    let enroll = api
        .post(
            "/api/nodes/enroll",
            json!({"name": "swarm", "uses": args.nodes, "expiresInSecs": 3600}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let ws_url = format!("{}/ws", url.replacen("http", "ws", 1));
    let swarm = Arc::new(Swarm::default());
    let stop = CancellationToken::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.ramp));
    let before = pid.and_then(proc_usage);
    for _ in 0..args.nodes {
        tokio::spawn(node(
            ws_url.clone(),
            enroll.clone(),
            swarm.clone(),
            gate.clone(),
            stop.clone(),
        ));
    }
    let took = wait_connected(&swarm, args.nodes, Duration::from_secs(600)).await;
    let connected = swarm.connected.load(Ordering::Relaxed);
    let after_connect = pid.and_then(proc_usage);
    println!(
        "{connected} of {} nodes connected in {:.1} s: {:.0} handshakes/s (enrollment included), {} failed attempts",
        args.nodes,
        took.as_secs_f64(),
        connected as f64 / took.as_secs_f64(),
        swarm.failures.load(Ordering::Relaxed)
    );
    if let (Some((t0, _)), Some((t1, rss))) = (before, after_connect) {
        println!(
            "gateway while they connected: {:.0}% of a core; RSS {:.1} MB",
            (t1 - t0) / took.as_secs_f64() * 100.0,
            rss as f64 / 1024.0
        );
    }
    // Steady: nothing but heartbeats (and the gateway's pings).
    let steady_from = pid.and_then(proc_usage);
    let hb_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let mut heartbeats = None;
    if let (Some((t0, _)), Some((t1, rss))) = (steady_from, pid.and_then(proc_usage)) {
        let share = (t1 - t0) / hb_start.elapsed().as_secs_f64() * 100.0;
        heartbeats = Some(share);
        println!(
            "gateway holding {} nodes for {} s (heartbeats only): {share:.1}% of a core; RSS {:.1} MB ({:.1} KB per node)",
            swarm.connected.load(Ordering::Relaxed),
            args.seconds,
            rss as f64 / 1024.0,
            rss as f64 / connected.max(1) as f64
        );
    }
    if args.dispatch > 0 {
        dispatch(&api, &swarm, args.dispatch).await;
    }
    if args.storm {
        // parse_args asked for --spawn with --storm.
        let gw = spawned.as_mut().expect("a spawned gateway");
        gw.child.kill().expect("kill -9");
        gw.child.wait().unwrap();
        wait_connected_below(&swarm, 1).await;
        let gw = spawned.insert(spawn_gateway(&args.viber, &dir, port));
        let restarted = Instant::now();
        let pid2 = gw.child.id();
        let before = proc_usage(pid2);
        let mut peak = 0.0f64;
        let mut last = before;
        while swarm.connected.load(Ordering::Relaxed) < connected
            && restarted.elapsed() < Duration::from_secs(300)
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = proc_usage(pid2);
            if let (Some((a, _)), Some((b, _))) = (last, now) {
                peak = peak.max((b - a) / 0.5 * 100.0);
            }
            last = now;
        }
        println!(
            "reconnect storm: {} of {connected} back online {:.1} s after the restart (kill -9); peak gateway CPU {:.0}% of a core",
            swarm.connected.load(Ordering::Relaxed),
            restarted.elapsed().as_secs_f64(),
            peak
        );
    }
    stop.cancel();
    println!(
        "tasks run by the swarm: {}",
        swarm.tasks_run.load(Ordering::Relaxed)
    );
    wait_connected_below(&swarm, 1).await;
    let heartbeat_ms = swarm.heartbeat_ms.load(Ordering::Relaxed);
    let floor_share = floor(connected, heartbeat_ms, args.seconds, args.ramp).await;
    if let Some(share) = heartbeats {
        println!(
            "the gateway's heartbeats cost {:.1}x the floor's CPU",
            share / floor_share.max(0.01)
        );
    }
    if let Some(gw) = spawned.take() {
        drop(gw); // killed and waited for, then its data removed
        let _ = std::fs::remove_dir_all(&dir);
    }
}

async fn wait_connected_below(swarm: &Swarm, n: usize) {
    while swarm.connected.load(Ordering::Relaxed) >= n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
