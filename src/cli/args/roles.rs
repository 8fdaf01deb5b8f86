//! The long-running roles' arguments: `viber gateway`, `viber node` (with its sandbox) and
//! `viber all-in-one`, and their conversion into the gateway's and the node's configs.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{DataDirArg, NodeAction, DEFAULT_GATEWAY};
use crate::gateway::GatewayConfig;
use crate::node::sandbox::{parse_resolve, Mode as SandboxMode};
use crate::node::{self, NodeConfig, SandboxSpec};

#[derive(Args, Clone)]
pub struct GatewayArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "VIBER_LISTEN", default_value = "127.0.0.1:7391")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// URL nodes and browsers use to reach this gateway, if not http://<listen>.
    #[arg(long, env = "VIBER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Address port previews are served on: an origin of their own, so a previewed page
    /// cannot act as the signed-in operator [default: the --listen address, a free port].
    #[arg(long, env = "VIBER_PREVIEW_LISTEN")]
    pub preview_listen: Option<SocketAddr>,
    /// URL browsers reach the preview address at, if not http://<board host>:<its port>.
    #[arg(long, env = "VIBER_PREVIEW_PUBLIC_URL")]
    pub preview_public_url: Option<String>,
    /// Who commits a thread's work when its environment sets no GIT_AUTHOR_NAME and
    /// GIT_AUTHOR_EMAIL variables: `Name <email>`.
    #[arg(
        long,
        env = "VIBER_GIT_AUTHOR",
        default_value = "viber <viber@localhost>"
    )]
    pub git_author: String,
    /// GitHub's REST API, for pull requests (GitHub Enterprise: https://HOST/api/v3); an
    /// environment's `metadata.githubApiUrl` overrides it.
    #[arg(
        long,
        env = "VIBER_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,
    /// Also serve `/metrics` on this address without a token, for a Prometheus scraper on
    /// a private interface (the main address serves it to the operator token).
    #[arg(long, env = "VIBER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The longest the job scheduler sleeps between looks for due jobs, in milliseconds (it
    /// also wakes when the next job is due and when a job changes).
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub jobs_tick_ms: u64,
    /// A job due while the gateway was down runs once at start when it is at most this many
    /// seconds late; older runs are recorded as missed.
    #[arg(long, env = "VIBER_JOBS_GRACE_SECS", default_value_t = 3600)]
    pub jobs_grace_secs: u64,
    /// The price table for usage costs: JSON `{"models": {"MODEL": {"inputPerMillion": USD,
    /// "outputPerMillion": USD}}}` [default: <data dir>/prices.json, when it exists].
    #[arg(long, env = "VIBER_PRICES")]
    pub prices: Option<PathBuf>,
    /// Tests only: the job scheduler's clock runs this many times faster than real time.
    #[arg(long, hide = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub jobs_clock_scale: u32,
    /// Heartbeat interval given to nodes, in milliseconds.
    #[arg(long, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub heartbeat_ms: u64,
    /// Seconds a node may stay away before its unfinished tasks fail with "node lost".
    #[arg(long, default_value_t = 120)]
    pub node_grace_secs: u64,
    /// Seconds a device started without a token waits for an operator to approve it before
    /// its request lapses (it then asks again).
    #[arg(long, env = "VIBER_PAIRING_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub pairing_ttl_secs: u64,
    /// Days ended tasks keep their output and setup logs (the task and its summary stay);
    /// 0 keeps them for ever.
    #[arg(long, env = "VIBER_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u64,
    /// WebSocket connections that may be authenticating at once; more are refused (503).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending_handshakes: u64,
    /// Most output one task may store, in MiB; past it the task ends as an error.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub task_output_quota_mb: u64,
    /// Most chunks one task may store.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub task_chunk_quota: u64,
    /// Most output one node's running tasks may store together, in MiB.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub node_output_quota_mb: u64,
    /// Below this much free disk space (MiB) on the data dir, new task output is refused
    /// with a clear task error instead of filling the disk; 0 turns the check off.
    #[arg(long, env = "VIBER_MIN_FREE_DISK_MB", default_value_t = 256)]
    pub min_free_disk_mb: u64,
}

