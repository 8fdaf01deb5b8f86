//! The `viber` binary: parse the command line ([`viber::cli::args`]), then hand the command to a
//! role ([`viber::cli::roles`]) or a client command ([`viber::cli::dispatch`]); nothing else.

use std::process::ExitCode;

use clap::Parser;

use viber::cli::args::{AllInOneCommand, Cli, Command, GatewayCommand, NodeCommand};
use viber::cli::service::Role;
use viber::cli::{dispatch, roles};
use viber::node::sandbox::forward;

fn main() -> ExitCode {
    viber::os::cap_malloc_arenas();
    viber::tls::init();
    let cli = Cli::parse();
    if let Command::SandboxForward { socket, program } = cli.command {
        // Inside a task's sandbox: no runtime, no logging, just the forwarder.
        return ExitCode::from(forward::run(socket, &program).clamp(0, 255) as u8);
    }
    init_tracing(if cli.command.is_daemon() {
        "info"
    } else {
        "warn"
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("viber: {e:#}");
            ExitCode::FAILURE
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

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let started = |()| ExitCode::SUCCESS;
    match command {
        Command::Gateway(GatewayCommand { action: None, run }) => {
            roles::gateway(run).await.map(started)
        }
        Command::Gateway(GatewayCommand {
            action: Some(action),
            ..
        }) => dispatch::service(Role::Gateway, action),
        Command::AllInOne(AllInOneCommand { action: None, run }) => {
            roles::all_in_one(run).await.map(started)
        }
        Command::AllInOne(AllInOneCommand {
            action: Some(action),
            ..
        }) => dispatch::service(Role::AllInOne, action),
        Command::Node(NodeCommand { action: None, run }) => roles::node(run).await.map(started),
        Command::Node(NodeCommand {
            action: Some(action),
            ..
        }) => dispatch::node(action).await,
        Command::Nodes { json, client } => dispatch::list_nodes(json, &client).await,
        Command::Task { action } => dispatch::task(action).await,
        Command::Env { action } => dispatch::env(action).await,
        Command::Thread { action } => dispatch::thread(action).await,
        Command::Job { action } => dispatch::job(action).await,
        Command::Config { action } => dispatch::config(action).await,
        Command::Shell(args) => dispatch::shell(args).await,
        Command::Terminal { action } => dispatch::terminal(action).await,
        Command::Metrics { client } => dispatch::metrics(&client).await,
        Command::Tui { client } => dispatch::tui(&client).await,
        Command::Usage {
            from,
            to,
            by,
            json,
            client,
        } => dispatch::usage(from, to, &by, json, &client).await,
        Command::Audit {
            limit,
            before,
            json,
            client,
        } => dispatch::audit(limit, before, json, &client).await,
        Command::Completions { shell } => Ok(dispatch::completions(shell)),
        Command::SandboxForward { .. } => unreachable!("handled before the runtime starts"),
    }
}
