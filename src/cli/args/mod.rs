//! The command line's shape: every clap type `viber` parses (`Cli` and the role and client
//! subcommands under it), and the small conversions from parsed arguments to role configs.
//! The roles' own flags are in `roles.rs`; `jobs.rs`, `config.rs`, `threads.rs` and
//! `service.rs` hold the larger subcommand families.
//!
//! Owns: flags, env vars, defaults and help text. Must not touch: what a command does (roles are
//! started in [`super::roles`], client commands are routed by [`super::dispatch`] to
//! `cli::{nodes,tasks,envs,threads}`), and nothing here talks to the network or the disk.
//!
//! Every `///` on a clap type or field below is help text that users see; a note meant only for
//! readers of the code must be a `//` comment.

// Help text such as `http://<listen>` is read by clap, not rendered as HTML.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::{envs::EnvFields, ClientArgs, DEFAULT_GATEWAY};

mod config;
mod jobs;
mod roles;
mod service;
mod threads;
pub use config::ConfigAction;
pub use jobs::JobAction;
pub use roles::{retention, AllInOneArgs, GatewayArgs, NodeCommand, NodeRunArgs, SandboxArgs};
pub use service::{AllInOneCommand, GatewayCommand, InstallArgs, ServiceAction, UninstallArgs};
pub use threads::ThreadAction;

