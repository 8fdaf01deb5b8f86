//! Relay benchmark: node -> gateway -> SSE watchers, on loopback.
//!
//! Starts a real `viber gateway` process (release build), enrolls a load-generating node that
//! speaks the real protocol through the node's own handshake client and codec (challenge,
//! signed connect, task frames with seqs, acks), creates
//! tasks through the REST API, attaches SSE watchers, and streams chunks that carry their send
//! time. Reports throughput, latency percentiles from the node's send to each watcher's
//! receive, the gateway's CPU use and its peak memory, and, measured in the same run, the
//! floor: the same bytes copied between two loopback sockets by a relay that does nothing
//! else. Every watcher checks each chunk's sequence number (no gap, no duplicate, in order)
//! and the run fails on a violation.
//!
//! ```sh
//! cargo build --release && cargo run --release --example relay_bench -- \
//!     --tasks 4 --chunks 50000 --watchers 1            # flood: throughput
//! cargo run --release --example relay_bench -- --rate 10000 --seconds 10   # steady: latency
//! ```
//! `--quiet-secs N` reads the gateway's RSS again N seconds after the run: what it gives
//! back once quiet.

use std::path::{Path, PathBuf};

mod support;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_tungstenite::tungstenite::Message;
use viber::cli::tasks::SseParser;
use viber::crypto::NodeKey;
use viber::node::handshake::{self, NodeHello};
use viber::protocol::codec;
use viber::protocol::Frame;

#[derive(Clone)]
struct Args {
    tasks: usize,
    /// Load-generating nodes (connections) the tasks are spread over, each sending its own
    /// tasks' chunks at the same time as the others.
    nodes: usize,
    chunks: u64,
    watchers: usize,
    /// Total chunks per second across tasks; 0 = as fast as possible.
    rate: u64,
    seconds: u64,
    /// Watchers that attach after the run and replay whole streams at the same time, spread
    /// over the tasks (`--late-watcher` is one).
    late_watchers: usize,
    /// Flood mode: chunks of a task produced before they are sent, folded into
    /// `task:stream-chunks` frames as a node does with output that piled up while its last
    /// burst was written. 1 = a frame per chunk (protocol 1).
    batch: usize,
    /// Seconds to leave the gateway quiet after the run before its RSS is read again (what
    /// it gives back); 0: not read.
    quiet_secs: u64,
    viber: PathBuf,
}

const USAGE: &str = "usage: relay_bench [--tasks N] [--nodes N] [--chunks N] [--watchers N] \
[--rate CHUNKS_PER_S --seconds S] [--batch N] [--late-watcher | --late-watchers N] [--quiet-secs S] [--viber PATH]";

