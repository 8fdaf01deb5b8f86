//! The node daemon: dials its gateway, runs tasks, streams their output back.

pub mod beneath;
mod config;
mod connection;
pub use connection::Backoff;
pub mod environments;
pub mod executor;
pub mod git;
pub mod handshake;
pub mod identity;
mod outbox;
mod runtime;
pub mod sandbox;
mod terminal;
pub mod worktree;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use connection::ws_url;
pub use runtime::{rss_bytes, Runtime, SandboxSpec};

use crate::crypto::NodeKey;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Gateway base URL (`http://host:port`).
    pub gateway: String,
    /// Enrollment token for the first connection.
    pub token: Option<String>,
    pub name: String,
    pub data_dir: PathBuf,
    /// How long session logs of ended tasks are kept; None: for ever.
    pub retention: Option<Duration>,
    /// The sandbox task processes run in.
    pub sandbox: SandboxSpec,
}

/// Runs the node until `shutdown` is cancelled (or the gateway refuses it for good).
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    crate::tls::init();
    crate::crypto::private_dir(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let key = NodeKey::load_or_create(&config.data_dir.join(identity::KEY_FILE))?;
    executor::llm::load_node_config(&config.data_dir)?;
    tracing::info!(node = %key.node_id(), name = %config.name, gateway = %config.gateway, "node starting");
    let runtime = Runtime::new(
        key.node_id(),
        &config.data_dir,
        &config.gateway,
        config.sandbox.clone(),
    )?;
    if let Some(keep) = config.retention {
        tokio::spawn(runtime.clone().prune_session_logs(keep, shutdown.clone()));
    }
    runtime.terminals().adopt().await;
    tokio::spawn(runtime.terminals().clone().run(shutdown.clone()));
    // On shutdown, stop the running tasks first and let their final frames reach the
    // gateway; only then close the connection.
    let connection_done = CancellationToken::new();
    let closer = {
        let (runtime, done) = (runtime.clone(), connection_done.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            runtime.stop_all(Duration::from_secs(15)).await;
            if !runtime.drained(Duration::from_secs(3)).await {
                tracing::warn!(
                    "closing with unacknowledged task frames; they stay in the session logs"
                );
            }
            done.cancel();
        })
    };
    let result = connection::run(config, key, runtime.clone(), connection_done.clone()).await;
    if result.is_err() {
        // Refused for good: there is no gateway to report to.
        runtime.stop_all(Duration::from_secs(15)).await;
    }
    closer.abort();
    let rt = runtime.clone();
    let _ = tokio::task::spawn_blocking(move || rt.flush_logs()).await;
    result
}

/// `linux-x86_64` and the like.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// This machine's host name, the default node name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string())
}
