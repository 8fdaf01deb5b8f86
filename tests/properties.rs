//! Property tests (issue 12): frame decoding, the SSE parser, the redactor and path
//! confinement, for random inputs and random splits. The `fuzz/` targets need a nightly
//! toolchain; these run in CI on stable.

use std::path::Path;

use proptest::prelude::*;
use serde_json::json;
use viber::protocol::sse::SseParser;
use viber::protocol::Frame;
use viber::secrets::redact::{url_encode, MASK};
use viber::secrets::Redactor;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Splits `s` at the given fractions (on character boundaries).
fn split<'a>(s: &'a str, cuts: &[f64]) -> Vec<&'a str> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|f| {
            let mut i = ((s.len() as f64) * f) as usize;
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            i
        })
        .collect();
    points.sort();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points {
        out.push(&s[last..p]);
        last = p;
    }
    out.push(&s[last..]);
    out
}

proptest! {
    #![proptest_config(config())]

    /// Any text is decoded or refused with a reason; nothing panics.
    #[test]
    fn frame_decoding_never_panics(text in ".{0,200}") {
        let _ = Frame::decode(&text);
    }

    /// Any JSON object with a known or unknown `type` and random fields: decoded or refused.
    #[test]
    fn frames_with_random_fields_never_panic(
        ty in prop::sample::select(viber::protocol::FRAME_TYPES.to_vec()),
        key in "[a-zA-Z]{1,10}",
        n in any::<i64>(),
        s in ".{0,20}",
    ) {
        for v in [json!({"type": ty, key.clone(): n}), json!({"type": ty, key.clone(): s.clone(), "taskId": s, "seq": n})] {
            if let Ok(f) = Frame::decode(&v.to_string()) {
                // What decodes encodes and decodes to the same frame.
                let again = Frame::decode(&f.encode()).unwrap();
                prop_assert_eq!(again.encode(), f.encode());
            }
        }
    }

    /// Events, however the stream is split, come out whole and in order.
    #[test]
    fn sse_events_survive_any_split(
        datas in prop::collection::vec("[^\r\n]{0,30}", 1..8),
        cuts in prop::collection::vec(0.0f64..1.0, 0..6),
    ) {
        let stream: String = datas
            .iter()
            .enumerate()
            .map(|(i, d)| format!("id: {i}\r\ndata: {d}\n\n"))
            .collect();
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for piece in split(&stream, &cuts) {
            got.extend(p.push_bytes(piece.as_bytes()).unwrap());
        }
        prop_assert_eq!(got.len(), datas.len());
        for (i, (ev, d)) in got.iter().zip(&datas).enumerate() {
            let id = i.to_string();
            prop_assert_eq!(ev.id.as_deref(), Some(id.as_str()));
            prop_assert_eq!(&ev.data, d);
        }
    }

    /// For random secrets in random text, in each encoding, and random chunkings: no
    /// plaintext survives, and the text around it is unchanged.
    #[test]
    fn the_redactor_hides_every_form_and_changes_nothing_else(
        secret in "[a-zA-Z0-9+/=_\\-:@!é ]{4,40}",
        before in "[a-z .\n]{0,40}",
        after in "[a-z .\n]{0,40}",
        form in 0usize..4,
        cuts in prop::collection::vec(0.0f64..1.0, 0..5),
    ) {
        use base64::Engine;
        let encoded = match form {
            0 => secret.clone(),
            1 => url_encode(&secret),
            2 => base64::engine::general_purpose::STANDARD.encode(&secret),
            _ => serde_json::to_string(&secret).unwrap().trim_matches('"').to_string(),
        };
        // Text that cannot itself form part of any pattern keeps the expectation exact.
        let text = format!("{before}|{encoded}|{after}");
        let template = Redactor::new(&[&secret]);
        let mut r = template.clone();
        let mut out = String::new();
        for piece in split(&text, &cuts) {
            out.push_str(&r.push(piece));
        }
        out.push_str(&r.finish());
        prop_assert!(!out.contains(&secret), "{out:?}");
        prop_assert!(!out.contains(&encoded), "{out:?}");
        prop_assert_eq!(&out, &template.redact_str(&text));
        let (head, tail) = (format!("{before}|"), format!("|{after}"));
        prop_assert!(out.starts_with(&head) && out.ends_with(&tail));
        prop_assert!(out.contains(MASK));
    }

    /// Whatever path a model gives, the file tools never read or write outside the working
    /// dir, symlinks included.
    #[test]
    fn confinement_holds_for_any_path(parts in prop::collection::vec(
        prop::sample::select(vec!["a", "b", "..", ".", "out", "loop", "abs", "f.txt", "", "/"]),
        1..6,
    )) {
        let fixture = fixture();
        let path = parts.join("/");
        let ctx = viber::node::executor::tools::ToolContext {
            root: &fixture.join("root"),
            env: &Default::default(),
            confine: &viber::node::sandbox::Confinement::unconfined(),
            abort: Default::default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            use viber::node::executor::tools::run;
            if let Ok(v) = run("read_file", &json!({"path": path}), &ctx).await {
                prop_assert!(!v.to_string().contains("OUTSIDE"), "{path}: {v}");
            }
            if let Ok(v) = run("grep", &json!({"pattern": "OUTSIDE", "path": path}), &ctx).await {
                prop_assert!(!v.to_string().contains("OUTSIDE"), "{path}: {v}");
            }
            let _ = run("write_file", &json!({"path": format!("{path}/w.txt"), "content": "x"}), &ctx).await;
            let _ = run("write_file", &json!({"path": path, "content": "x"}), &ctx).await;
            Ok(())
        })?;
        prop_assert_eq!(std::fs::read_dir(fixture.join("outside")).unwrap().count(), 1);
        prop_assert_eq!(std::fs::read_to_string(fixture.join("outside/secret.txt")).unwrap(), "OUTSIDE");
    }
}

/// A working dir `root` beside a directory `outside` holding a secret, with symlinks out
/// (`out` to the directory, `abs` to its file, `loop` to itself). Made once per process.
fn fixture() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        // Under target/tmp, not /tmp: it lives as long as the process and no drop removes
        // a static, so each run replaces its own instead of leaving one behind.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("viber-props");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/a/b")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("outside/secret.txt"), "OUTSIDE").unwrap();
        std::fs::write(dir.join("root/a/f.txt"), "inside").unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), dir.join("root/out")).unwrap();
        std::os::unix::fs::symlink(dir.join("outside/secret.txt"), dir.join("root/abs")).unwrap();
        std::os::unix::fs::symlink(dir.join("root/loop"), dir.join("root/loop")).unwrap();
        dir
    })
}