fn parse_args() -> Args {
    let mut a = Args {
        tasks: 1,
        nodes: 1,
        chunks: 100_000,
        watchers: 1,
        rate: 0,
        seconds: 10,
        late_watchers: 0,
        batch: 64,
        quiet_secs: 0,
        viber: support::viber_bin(),
    };
    let mut f = support::Flags::new(USAGE);
    while let Some(k) = f.next_flag() {
        match k.as_str() {
            "--tasks" => a.tasks = f.value(&k),
            "--nodes" => a.nodes = f.value::<usize>(&k).max(1),
            "--chunks" => a.chunks = f.value(&k),
            "--watchers" => a.watchers = f.value(&k),
            "--rate" => a.rate = f.value(&k),
            "--seconds" => a.seconds = f.value(&k),
            "--batch" => a.batch = f.value::<usize>(&k).max(1),
            "--quiet-secs" => a.quiet_secs = f.value(&k),
            "--viber" => a.viber = f.value(&k),
            "--late-watcher" => a.late_watchers = 1,
            "--late-watchers" => a.late_watchers = f.value(&k),
            other => f.unknown(other),
        }
    }
    if a.tasks == 0 {
        f.fail("--tasks must be at least 1");
    }
    if a.rate > 0 {
        a.chunks = a.rate * a.seconds / a.tasks as u64;
    }
    a
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

type NodeSink = futures_util::stream::SplitSink<handshake::WsStream, Message>;

#[tokio::main]
async fn main() {
    viber::tls::init();
    let args = parse_args();
    let dir = std::env::temp_dir().join(format!("viber-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gw = support::start_gateway(&args.viber, &dir);
    let pid = gw.child.id();
    let (url, token) = (gw.url.clone(), gw.token.clone());
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = support::status_kb(pid, "VmRSS:");

    // Tasks spread over the nodes as evenly as they go.
    let mut nodes = Vec::new();
    let mut task_ids = Vec::new();
    for n in 0..args.nodes.min(args.tasks) {
        let (sink, node_id, submits) = connect_node(&gw, &http, &dir, n).await;
        let count = args.tasks / args.nodes + usize::from(n < args.tasks % args.nodes);
        let ids = create_tasks(&gw, &http, &node_id, count, submits).await;
        task_ids.extend(ids.iter().cloned());
        nodes.push((sink, ids));
    }

    // Watchers.
    let mut watchers = Vec::new();
    for id in &task_ids {
        for _ in 0..args.watchers {
            watchers.push(tokio::spawn(watch(
                http.clone(),
                format!("{url}/api/tasks/{id}/stream"),
                token.clone(),
            )));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cpu0 = support::cpu_secs(pid);
    let t0 = Instant::now();
    let producers: Vec<_> = nodes
        .into_iter()
        .map(|(mut sink, ids)| {
            let args = args.clone();
            tokio::spawn(async move { produce(&mut sink, &ids, &args).await })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let sent_secs = t0.elapsed().as_secs_f64();

    let mut lat: Vec<u64> = Vec::new();
    let mut received = 0u64;
    for w in watchers {
        let (n, l) = w.await.unwrap();
        received += n;
        lat.extend(l);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = support::cpu_secs(pid) - cpu0;
    lat.sort_unstable();
    let peak_rss = support::status_kb(pid, "VmHWM:");

    // Lines after the main figures: a late watcher's replay, the RSS once quiet.
    let mut after = String::new();
    if args.late_watchers > 0 {
        after = late_replays(&args, &http, &url, &token, &task_ids, pid).await;
    }

    let floor = if args.rate > 0 {
        let (lat, cpu) = steady_floor(&task_ids[0], args.rate, args.seconds).await;
        Floor::Steady(lat, cpu)
    } else {
        Floor::Flood(floor(&task_ids, args.chunks, args.batch).await)
    };
    if args.quiet_secs > 0 {
        tokio::time::sleep(Duration::from_secs(args.quiet_secs)).await;
        after += &format!(
            "\ngateway RSS {} s after the run: {:.1} MB",
            args.quiet_secs,
            support::status_kb(pid, "VmRSS:") as f64 / 1024.0
        );
    }
    report(
        &args,
        &Measured {
            sent_secs,
            secs,
            received,
            lat,
            cpu,
            idle_rss,
            peak_rss,
            floor,
        },
        &after,
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Enrolls and connects the load-generating node through the node's own handshake client.
/// Returns its sink, its id, and the ids of the tasks submitted to it (read in the
/// background, which also discards acks and pings).
async fn connect_node(
    gw: &support::GatewayProc,
    http: &reqwest::Client,
    dir: &Path,
    n: usize,
) -> (NodeSink, String, UnboundedReceiver<String>) {
    let name = format!("bench-{n}");
    let enroll = gw.enroll(http, &name).await;
    let key = NodeKey::load_or_create(&dir.join(format!("{name}-key"))).unwrap();
    let about = NodeHello {
        name,
        version: viber::VERSION.into(),
        platform: viber::node::platform(),
        capabilities: vec!["shell".into()],
        hostname: None,
    };
    let (ws, _hello) = handshake::connect(&viber::node::ws_url(&gw.url), &key, &enroll, &about)
        .await
        .unwrap();
    let (sink, mut stream) = ws.split();
    let (submit_tx, submit_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(frame) = codec::read_frame(&mut stream).await {
            if let Frame::TaskSubmit(s) = frame {
                let _ = submit_tx.send(s.task_id);
            }
        }
    });
    (sink, key.node_id(), submit_rx)
}

/// Creates `n` tasks on the node; returns once the node has each one's submit.
async fn create_tasks(
    gw: &support::GatewayProc,
    http: &reqwest::Client,
    node_id: &str,
    n: usize,
    mut submits: UnboundedReceiver<String>,
) -> Vec<String> {
    let mut task_ids = Vec::new();
    for _ in 0..n {
        let t: Value = http
            .post(format!("{}/api/tasks", gw.url))
            .bearer_auth(&gw.token)
            .json(&json!({"goal": "bench", "nodeId": node_id}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        task_ids.push(t["id"].as_str().unwrap().to_string());
        submits.recv().await.unwrap();
    }
    task_ids
}

/// Streams every task from start to completion: `args.chunks` text deltas each, carrying
/// their send time, as fast as possible or at `args.rate`.
async fn produce(sink: &mut NodeSink, task_ids: &[String], args: &Args) {
    let mut seqs = vec![0u64; task_ids.len()];
    for (i, id) in task_ids.iter().enumerate() {
        for f in [
            Frame::TaskStarted {
                task_id: id.clone(),
                seq: 0,
            },
            chunk(id, 1, json!({"type": "start"})),
            chunk(id, 2, json!({"type": "text-start", "id": "t"})),
        ] {
            codec::feed(sink, &f).await.unwrap();
        }
        seqs[i] = 3;
    }
    let interval = 1_000_000_000u64
        .checked_div(args.rate)
        .map(Duration::from_nanos);
    if let Some(iv) = interval {
        // Steady mode: every chunk leaves at once, as a node's would.
        let mut next_at = Instant::now();
        for _ in 0..args.chunks {
            for (i, id) in task_ids.iter().enumerate() {
                next_at += iv;
                let now = Instant::now();
                if next_at > now {
                    tokio::time::sleep(next_at - now).await;
                }
                codec::write(sink, &chunk(id, seqs[i], delta()))
                    .await
                    .unwrap();
                seqs[i] += 1;
            }
        }
    } else {
        let mut left = args.chunks;
        while left > 0 {
            let n = left.min(args.batch as u64);
            left -= n;
            for f in burst(task_ids, &mut seqs, n) {
                codec::feed(sink, &f).await.unwrap();
            }
        }
    }
    for (i, id) in task_ids.iter().enumerate() {
        for f in [
            chunk(id, seqs[i], json!({"type": "text-end", "id": "t"})),
            chunk(
                id,
                seqs[i] + 1,
                json!({"type": "finish", "finishReason": "stop"}),
            ),
            Frame::TaskCompleted {
                task_id: id.clone(),
                seq: seqs[i] + 2,
                exit_code: Some(0),
                result: None,
            },
        ] {
            codec::feed(sink, &f).await.unwrap();
        }
    }
    codec::flush(sink).await.unwrap();
}

/// A text delta carrying its send time.
fn delta() -> Value {
    json!({"type": "text-delta", "id": "t", "delta": now_ns().to_string()})
}

/// Flood mode: each task's next `n` chunks, folded into batch frames as the node's outbox
/// hands them out (oldest task first, then the next).
fn burst(task_ids: &[String], seqs: &mut [u64], n: u64) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(n as usize * task_ids.len());
    for (i, id) in task_ids.iter().enumerate() {
        for _ in 0..n {
            frames.push(chunk(id, seqs[i], delta()));
            seqs[i] += 1;
        }
    }
    viber::protocol::batch_chunks(frames)
}

/// What one run measured.
struct Measured {
    /// Seconds the node took to send everything.
    sent_secs: f64,
    /// Seconds until the last watcher saw `[DONE]`.
    secs: f64,
    /// Text deltas the watchers received, all together.
    received: u64,
    /// Sorted latencies, node send to watcher receive, in ns.
    lat: Vec<u64>,
    /// Gateway CPU seconds over `secs`.
    cpu: f64,
    idle_rss: u64,
    peak_rss: u64,
    floor: Floor,
}

/// The same work through a relay that only copies bytes between two loopback sockets.
enum Floor {
    /// Flood: chunks per second.
    Flood(f64),
    /// Steady rate: the latencies (sorted, ns) and the relay's CPU seconds over the run.
    Steady(Vec<u64>, f64),
}

/// The physical floor for this work on this machine, measured in the same run: the frames
/// the node sent in a flood (the same bytes, one per line) through a relay that does nothing but read
/// them from one loopback socket and write them to another, to a reader that counts bytes.
/// Returns chunks per second.
async fn floor(task_ids: &[String], chunks: u64, batch: usize) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut bytes = Vec::new();
    let mut seqs = vec![3u64; task_ids.len()];
    let mut left = chunks;
    while left > 0 {
        let n = left.min(batch as u64);
        left -= n;
        for f in burst(task_ids, &mut seqs, n) {
            bytes.extend_from_slice(f.encode().as_bytes());
            bytes.push(b'\n');
        }
    }
    let total = bytes.len();
    let (inbound, outbound) = (
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (in_addr, out_addr) = (
        inbound.local_addr().unwrap(),
        outbound.local_addr().unwrap(),
    );
    let relay = tokio::spawn(async move {
        let (mut src, _) = inbound.accept().await.unwrap();
        let (mut dst, _) = outbound.accept().await.unwrap();
        src.set_nodelay(true).unwrap();
        dst.set_nodelay(true).unwrap();
        tokio::io::copy(&mut src, &mut dst).await.unwrap();
    });
    let mut reader = tokio::net::TcpStream::connect(out_addr).await.unwrap();
    let mut writer = tokio::net::TcpStream::connect(in_addr).await.unwrap();
    let t = Instant::now();
    let read = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0;
        while n < total {
            match reader.read(&mut buf).await.unwrap() {
                0 => break,
                k => n += k,
            }
        }
        n
    });
    writer.write_all(&bytes).await.unwrap();
    writer.shutdown().await.unwrap();
    let got = read.await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    relay.abort();
    assert_eq!(got, total);
    (chunks * task_ids.len() as u64) as f64 / secs
}

/// The floor at a steady rate: each chunk frame written alone when it is due, as in the
/// steady run, through a relay (its own thread and single-threaded runtime, whose CPU time
/// is measured) that reads each from one loopback socket and writes it to another; the
/// reader takes each chunk's send time from it. Returns latencies and the relay's CPU
/// seconds.
async fn steady_floor(task_id: &str, rate: u64, seconds: u64) -> (Vec<u64>, f64) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (inbound, outbound) = (
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (in_addr, out_addr) = (
        inbound.local_addr().unwrap(),
        outbound.local_addr().unwrap(),
    );
    let relay = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let cpu0 = support::thread_cpu_secs();
            let (src, _) = inbound.accept().unwrap();
            let (dst, _) = outbound.accept().unwrap();
            let mut src = tokio::net::TcpStream::from_std(src).unwrap();
            let mut dst = tokio::net::TcpStream::from_std(dst).unwrap();
            src.set_nodelay(true).unwrap();
            dst.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match src.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dst.write_all(&buf[..n]).await.unwrap(),
                }
            }
            support::thread_cpu_secs() - cpu0
        })
    });
    let mut writer = tokio::net::TcpStream::connect(in_addr).await.unwrap();
    let reader = tokio::net::TcpStream::connect(out_addr).await.unwrap();
    writer.set_nodelay(true).unwrap();
    let total = rate * seconds;
    let read = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(reader).lines();
        let mut lat = Vec::with_capacity(total as usize);
        while let Ok(Some(line)) = lines.next_line().await {
            let at = now_ns();
            let f: Value = serde_json::from_str(&line).unwrap();
            let sent: u64 = f["chunk"]["delta"].as_str().unwrap().parse().unwrap();
            lat.push(at.saturating_sub(sent));
        }
        lat
    });
    let iv = Duration::from_nanos(1_000_000_000 / rate);
    let mut next_at = Instant::now();
    for seq in 0..total {
        next_at += iv;
        let now = Instant::now();
        if next_at > now {
            tokio::time::sleep(next_at - now).await;
        }
        let mut line = chunk(task_id, seq, delta()).encode();
        line.push('\n');
        writer.write_all(line.as_bytes()).await.unwrap();
    }
    writer.shutdown().await.unwrap();
    let mut lat = read.await.unwrap();
    lat.sort_unstable();
    (lat, relay.join().unwrap())
}

