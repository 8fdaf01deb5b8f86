//! The redactor with one large secret: build time, memory, and streaming throughput.
//!
//! `cargo run --release --example redact_bench -- [SECRET_KIB] [OUTPUT_MIB]` (32 and 64 by
//! default). Memory is the process's resident set before and after building the redactor.
//! The physical floor for throughput is a plain copy of the same output in the same pieces,
//! measured in the same run.

use std::time::Instant;

use viber::node::rss_bytes;
use viber::secrets::Redactor;

fn main() {
    let mut args = std::env::args().skip(1);
    let kib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let secret: String = (0..kib * 1024)
        .map(|i| (b'a' + ((i * 7 + i / 26) % 26) as u8) as char)
        .collect();
    let before = rss_bytes();
    let t = Instant::now();
    let template = Redactor::new(&[&secret]);
    let build = t.elapsed();
    let after = rss_bytes();
    println!(
        "secret {kib} KiB: build {:.1} ms, memory +{:.1} MiB",
        build.as_secs_f64() * 1e3,
        after.saturating_sub(before) as f64 / (1 << 20) as f64
    );

    // Output: log-like lines, with the secret once every 8 MiB.
    let line = "2026-11-30T21:00:00Z INFO compiling crate foo v1.2.3 (/work/foo)\n";
    let piece: String = line.repeat(4096 / line.len());
    let pieces = mib * 1024 * 1024 / piece.len();
    let every = (8 * 1024 * 1024 / piece.len()).max(1);
    let inputs: Vec<String> = (0..pieces)
        .map(|i| {
            if i % every == 0 {
                format!("{piece}{secret}\n")
            } else {
                piece.clone()
            }
        })
        .collect();
    let total: usize = inputs.iter().map(|s| s.len()).sum();

    let t = Instant::now();
    let mut copied = 0usize;
    for p in &inputs {
        copied += std::hint::black_box(p.clone()).len();
    }
    let floor = t.elapsed();

    let mut r = template.clone();
    let t = Instant::now();
    let mut out = 0usize;
    for p in &inputs {
        out += r.push(p).len();
    }
    out += r.finish().len();
    let took = t.elapsed();
    let rate = |d: std::time::Duration| total as f64 / d.as_secs_f64() / (1 << 20) as f64;
    println!(
        "streamed {:.0} MiB in 4 KiB pieces: {:.0} MiB/s (copy floor {:.0} MiB/s, ratio {:.1}x); {} bytes out, {} copied",
        total as f64 / (1 << 20) as f64,
        rate(took),
        rate(floor),
        took.as_secs_f64() / floor.as_secs_f64(),
        out,
        copied
    );
}
