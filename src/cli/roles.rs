//! Starting the long-running roles from parsed arguments: `viber gateway`, `viber node` and
//! `viber all-in-one` (a gateway plus a local node enrolled automatically), with the shutdown
//! signal handling and the ready line they share.
//!
//! Owns: turning [`super::args`] into a running [`crate::gateway`] and/or [`crate::node`], and
//! when each one counts as started. Must not touch: flag definitions (those are in
//! [`super::args`]), client commands (those go through [`super::dispatch`]), or anything inside
//! the gateway or the node beyond their public start/run entry points.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::args::{AllInOneArgs, GatewayArgs, NodeRunArgs};
use crate::gateway::{create_enrollment, start as start_gateway};
use crate::node::{self as node_role, identity, NodeConfig};

/// `viber gateway`: serve until SIGINT/SIGTERM; prints the ready line once listening.
pub async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let gw = start_gateway(args.config(), shutdown).await?;
    print_ready(&gw.ready_line());
    gw.wait().await?;
    Ok(())
}

/// `viber node`: the node daemon, until SIGINT/SIGTERM.
pub async fn node(args: NodeRunArgs) -> anyhow::Result<()> {
    node_role::run(args.config(), shutdown_on_signal()).await
}

/// Gateway plus a local node on loopback; the node is enrolled automatically.
pub async fn all_in_one(args: AllInOneArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let mut config = args.gateway.config();
    // The machine's own user runs both sides: a second node started here without a token
    // (`viber node --gateway http://127.0.0.1:PORT`) joins without asking.
    config.approve_loopback = true;
    let data_dir = config.data_dir.clone();
    let gw = start_gateway(config, shutdown.clone()).await?;
    let name = args.name.unwrap_or_else(node_role::hostname);
    let token = if identity::Credentials::load_for(&data_dir, &gw.base_url)?.is_some() {
        None
    } else {
        let (t, _) = create_enrollment(&gw.state, &name, Duration::from_secs(600), 1).await?;
        Some(t)
    };
    let node_id =
        crate::crypto::NodeKey::load_or_create(&data_dir.join(identity::KEY_FILE))?.node_id();
    let node_config = NodeConfig {
        gateway: gw.base_url.clone(),
        token,
        name,
        data_dir,
        retention: gw.state.config.retention,
        sandbox: args.sandbox.spec(),
    };
    let node_shutdown = shutdown.clone();
    let node_task = tokio::spawn(async move {
        let r = node_role::run(node_config, node_shutdown.clone()).await;
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
