//! The node's task runtime. (Tasks arrive with the tasks issue; for now it reports status.)

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::{ErrorCode, Frame, NodeStatus};

#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    notify: tokio::sync::Notify,
}

pub struct SendCursor;

impl Runtime {
    pub fn new(_node_id: String, _data_dir: &Path) -> anyhow::Result<Runtime> {
        Ok(Runtime {
            inner: Arc::new(Inner {
                started: Instant::now(),
                notify: tokio::sync::Notify::new(),
            }),
        })
    }

    pub fn capabilities(&self) -> Vec<String> {
        Vec::new()
    }

    pub fn new_send_cursor(&self) -> SendCursor {
        SendCursor
    }

    pub fn unsent(&self, _cursor: &mut SendCursor) -> Vec<Frame> {
        Vec::new()
    }

    pub async fn outbox_changed(&self) {
        self.inner.notify.notified().await
    }

    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            running_tasks: Vec::new(),
            load: load_average(),
            memory_rss_bytes: rss_bytes(),
            uptime_secs: self.inner.started.elapsed().as_secs(),
            version: crate::VERSION.to_string(),
        }
    }

    pub async fn handle(&self, frame: Frame) -> Option<Frame> {
        Some(Frame::error(
            ErrorCode::InvalidFrame,
            format!("node does not handle {:?} frames", frame.type_name()),
        ))
    }

    pub async fn shutdown(&self) {}
}

fn load_average() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|x| x.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
