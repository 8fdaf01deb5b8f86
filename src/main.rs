//! The `viber` command line: role subcommands and client subcommands.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use viber::cli::{self, ClientArgs, DEFAULT_GATEWAY};
use viber::gateway::{self, GatewayConfig};
use viber::node::{self, NodeConfig};

#[derive(Parser)]
#[command(
    name = "viber",
    version,
    about = "Run AI coding agents on your own machines",
    long_about = "Run AI coding agents on your own machines.\n\n\
        `viber all-in-one` starts a gateway and a node on this machine and prints a login URL.\n\
        `viber gateway` and `viber node --gateway URL` run the two roles on separate machines."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator: API, board and the endpoint nodes dial.
    Gateway(GatewayArgs),
    /// Run a node daemon, or manage nodes (`viber node add NAME`).
    Node(NodeCommand),
    /// Run a gateway and a node in one process (the quickest start).
    AllInOne(AllInOneArgs),
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
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Clone)]
struct DataDirArg {
    /// Data directory [default: $VIBER_HOME or ~/.openviber]
    #[arg(long, env = "VIBER_HOME")]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    fn resolve(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(cli::default_data_dir)
    }
}

#[derive(Args, Clone)]
struct GatewayArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "VIBER_LISTEN", default_value = "127.0.0.1:7391")]
    listen: SocketAddr,
    #[command(flatten)]
    data_dir: DataDirArg,
    /// URL nodes and browsers use to reach this gateway, if not http://<listen>.
    #[arg(long, env = "VIBER_PUBLIC_URL")]
    public_url: Option<String>,
    /// Heartbeat interval given to nodes, in milliseconds.
    #[arg(long, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..))]
    heartbeat_ms: u64,
    /// Seconds a node may stay away before its unfinished tasks fail with "node lost".
    #[arg(long, default_value_t = 120)]
    node_grace_secs: u64,
}