/// The `p` quantile of sorted latencies, in ms.
fn quantile(lat: &[u64], p: f64) -> f64 {
    lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1e6
}

fn report(args: &Args, m: &Measured, after: &str) {
    let total_expected = args.chunks * args.tasks as u64;
    let lat = &m.lat;
    let pct = |p: f64| quantile(lat, p);
    let floor = match &m.floor {
        Floor::Flood(rate) => format!(
            "floor (the same bytes copied between two loopback sockets): {rate:.0} chunks/s; \
             viber delivered {:.1}% of it",
            m.received as f64 / m.secs / rate * 100.0
        ),
        Floor::Steady(fl, cpu) => format!(
            "floor (the same frames at the same rate through a relay that only copies them \
             between two loopback sockets): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, \
             relay {:.0}% of one core; viber's p99 is {:.1}x it, its CPU {:.1}x",
            quantile(fl, 0.5),
            quantile(fl, 0.99),
            quantile(fl, 0.999),
            cpu / args.seconds as f64 * 100.0,
            pct(0.99) / quantile(fl, 0.99),
            (m.cpu / m.secs) / (cpu / args.seconds as f64)
        ),
    };
    println!(
        "tasks={} nodes={} watchers/task={} chunks/task={} rate={} batch={}\n\
         sent {} chunks in {:.2} s; watchers received {} chunks ({} expected) in {:.2} s\n\
         relay throughput: {:.0} chunks/s delivered ({:.0} chunks/s ingested)\n\
         latency node send -> watcher receive: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms\n\
         gateway CPU: {:.2} s over {:.2} s = {:.0}% of one core\n\
         gateway RSS: idle {:.1} MB, peak {:.1} MB\n\
         {}{}",
        args.tasks,
        args.nodes.min(args.tasks),
        args.watchers,
        args.chunks,
        if args.rate > 0 { args.rate.to_string() } else { "max".into() },
        if args.rate > 0 { 1 } else { args.batch },
        total_expected,
        m.sent_secs,
        m.received,
        total_expected * args.watchers as u64,
        m.secs,
        m.received as f64 / m.secs,
        total_expected as f64 / m.secs,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        *lat.last().unwrap() as f64 / 1e6,
        m.cpu,
        m.secs,
        m.cpu / m.secs * 100.0,
        m.idle_rss as f64 / 1024.0,
        m.peak_rss as f64 / 1024.0,
        floor,
        after,
    );
}

