//! The gateway: owns the SQLite state, serves the REST/SSE API and the board, and accepts
//! node connections on `/ws`.
//!
//! - `http/`: one file per REST resource, answering with `protocol::api` views;
//! - `link/`: the node WebSocket (handshake, session, frame dispatch, registry);
//! - `tasks/`: the task hub (live fan-out, batched writer, life cycle, dispatch);
//! - `envs/`: environment checks, secret sealing, binding preparation, validation by a node;
//! - `retention.rs`: the sweeper that deletes ended tasks' output and old records;
//! - `commands.rs`: follow-ups, approval answers and config pushes, stored until the node
//!   acknowledges them; `waiters.rs`: requests waiting for one node's answer;
//! - `auth.rs`, `board.rs`, `error.rs`, `events.rs`: operators, the board, errors, the bus.
//!
//! Nothing here imports `node::`: whatever must run on a machine with the code (scripts,
//! git) is a request to a node over its link.

mod auth;
mod board;
pub mod commands;
pub mod envs;
pub mod error;
pub mod events;
mod http;
pub mod jobs;
pub mod limits;
pub mod link;
pub mod metrics;
mod preview;
pub mod prices;
pub mod retention;
pub mod tasks;
pub mod terminals;
mod waiters;
pub mod worktrees;

pub use http::create_enrollment;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::Store;
pub use link::Registry;

/// Settings of one gateway process.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Nodes heartbeat (and the gateway pings) this often; a node is offline after three
    /// intervals without a frame.
    pub heartbeat_interval: Duration,
    /// How long a node may stay away before its unfinished tasks fail with "node lost".
    pub node_grace: Duration,
    /// Output quotas and the free-disk floor.
    pub quotas: tasks::Quotas,
    /// WebSocket connections that may be in their handshake at once (unauthenticated).
    pub max_pending_handshakes: usize,
    /// How long ended tasks keep their output (chunks) and setup logs; None: for ever.
    pub retention: Option<Duration>,
    /// How long an enrollment token stays valid.
    pub enrollment_ttl: Duration,
    /// The URL nodes and browsers use to reach this gateway, when it differs from `listen`
    /// (behind a proxy or a tunnel). Used in the enrollment command and the ready line.
    pub public_url: Option<String>,
    /// Where port previews are served (an origin apart from the board's); None: the
    /// listen address's IP, a free port.
    pub preview_listen: Option<SocketAddr>,
    /// The URL browsers reach the preview address at, when it differs.
    pub preview_public_url: Option<String>,
    /// Who commits threads' work by default (`Name <email>`).
    pub git_author: String,
    /// GitHub's REST API base URL, for pull requests.
    pub github_api_url: String,
    /// Where `/metrics` is served without a token (a scraper on a private interface).
    pub metrics_listen: Option<SocketAddr>,
    /// How long a pairing request (a node without a token) waits for an operator.
    pub pairing_ttl: Duration,
    /// Approve pairing requests from loopback without asking: only for `all-in-one`, where
    /// the machine's own user runs both sides.
    pub approve_loopback: bool,
    /// The longest the job scheduler sleeps between looks for due jobs (it also wakes when
    /// the next one is due and when a job changes).
    pub jobs_tick: Duration,
    /// A job due while the gateway was down runs once at start when it is at most this late.
    pub jobs_grace: Duration,
    /// Tests only: the scheduler's clock runs this many times faster than real time.
    pub jobs_clock_scale: u32,
    /// The price table (`prices.json`); None: `<data dir>/prices.json` when it exists.
    pub prices: Option<PathBuf>,
}

impl GatewayConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> GatewayConfig {
        GatewayConfig {
            listen,
            data_dir,
            heartbeat_interval: Duration::from_secs(15),
            node_grace: Duration::from_secs(120),
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            max_pending_handshakes: 1024,
            quotas: tasks::Quotas::default(),
            enrollment_ttl: Duration::from_secs(24 * 3600),
            public_url: None,
            preview_listen: None,
            preview_public_url: None,
            git_author: "viber <viber@localhost>".into(),
            github_api_url: "https://api.github.com".into(),
            metrics_listen: None,
            pairing_ttl: Duration::from_secs(15 * 60),
            approve_loopback: false,
            jobs_tick: jobs::DEFAULT_TICK,
            jobs_grace: Duration::from_secs(3600),
            jobs_clock_scale: 1,
            prices: None,
        }
    }
}

