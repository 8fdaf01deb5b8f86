//! The node daemon: dials its gateway, runs tasks, streams their output back.

mod connection;
pub mod executor;
pub mod identity;
mod outbox;
mod runtime;

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use connection::ws_url;
pub use runtime::Runtime;

use crate::crypto::NodeKey;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Gateway base URL (`http://host:port`).
    pub gateway: String,
    /// Enrollment token for the first connection.
    pub token: Option<String>,
    pub name: String,
    pub data_dir: PathBuf,
}

/// Runs the node until `shutdown` is cancelled (or the gateway refuses it for good).
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let key = NodeKey::load_or_create(&config.data_dir.join(identity::KEY_FILE))?;
    tracing::info!(node = %key.node_id(), name = %config.name, gateway = %config.gateway, "node starting");
    let runtime = Runtime::new(key.node_id(), &config.data_dir)?;
    let result = connection::run(config, key, runtime.clone(), shutdown).await;
    runtime.shutdown().await;
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