fn chunk(task: &str, seq: u64, chunk: Value) -> Frame {
    Frame::chunk(task, seq, &chunk)
}

/// `--late-watchers`: that many watchers attach after the run and replay whole streams, all
/// at once, spread over the tasks. Returns the line that reports it.
async fn late_replays(
    args: &Args,
    http: &reqwest::Client,
    url: &str,
    token: &str,
    task_ids: &[String],
    pid: u32,
) -> String {
    let t = Instant::now();
    let cpu0 = support::cpu_secs(pid);
    let replays: Vec<_> = (0..args.late_watchers)
        .map(|i| {
            let stream = format!("{url}/api/tasks/{}/stream", task_ids[i % task_ids.len()]);
            tokio::spawn(watch(http.clone(), stream, token.to_string()))
        })
        .collect();
    let mut n = 0;
    for r in replays {
        n += r.await.unwrap().0;
    }
    let secs = t.elapsed().as_secs_f64();
    let expected = args.chunks * args.late_watchers as u64;
    if args.late_watchers == 1 {
        return format!("\nlate watcher replayed {n} of {expected} chunks in {secs:.2} s");
    }
    format!(
        "\n{} late watchers replayed {n} of {expected} chunks in {secs:.2} s \
         ({:.0} chunks/s, gateway CPU {:.2} s)",
        args.late_watchers,
        n as f64 / secs,
        support::cpu_secs(pid) - cpu0
    )
}