/// Shared state of a running gateway.
pub struct AppState {
    pub config: GatewayConfig,
    pub store: Store,
    pub registry: Registry,
    pub tasks: Arc<tasks::TaskHub>,
    pub events: events::Events,
    /// Environment validations waiting for a node's answer.
    pub validations: envs::Validations,
    /// Git operations on threads' worktrees waiting for a node's answer.
    pub git_requests: worktrees::GitRequests,
    /// What `/metrics` counts as it goes.
    pub metrics: metrics::Metrics,
    /// Handshakes in progress, SSE watchers, failed sign-ins.
    pub limits: limits::Limits,
    /// Requests waiting for the node to acknowledge their command.
    pub commands: commands::Commands,
    /// Viewers of terminals.
    pub terminals: terminals::Terminals,
    /// Nodes waiting on their connection for a pairing decision.
    pub pairings: link::Pairings,
    /// The job scheduler's clock, and its wake-up when a job changes.
    pub jobs_clock: jobs::JobClock,
    pub jobs_wake: tokio::sync::Notify,
    /// Held while a job run is decided and started (see `jobs::run`).
    pub jobs_running: tokio::sync::Mutex<()>,
    /// What models' tokens cost, for agents that report no cost.
    pub prices: prices::Prices,
    /// One lock per Idempotency-Key in flight: retries of a request wait for each other.
    pub idempotency: http::KeyLocks,
    pub auth: auth::OperatorAuth,
    /// Seals and opens environment secrets.
    pub keyring: crate::secrets::Keyring,
    /// The base URL this gateway is reachable at (`http://host:port`).
    pub base_url: String,
    /// Where previews are served: a public URL, or the port on the board's host.
    pub previews: preview::Origin,
    pub started: std::time::Instant,
    pub shutdown: CancellationToken,
    /// Long-lived connection handlers (node sockets, event streams), awaited at shutdown so
    /// their close frames go out before the database closes.
    pub connections: TaskTracker,
    /// The task writer and the sweepers (lost nodes, retention): awaited at shutdown after the connections,
    /// so the writer commits what they queued before the database closes.
    pub background: TaskTracker,
}

pub type App = Arc<AppState>;

/// A gateway that is accepting connections.
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub base_url: String,
    pub admin_token: String,
    pub state: App,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningGateway {
    /// The line printed once the gateway is ready: a URL a person can open.
    pub fn ready_line(&self) -> String {
        format!("viber ready: {}/?token={}", self.base_url, self.admin_token)
    }

    /// Waits for the gateway to finish (after its shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("gateway task panicked")?
    }
}

