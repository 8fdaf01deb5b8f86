//! Session logs on disk: the thread that writes the outbox's queued lines in batches (off
//! the reactor and outside the outbox's lock), and the pruning of old logs.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use super::{lock, Inner};
/// Wakes the session-log thread when lines are queued.
#[derive(Default)]
pub(super) struct LogWriter {
    /// Failed writes in a row (for logging).
    failures: std::sync::atomic::AtomicU64,
    queued: Mutex<bool>,
    wake: std::sync::Condvar,
    /// One writer at a time, so each log's lines land in order.
    writing: Mutex<()>,
}

impl LogWriter {
    pub(super) fn wake(&self) {
        *lock(&self.queued) = true;
        self.wake.notify_one();
    }
}

/// Writes queued session-log lines as they come, in batches, until the runtime is dropped.
pub(super) fn log_writer_thread(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        {
            let w = &strong.log_writer;
            let mut queued = lock(&w.queued);
            if !*queued {
                // Wake now and then to notice that the runtime is gone.
                queued = w
                    .wake
                    .wait_timeout(queued, Duration::from_millis(500))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            *queued = false;
        }
        write_logs(&strong);
    }
}

/// Takes the outbox's pending log lines, writes them outside its lock, then lets the frames
/// they hold be sent. A failed write (a full disk) keeps what was not written for the next
/// round (the log writer wakes at least twice a second) and holds those frames back.
pub(super) fn write_logs(inner: &Inner) {
    let _one_writer = lock(&inner.log_writer.writing);
    let writes = lock(&inner.outbox).take_log_writes();
    if writes.is_empty() {
        return;
    }
    let results: Vec<_> = writes.iter().map(|w| w.write()).collect();
    let mut outbox = lock(&inner.outbox);
    let mut failed = false;
    for (w, r) in writes.into_iter().zip(results) {
        match r {
            Ok(()) => outbox.logs_written(&w.task_id, w.upto_seq),
            Err((written, e)) => {
                let n = inner.log_writer.failures.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::error!(task = %w.task_id, error = %e, "writing session log; will retry");
                }
                outbox.log_write_failed(w, written);
                failed = true;
            }
        }
    }
    drop(outbox);
    // What failed is tried again on the next wake-up (at most half a second away).
    if !failed {
        inner.log_writer.failures.store(0, Ordering::Relaxed);
    }
    inner.outbox_changed.notify_one();
}

/// Deletes the `<task>.jsonl` files in `dir` last written more than `keep` ago, except those
/// of `open` tasks. Returns how many went.
pub(super) fn prune_old_files(dir: &Path, keep: Duration, open: &[String]) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        let Some(task) = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(".jsonl"))
        else {
            continue;
        };
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > keep);
        if old && !open.iter().any(|o| o == task) && std::fs::remove_file(&path).is_ok() {
            n += 1;
        }
    }
    n
}