#[derive(Parser)]
#[command(
    name = "viber",
    version,
    about = "Run AI coding agents on your own machines",
    long_about = "Run AI coding agents on your own machines.\n\n\
        `viber all-in-one` starts a gateway and a node on this machine and prints a login URL.\n\
        `viber gateway` and `viber node --gateway URL` run the two roles on separate machines."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the coordinator: API, board and the endpoint nodes dial (`install` makes it a
    /// service).
    Gateway(GatewayCommand),
    /// Run a node daemon, or manage nodes (`viber node add NAME`).
    Node(NodeCommand),
    /// Run a gateway and a node in one process (the quickest start; `install` makes it a
    /// service).
    AllInOne(AllInOneCommand),
    /// List the gateway's nodes.
    Nodes {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run, watch and control tasks.
    Task {
        #[command(subcommand)]
        action: TaskAction,
    },
    /// Manage environments: repositories, setup scripts, vars, secrets, node bindings.
    Env {
        #[command(subcommand)]
        action: EnvAction,
    },
    /// Work in threads: messages run as tasks in an environment.
    Thread {
        #[command(subcommand)]
        action: ThreadAction,
    },
    /// Shared credentials: variables, secrets and secret files every environment inherits.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Scheduled jobs: goals an environment runs on a cron schedule.
    Job {
        #[command(subcommand)]
        action: JobAction,
    },
    /// Open a terminal in an environment on its node (Ctrl-] detaches; it keeps running),
    /// or run a command there with `-- CMD ARGS` and exit with its code.
    Shell(ShellArgs),
    /// List and end terminals.
    Terminal {
        #[command(subcommand)]
        action: TerminalAction,
    },
    /// The audit log: operator requests that changed something, and sign-ins, newest first
    /// (who, from where, which fields; never their values).
    Audit {
        /// Entries to show (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only entries older than this id (the `--before` printed under a full page).
        #[arg(long)]
        before: Option<i64>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A terminal dashboard: environments, threads and their live output, nodes, approvals
    /// (keyboard-driven; fits 80x24, works over SSH).
    Tui {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Tokens and cost of agent tasks, by model, environment or node.
    Usage {
        /// Start of the range (RFC 3339 or epoch ms) [default: 30 days before --to].
        #[arg(long)]
        from: Option<String>,
        /// End of the range [default: now].
        #[arg(long)]
        to: Option<String>,
        /// What to sum by: model, environment, node or day.
        #[arg(long, default_value = "model", value_parser = ["model", "environment", "node", "day"])]
        by: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the gateway's Prometheus metrics (what `GET /metrics` serves a scraper).
    Metrics {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Inside a task's sandbox: relays the task's HTTP(S) proxy traffic to the node.
    #[command(name = "sandbox-forward", hide = true)]
    SandboxForward {
        socket: PathBuf,
        #[arg(last = true, required = true)]
        program: Vec<String>,
    },
}

impl Command {
    /// A long-running role (gateway, node daemon, all-in-one) rather than a one-shot client
    /// command; `main` logs at `info` for these and at `warn` otherwise.
    pub fn is_daemon(&self) -> bool {
        matches!(
            self,
            Command::Gateway(GatewayCommand { action: None, .. })
                | Command::AllInOne(AllInOneCommand { action: None, .. })
                | Command::Node(NodeCommand { action: None, .. })
        )
    }
}

#[derive(Args, Clone)]
pub struct DataDirArg {
    /// Data directory [default: $VIBER_HOME or ~/.openviber]
    #[arg(long, env = "VIBER_HOME")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    pub fn resolve(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(super::default_data_dir)
    }
}

#[derive(Subcommand)]
pub enum NodeAction {
    /// Create an enrollment token and print the command that starts the new node.
    Add {
        name: String,
        /// Token lifetime in seconds [default: 24 h].
        #[arg(long)]
        expires_in_secs: Option<u64>,
        /// How many nodes the token may enroll (a fleet); each is named NAME-<end of its id>.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a node: it is disconnected and refused from now on.
    Rm {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask a node to pull its config from the gateway and check it (LLM keys, secrets,
    /// setup scripts); prints the checks once the node reports them.
    CheckConfig {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Install this machine's node as a systemd service dialing `--gateway` (system-wide as
    /// root, `--user` otherwise), enable and start it. The enrollment token goes in the
    /// service's environment file (0600), not in the unit.
    Install {
        /// Gateway URL to dial.
        #[arg(long)]
        gateway: String,
        /// Enrollment token from `viber node add` (first start only).
        #[arg(long)]
        token: Option<String>,
        /// Name shown for this node [default: host name].
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        service: InstallArgs,
    },
    /// Stop, disable and remove the node's service (its data and settings stay).
    Uninstall(UninstallArgs),
    /// Devices waiting to join as nodes (started without a token), approved ones not yet
    /// collected, and rejected keys.
    Pending {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve a waiting device by its key fingerprint (or a unique prefix of at least 6
    /// characters): it receives its node token and comes online without a restart.
    Approve {
        fingerprint: String,
        /// The node's name [default: the one it asked for].
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reject a waiting device: its connection is closed and its key refused from now on
    /// (approving it later undoes this).
    Reject {
        fingerprint: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List nodes (same as `viber nodes`).
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum TaskAction {
    /// Run a task and stream its output; the exit code follows the task.
    Run {
        /// Node id to run on [default: any online node].
        #[arg(long)]
        node: Option<String>,
        /// Executor [default: shell].
        #[arg(long)]
        executor: Option<String>,
        /// Working directory on the node.
        #[arg(long)]
        cwd: Option<String>,
        /// Print the task id and return without waiting.
        #[arg(long)]
        detach: bool,
        /// The goal (for the shell executor, a bash script).
        #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
        goal: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tasks, newest first.
    List {
        #[arg(long)]
        node: Option<String>,
        /// pending, running, completed, error or stopped.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a task as JSON.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a task's output; with --follow, keep printing until it ends.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a task (SIGINT, SIGTERM, then SIGKILL to its process group).
    Stop {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve (or --deny) a tool call the agent is waiting on.
    Approve {
        id: String,
        /// The approval id [default: the task's pending one].
        approval: Option<String>,
        #[arg(long)]
        deny: bool,
        #[arg(long)]
        reason: Option<String>,
        /// For a network approval: allow the host for the rest of this task (`once`), every
        /// task of its thread (`thread`) or of its environment (`environment`).
        #[arg(long, value_parser = ["once", "thread", "environment"])]
        scope: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a follow-up message to a running task.
    Send {
        id: String,
        /// How the message joins the task: collect, steer or followup.
        #[arg(long, default_value = "followup")]
        mode: String,
        #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
        message: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum EnvAction {
    /// Create an environment.
    Create {
        name: String,
        #[command(flatten)]
        fields: EnvFields,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List environments with their bindings.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an environment (secrets masked).
    Show {
        env: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change an environment (bindings become stale).
    Update {
        env: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: EnvFields,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an environment (refused while a thread runs).
    Rm {
        env: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check the setup script's syntax and that the repository and branch are reachable.
    Validate {
        env: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Map the environment onto a node and prepare it there.
    Bind {
        env: String,
        node: String,
        /// Use this existing directory on the node instead of cloning.
        #[arg(long)]
        existing_path: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Prepare (again) on a node; --force re-runs setup even if nothing changed.
    Prepare {
        env: String,
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Secrets: `viber env secret set ENV NAME` reads the value from stdin.
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
}

#[derive(Subcommand)]
pub enum SecretAction {
    /// Set a secret; the value is read from stdin, never from the command line.
    Set {
        env: String,
        name: String,
        /// runtime (setup and tasks) or setup (setup script only).
        #[arg(long, default_value = "runtime")]
        scope: String,
        /// Deliver it as this file in the agent CLIs' home (such as .codex/auth.json or
        /// .claude/.credentials.json), written 0600 for each run, instead of as a variable.
        #[arg(long)]
        file: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a secret.
    Rm {
        env: String,
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
pub struct ShellArgs {
    /// Environment (name or id).
    pub env: String,
    /// The node, when the environment is bound to several (name or id).
    #[arg(long)]
    pub node: Option<String>,
    /// Open it in a thread's binding instead.
    #[arg(long)]
    pub thread: Option<String>,
    /// Start a new shell instead of attaching to the running one.
    #[arg(long)]
    pub new: bool,
    /// Window size as COLSxROWS (default: this terminal's, else 80x24).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u16, u16)>,
    /// A command to run instead of a shell.
    #[arg(last = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Subcommand)]
pub enum TerminalAction {
    /// List terminals (running ones unless --all).
    List {
        #[arg(long)]
        thread: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// End a terminal and what runs in it.
    Kill {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `COLSxROWS`, such as `120x40`.
fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (c, r) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?}: expected COLSxROWS, such as 120x40"))?;
    let side = |v: &str| match v.trim().parse::<u16>() {
        Ok(n @ 1..=1000) => Ok(n),
        _ => Err(format!("{s:?}: each side is 1-1000")),
    };
    Ok((side(c)?, side(r)?))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn roles_are_daemons_and_client_commands_are_not() {
        let daemon = |args: &[&str]| Cli::try_parse_from(args).unwrap().command.is_daemon();
        assert!(daemon(&["viber", "gateway"]));
        assert!(daemon(&["viber", "all-in-one", "--name", "n"]));
        assert!(daemon(&["viber", "node", "--name", "n"]));
        assert!(!daemon(&["viber", "node", "ls"]));
        assert!(!daemon(&["viber", "nodes"]));
        assert!(!daemon(&["viber", "task", "list"]));
        assert!(!daemon(&["viber", "completions", "bash"]));
    }

    #[test]
    fn node_run_flags_conflict_with_node_subcommands() {
        assert!(Cli::try_parse_from(["viber", "node", "--name", "x", "add", "y"]).is_err());
    }
}
