//! Prometheus metrics (`GET /metrics` with the operator token, or `--metrics-listen ADDR`
//! without one, for a scraper on a private interface), in the OpenMetrics text format written
//! by the `prometheus-client` crate.
//!
//! Counters and histograms are kept as things happen (chunks relayed, frames by type, the
//! writer's batches, prepare durations); gauges that describe state (nodes, tasks, watchers, approvals waiting,
//! tokens by model) are read at scrape time from the registry and the store, so nothing has
//! to keep them in step. Labels take only bounded values: frame types, task states, executors,
//! node presence, models; never a task or node id.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::gateway::App;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrameLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    state: String,
    executor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrepareLabels {
    outcome: &'static str,
}

/// A prepare not ended after this long is no longer timed.
const PREPARE_FORGOTTEN_AFTER: std::time::Duration = std::time::Duration::from_secs(86_400);

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    direction: &'static str,
}

/// What the gateway counts as it goes.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    chunks: Counter,
    chunk_bytes: Counter,
    frames: Family<FrameLabels, Counter>,
    /// The family's counter of each frame type, made up front: counting a frame on the relay
    /// path is then a map read and an atomic add, with no lock.
    by_type: std::collections::HashMap<&'static str, Counter>,
    batch_seconds: Histogram,
    batch_rows: Histogram,
    /// Prepares from when the gateway queued them (or the node first said `preparing`) to
    /// `ready` or `error`, by outcome.
    prepare_seconds: Histograms<PrepareLabels>,
    /// When each binding now preparing started (by binding id; gone once it ends).
    preparing: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let frames = Family::<FrameLabels, Counter>::default();
        let by_type = crate::protocol::FRAME_TYPES
            .iter()
            .map(|t| (*t, frames.get_or_create(&FrameLabels { r#type: t }).clone()))
            .collect();
        Metrics {
            inner: Arc::new(Inner {
                chunks: Counter::default(),
                chunk_bytes: Counter::default(),
                frames,
                by_type,
                // 100 µs to ~3 s.
                batch_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 8)),
                // 1 to 16384 rows.
                batch_rows: Histogram::new(exponential_buckets(1.0, 4.0, 8)),
                prepare_seconds: Family::new_with_constructor(|| {
                    // 50 ms to ~14 min.
                    Histogram::new(exponential_buckets(0.05, 3.0, 10))
                }),
                preparing: Default::default(),
            }),
        }
    }
}

impl Metrics {
    /// `chunks` chunks of `bytes` in all relayed (fanned out and queued for the store).
    pub fn chunks_relayed(&self, chunks: usize, bytes: usize) {
        if chunks > 0 {
            self.inner.chunks.inc_by(chunks as u64);
            self.inner.chunk_bytes.inc_by(bytes as u64);
        }
    }

    /// Chunks relayed so far.
    pub fn chunks(&self) -> u64 {
        self.inner.chunks.get()
    }

    /// A frame of type `kind` from a node.
    pub fn frame(&self, kind: &'static str) {
        if let Some(c) = self.inner.by_type.get(kind) {
            c.inc();
        }
    }

    /// The gateway queued a prepare of binding `id` for its node: the clock starts (again).
    pub fn prepare_queued(&self, id: &str) {
        let mut preparing = self
            .inner
            .preparing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // A prepare that never ended (its binding deleted, its node gone) is forgotten after
        // a day, so the map holds only prepares that may still end.
        preparing.retain(|_, started| started.elapsed() < PREPARE_FORGOTTEN_AFTER);
        preparing.insert(id.to_string(), std::time::Instant::now());
    }

    /// A node reported `status` for binding `id`: a prepare started by the node itself starts
    /// at its first `preparing`, and each is timed when it ends `ready` or `error`.
    pub fn binding_status(&self, id: &str, status: crate::protocol::BindingStatus) {
        use crate::protocol::BindingStatus as S;
        let mut preparing = self
            .inner
            .preparing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let outcome = match status {
            S::Preparing => {
                preparing
                    .entry(id.to_string())
                    .or_insert_with(std::time::Instant::now);
                return;
            }
            S::Pending => {
                preparing.remove(id);
                return;
            }
            S::Ready => "ready",
            S::Error => "error",
        };
        if let Some(started) = preparing.remove(id) {
            self.inner
                .prepare_seconds
                .get_or_create(&PrepareLabels { outcome })
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// The writer stored a batch of `rows` in `seconds`.
    pub fn batch(&self, rows: usize, seconds: f64) {
        self.inner.batch_seconds.observe(seconds);
        self.inner.batch_rows.observe(rows as f64);
    }
}

/// The whole scrape: the counters kept above and the state read now.
pub async fn render(app: &App) -> anyhow::Result<String> {
    let mut reg = Registry::with_prefix("viber");
    let m = &app.metrics.inner;
    reg.register(
        "chunks_relayed",
        "Stream chunks relayed from nodes to watchers and the store",
        m.chunks.clone(),
    );
    reg.register(
        "chunk_bytes_relayed",
        "Bytes of the stream chunks relayed",
        m.chunk_bytes.clone(),
    );
    reg.register(
        "ws_frames_received",
        "Frames received from nodes, by type",
        m.frames.clone(),
    );
    reg.register(
        "sqlite_batch_seconds",
        "Time to store one batch of task output (one SQLite transaction)",
        m.batch_seconds.clone(),
    );
    reg.register(
        "sqlite_batch_rows",
        "Rows (chunks and state changes) per stored batch",
        m.batch_rows.clone(),
    );
    reg.register(
        "prepare_seconds",
        "Environment prepares on nodes, from their start to ready or error, by outcome",
        m.prepare_seconds.clone(),
    );

    let nodes = Family::<NodeLabels, Gauge>::default();
    let enrolled = app.store.list_nodes().await?.len() as i64;
    let online = app.registry.online_count() as i64;
    nodes
        .get_or_create(&NodeLabels { status: "online" })
        .set(online);
    nodes
        .get_or_create(&NodeLabels { status: "offline" })
        .set((enrolled - online).max(0));
    reg.register("nodes", "Enrolled nodes, by presence", nodes);

    let tasks = Family::<TaskLabels, Gauge>::default();
    for (state, executor, n) in app.store.task_counts().await? {
        tasks.get_or_create(&TaskLabels { state, executor }).set(n);
    }
    reg.register("tasks", "Tasks, by state and executor", tasks);

    let watchers = Gauge::<i64>::default();
    watchers.set(app.limits.watchers() as i64);
    reg.register(
        "sse_watchers",
        "Open SSE streams (task streams and /api/events)",
        watchers,
    );

    let approvals = Gauge::<i64>::default();
    let mut waiting = 0;
    for t in app.store.unfinished_tasks().await? {
        if t.state == crate::protocol::TaskState::Running {
            waiting += crate::gateway::http::awaiting_approvals(app, &t.id)
                .await?
                .len() as i64;
        }
    }
    approvals.set(waiting);
    reg.register(
        "approvals_waiting",
        "Tool calls waiting for an operator's answer",
        approvals,
    );

    let tokens = Family::<TokenLabels, Counter>::default();
    for (model, _, input, output, _) in app.store.usage_by("model", 0, i64::MAX).await? {
        let model = model.unwrap_or_else(|| "unknown".into());
        for (direction, n) in [("input", input), ("output", output)] {
            tokens
                .get_or_create(&TokenLabels {
                    model: model.clone(),
                    direction,
                })
                .inc_by(n.max(0) as u64);
        }
    }
    reg.register(
        "tokens",
        "Model tokens used by agent tasks, by model",
        tokens,
    );

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}