impl GatewayArgs {
    fn config(&self) -> GatewayConfig {
        let mut c = GatewayConfig::new(self.listen, self.data_dir.resolve());
        c.public_url = self.public_url.clone();
        c.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        c.node_grace = Duration::from_secs(self.node_grace_secs);
        c
    }
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct NodeCommand {
    #[command(subcommand)]
    action: Option<NodeAction>,
    #[command(flatten)]
    run: NodeRunArgs,
}

#[derive(Args, Clone)]
struct NodeRunArgs {
    /// Gateway URL to dial.
    #[arg(long, env = "VIBER_GATEWAY", default_value = DEFAULT_GATEWAY)]
    gateway: String,
    /// One-time enrollment token from `viber node add` (needed on first start only).
    #[arg(long, env = "VIBER_NODE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Name shown for this node [default: host name].
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(Subcommand)]
enum NodeAction {
    /// Create a one-time enrollment token and print the command that starts the new node.
    Add {
        name: String,
        /// Token lifetime in seconds [default: 24 h].
        #[arg(long)]
        expires_in_secs: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a node: it is disconnected and refused from now on.
    Rm {
        id: String,
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
enum TaskAction {
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
enum EnvAction {
    /// Create an environment.
    Create {
        name: String,
        #[command(flatten)]
        fields: cli::envs::EnvFields,
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
        fields: cli::envs::EnvFields,
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
enum SecretAction {
    /// Set a secret; the value is read from stdin, never from the command line.
    Set {
        env: String,
        name: String,
        /// runtime (setup and tasks) or setup (setup script only).
        #[arg(long, default_value = "runtime")]
        scope: String,
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

#[derive(Subcommand)]
enum ThreadAction {
    /// Start a thread in an environment with a first message and stream its task.
    New {
        env: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
        message: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List threads.
    List {
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a thread's conversation with each task's output.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a message: a follow-up to a running task, else the next task.
    Send {
        id: String,
        /// collect, steer or followup (for a running task).
        #[arg(long)]
        mode: Option<String>,
        #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
        message: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args, Clone)]
struct AllInOneArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Name of the local node [default: host name].
    #[arg(long)]
    name: Option<String>,
}

fn main() -> std::process::ExitCode {
    viber::tls::init();
    let cli = Cli::parse();
    let daemon = matches!(
        cli.command,
        Command::Gateway(_)
            | Command::AllInOne(_)
            | Command::Node(NodeCommand { action: None, .. })
    );
    init_tracing(if daemon { "info" } else { "warn" });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("viber: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Gateway(args) => {
            let shutdown = shutdown_on_signal();
            let gw = gateway::start(args.config(), shutdown).await?;
            print_ready(&gw.ready_line());
            gw.wait().await?;
        }
        Command::AllInOne(args) => all_in_one(args).await?,
        Command::Node(NodeCommand { action: None, run }) => {
            let config = NodeConfig {
                gateway: run.gateway,
                token: run.token,
                name: run.name.unwrap_or_else(node::hostname),
                data_dir: run.data_dir.resolve(),
            };
            node::run(config, shutdown_on_signal()).await?;
        }
        Command::Node(NodeCommand {
            action: Some(action),
            ..
        }) => match action {
            NodeAction::Add {
                name,
                expires_in_secs,
                client,
            } => cli::nodes::add(&cli::Client::new(&client)?, &name, expires_in_secs).await?,
            NodeAction::Rm { id, client } => {
                cli::nodes::remove(&cli::Client::new(&client)?, &id).await?
            }
            NodeAction::Ls { json, client } => {
                cli::nodes::list(&cli::Client::new(&client)?, json).await?
            }
        },
        Command::Nodes { json, client } => {
            cli::nodes::list(&cli::Client::new(&client)?, json).await?
        }
        Command::Task { action } => return task_command(action).await,
        Command::Env { action } => return env_command(action).await,
        Command::Thread { action } => return thread_command(action).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "viber", &mut std::io::stdout());
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn task_command(action: TaskAction) -> anyhow::Result<std::process::ExitCode> {
    use cli::tasks;
    match action {
        TaskAction::Run {
            node,
            executor,
            cwd,
            detach,
            goal,
            client,
        } => {
            let code = tasks::run(
                &cli::Client::new(&client)?,
                tasks::RunArgs {
                    node,
                    executor,
                    cwd,
                    detach,
                    goal: goal.join(" "),
                },
            )
            .await?;
            return Ok(std::process::ExitCode::from(code));
        }
        TaskAction::List {
            node,
            state,
            json,
            client,
        } => tasks::list(&cli::Client::new(&client)?, node, state, json).await?,
        TaskAction::Show { id, client } => tasks::show(&cli::Client::new(&client)?, &id).await?,
        TaskAction::Logs { id, follow, client } => {
            tasks::follow_stream(&cli::Client::new(&client)?, &id, follow).await?
        }
        TaskAction::Stop { id, client } => tasks::stop(&cli::Client::new(&client)?, &id).await?,
        TaskAction::Approve {
            id,
            approval,
            deny,
            reason,
            client,
        } => tasks::approve(&cli::Client::new(&client)?, &id, approval, deny, reason).await?,
        TaskAction::Send {
            id,
            mode,
            message,
            client,
        } => tasks::send(&cli::Client::new(&client)?, &id, &mode, message.join(" ")).await?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn env_command(action: EnvAction) -> anyhow::Result<std::process::ExitCode> {
    use cli::envs;
    let client = |c: &ClientArgs| cli::Client::new(c);
    match action {
        EnvAction::Create {
            name,
            fields,
            client: c,
        } => envs::create(&client(&c)?, &name, &fields).await?,
        EnvAction::List { json, client: c } => envs::list(&client(&c)?, json).await?,
        EnvAction::Show { env, client: c } => envs::show(&client(&c)?, &env).await?,
        EnvAction::Update {
            env,
            name,
            fields,
            client: c,
        } => envs::update(&client(&c)?, &env, &fields, name).await?,
        EnvAction::Rm { env, client: c } => envs::remove(&client(&c)?, &env).await?,
        EnvAction::Validate { env, client: c } => {
            if !envs::validate(&client(&c)?, &env).await? {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        EnvAction::Bind {
            env,
            node,
            existing_path,
            client: c,
        } => envs::bind(&client(&c)?, &env, &node, existing_path).await?,
        EnvAction::Prepare {
            env,
            node,
            force,
            client: c,
        } => envs::prepare(&client(&c)?, &env, node, force).await?,
        EnvAction::Secret { action } => match action {
            SecretAction::Set {
                env,
                name,
                scope,
                client: c,
            } => envs::secret_set(&client(&c)?, &env, &name, &scope).await?,
            SecretAction::Rm {
                env,
                name,
                client: c,
            } => envs::secret_rm(&client(&c)?, &env, &name).await?,
        },
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn thread_command(action: ThreadAction) -> anyhow::Result<std::process::ExitCode> {
    use cli::threads;
    let code = match action {
        ThreadAction::New {
            env,
            title,
            message,
            client,
        } => threads::new(&cli::Client::new(&client)?, &env, title, message.join(" ")).await?,
        ThreadAction::List { env, json, client } => {
            threads::list(&cli::Client::new(&client)?, env, json).await?;
            0
        }
        ThreadAction::Show { id, client } => {
            threads::show(&cli::Client::new(&client)?, &id).await?;
            0
        }
        ThreadAction::Send {
            id,
            mode,
            message,
            client,
        } => threads::send(&cli::Client::new(&client)?, &id, mode, message.join(" ")).await?,
    };
    Ok(std::process::ExitCode::from(code))
}

/// Gateway plus a local node on loopback; the node is enrolled automatically.
async fn all_in_one(args: AllInOneArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let config = args.gateway.config();
    let data_dir = config.data_dir.clone();
    let gw = gateway::start(config, shutdown.clone()).await?;
    let name = args.name.unwrap_or_else(node::hostname);
    let token = if node::identity::Credentials::load_for(&data_dir, &gw.base_url)?.is_some() {
        None
    } else {
        let (t, _) = gateway::create_enrollment(&gw.state, &name, Duration::from_secs(600)).await?;
        Some(t)
    };
    let node_id =
        viber::crypto::NodeKey::load_or_create(&data_dir.join(node::identity::KEY_FILE))?.node_id();
    let node_config = NodeConfig {
        gateway: gw.base_url.clone(),
        token,
        name,
        data_dir,
    };
    let node_shutdown = shutdown.clone();
    let node_task = tokio::spawn(async move {
        let r = node::run(node_config, node_shutdown.clone()).await;
        if let Err(e) = &r {
            tracing::error!(error = format!("{e:#}"), "local node stopped");
        }
        r
    });
    // Print the URL once the local node is online (or after a few seconds regardless).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.state.registry.presence(&node_id).is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    print_ready(&gw.ready_line());
    gw.wait().await?;
    node_task.await.context("node task panicked")??;
    Ok(())
}

fn print_ready(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A token cancelled on SIGINT or SIGTERM. A second signal exits at once.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        tracing::info!("shutting down (signal again to exit now)");
        t.cancel();
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        std::process::exit(130);
    });
    token
}