impl GatewayArgs {
    pub fn config(&self) -> GatewayConfig {
        let mut c = GatewayConfig::new(self.listen, self.data_dir.resolve());
        c.public_url = self.public_url.clone();
        c.preview_listen = self.preview_listen;
        c.preview_public_url = self.preview_public_url.clone();
        c.git_author = self.git_author.clone();
        c.github_api_url = self.github_api_url.clone();
        c.metrics_listen = self.metrics_listen;
        c.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        c.node_grace = Duration::from_secs(self.node_grace_secs);
        c.pairing_ttl = Duration::from_secs(self.pairing_ttl_secs);
        c.jobs_tick = Duration::from_millis(self.jobs_tick_ms);
        c.jobs_grace = Duration::from_secs(self.jobs_grace_secs);
        c.jobs_clock_scale = self.jobs_clock_scale;
        c.prices = self.prices.clone();
        c.retention = retention(self.retention_days);
        c.max_pending_handshakes = self.max_pending_handshakes as usize;
        c.quotas = crate::gateway::tasks::Quotas {
            task_bytes: self.task_output_quota_mb << 20,
            task_chunks: self.task_chunk_quota,
            node_bytes: self.node_output_quota_mb << 20,
            min_free_disk_bytes: self.min_free_disk_mb << 20,
        };
        c
    }
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeCommand {
    #[command(subcommand)]
    pub action: Option<NodeAction>,
    #[command(flatten)]
    pub run: NodeRunArgs,
}

#[derive(Args, Clone)]
pub struct NodeRunArgs {
    /// Gateway URL to dial.
    #[arg(long, env = "VIBER_GATEWAY", default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    /// One-time enrollment token from `viber node add` (first start only). Without one the
    /// node asks to pair and waits until an operator approves its key fingerprint.
    #[arg(long, env = "VIBER_NODE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Name shown for this node [default: host name].
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Days the session logs of ended tasks are kept; 0 keeps them for ever.
    #[arg(long, env = "VIBER_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u64,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

#[derive(Args, Clone)]
pub struct SandboxArgs {
    /// How task processes and setup scripts are confined: `auto` uses bubblewrap and refuses
    /// tasks when it is missing; `bwrap` refuses to start without it; `off` runs them with the
    /// node's files, keys and network.
    #[arg(long, env = "VIBER_SANDBOX", value_enum, default_value_t = SandboxMode::Auto)]
    pub sandbox: SandboxMode,
    /// HOST=IP: a name the network allowlist proxy resolves to this address instead of
    /// asking DNS (repeatable, or comma-separated in the variable).
    #[arg(long = "proxy-resolve", env = "VIBER_PROXY_RESOLVE", value_delimiter = ',', value_parser = parse_resolve)]
    pub proxy_resolve: Vec<(String, IpAddr)>,
    /// A file or directory task processes must not see, covered like the data dir (for
    /// example a gateway's data dir elsewhere, or ~/.ssh); repeatable, or comma-separated in
    /// the variable.
    #[arg(
        long = "sandbox-hide",
        env = "VIBER_SANDBOX_HIDE",
        value_delimiter = ','
    )]
    pub sandbox_hide: Vec<PathBuf>,
}

impl SandboxArgs {
    pub fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            mode: self.sandbox,
            resolve: self.proxy_resolve.iter().cloned().collect(),
            hide: self.sandbox_hide.clone(),
        }
    }
}

/// `--retention-days`: 0 is for ever.
pub fn retention(days: u64) -> Option<Duration> {
    (days > 0).then(|| Duration::from_secs(days * 24 * 3600))
}

impl NodeRunArgs {
    pub fn config(self) -> NodeConfig {
        NodeConfig {
            gateway: self.gateway,
            token: self.token,
            name: self.name.unwrap_or_else(node::hostname),
            data_dir: self.data_dir.resolve(),
            retention: retention(self.retention_days),
            sandbox: self.sandbox.spec(),
        }
    }
}

#[derive(Args, Clone)]
pub struct AllInOneArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Name of the local node [default: host name].
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}