/// Reads a stream to `[DONE]`; returns the number of text deltas and their latencies (ns).
/// Every event's sequence number (its SSE id) must follow the one before by exactly one,
/// from the first chunk to the last: a gap, a duplicate or a reordering stops the run, so a
/// faster relay cannot hide a broken one.
async fn watch(http: reqwest::Client, url: String, token: String) -> (u64, Vec<u64>) {
    let res = http.get(&url).bearer_auth(&token).send().await.unwrap();
    let mut body = res.bytes_stream();
    let mut parser = SseParser::default();
    let mut lat = Vec::new();
    let mut n = 0;
    let mut last_seq: Option<u64> = None;
    while let Some(Ok(bytes)) = body.next().await {
        let now = now_ns();
        for ev in parser
            .push_bytes(&bytes)
            .expect("events within the size limit")
        {
            if ev.data == "[DONE]" {
                return (n, lat);
            }
            let seq: u64 = ev
                .id
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{url}: an event without a sequence id: {}", ev.data));
            match last_seq {
                Some(prev) if seq != prev + 1 => {
                    eprintln!("{url}: chunk {seq} after {prev} (a gap, duplicate or reordering)");
                    std::process::exit(2);
                }
                None if seq != 1 => {
                    eprintln!("{url}: the stream starts at chunk {seq}, not 1");
                    std::process::exit(2);
                }
                _ => {}
            }
            last_seq = Some(seq);
            if let Some(pos) = ev.data.find("\"delta\":\"") {
                let rest = &ev.data[pos + 9..];
                if let Some(ts) = rest.split('"').next().and_then(|s| s.parse::<u64>().ok()) {
                    lat.push(now.saturating_sub(ts));
                    n += 1;
                }
            }
        }
    }
    (n, lat)
}