/// Opens the store, binds the listener and starts serving. Returns once the socket is bound.
pub async fn start(
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningGateway> {
    crate::crypto::private_dir(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    // One socket per connected node.
    match crate::os::raise_fd_limit() {
        Ok((before, now)) => tracing::info!(before, now, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    let db_path = config.data_dir.join("viber.db");
    let store = tokio::task::spawn_blocking(move || Store::open(&db_path)).await??;
    let secure_cookie = config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let (auth, admin_token) =
        auth::OperatorAuth::init(&store, &config.data_dir, secure_cookie).await?;
    let keyring = crate::secrets::Keyring::load(&config.data_dir)?;
    let prices_path = config
        .prices
        .clone()
        .unwrap_or_else(|| config.data_dir.join("prices.json"));
    let prices = prices::Prices::load(&prices_path)?;
    if !prices.is_empty() {
        tracing::info!(models = prices.len(), path = %prices_path.display(), "price table");
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let preview_addr = config
        .preview_listen
        .unwrap_or_else(|| SocketAddr::new(addr.ip(), 0));
    let preview_listener = tokio::net::TcpListener::bind(preview_addr)
        .await
        .with_context(|| format!("binding {preview_addr} for previews"))?;
    let previews = preview::Origin {
        port: preview_listener.local_addr()?.port(),
        public_url: config
            .preview_public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_string()),
    };
    let base_url = config
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{}", display_addr(addr)));

    let events = events::Events::default();
    let metrics = metrics::Metrics::default();
    let background = TaskTracker::new();
    let metrics_listener = match config.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding {a} for metrics"))?,
        ),
        None => None,
    };
    let max_pending_handshakes = config.max_pending_handshakes;
    let jobs_clock_scale = config.jobs_clock_scale;
    let (quotas, data_dir) = (config.quotas, config.data_dir.clone());
    let state = Arc::new(AppState {
        config,
        store: store.clone(),
        registry: Registry::default(),
        tasks: tasks::TaskHub::start(
            store.clone(),
            events.clone(),
            quotas,
            data_dir,
            metrics.clone(),
            shutdown.clone(),
            &background,
        ),
        events,
        metrics,
        validations: Default::default(),
        git_requests: Default::default(),
        commands: Default::default(),
        terminals: Default::default(),
        pairings: Default::default(),
        jobs_clock: jobs::JobClock::new(jobs_clock_scale),
        jobs_wake: tokio::sync::Notify::new(),
        jobs_running: tokio::sync::Mutex::new(()),
        prices,
        limits: limits::Limits::new(max_pending_handshakes),
        idempotency: http::KeyLocks::default(),
        auth,
        keyring,
        base_url: base_url.clone(),
        previews,
        started: std::time::Instant::now(),
        shutdown: shutdown.clone(),
        connections: TaskTracker::new(),
        background,
    });

    state
        .background
        .spawn(tasks::sweep_lost_nodes(state.clone()));
    state.background.spawn(retention::sweeper(state.clone()));
    state.background.spawn(jobs::scheduler(state.clone()));
    state.background.spawn(preview::serve(
        preview_listener,
        state.clone(),
        shutdown.clone(),
    ));
    if let Some(l) = metrics_listener {
        tracing::info!(addr = %l.local_addr()?, "metrics listening (no token)");
        state
            .background
            .spawn(serve_metrics(l, state.clone(), shutdown.clone()));
    }
    let task = tokio::spawn(serve(listener, state.clone(), store, shutdown));
    tracing::info!(%addr, "gateway listening");
    Ok(RunningGateway {
        addr,
        base_url,
        admin_token,
        state,
        task,
    })
}

/// `--metrics-listen`: `/metrics` without a token until `shutdown`.
async fn serve_metrics(listener: tokio::net::TcpListener, app: App, shutdown: CancellationToken) {
    use axum::handler::Handler;
    let service = http::metrics::unauthenticated
        .with_state(app)
        .into_make_service();
    let server = axum::serve(listener, service)
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
    if let Err(e) = server.await {
        tracing::error!(error = %e, "metrics server");
    }
}

/// Serves HTTP until `shutdown`, then lets open streams and sockets say goodbye (5 s at most)
/// and closes the database.
async fn serve(
    listener: tokio::net::TcpListener,
    state: App,
    store: Store,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let router = http::router(state.clone());
    let serve_shutdown = shutdown.clone();
    let connections = state.connections.clone();
    let background = state.background.clone();

    // Small frames (SSE events, acks) must leave at once, not wait for Nagle.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { serve_shutdown.cancelled().await });
    // Open WebSockets and SSE streams watch the same token and close themselves; give
    // them a moment to say goodbye, then stop regardless.
    let result = tokio::select! {
        r = async {
            let r = server.await;
            connections.close();
            connections.wait().await;
            background.close();
            background.wait().await;
            r
        } => r.context("http server"),
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => {
            tracing::warn!("connections did not close within 5 s; stopping anyway");
            Ok(())
        }
    };
    store.close().await?;
    tracing::info!("gateway stopped; database closed");
    result
}

/// `127.0.0.1:7391`, or `localhost`-style for unspecified addresses so the URL is clickable.
fn display_addr(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}
