//! Arguments of the long-running roles' service commands: `viber gateway|all-in-one
//! install|uninstall` (the node's are in [`super::NodeAction`]), carried out by
//! [`crate::cli::service`].

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{AllInOneArgs, GatewayArgs};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GatewayCommand {
    #[command(subcommand)]
    pub action: Option<ServiceAction>,
    #[command(flatten)]
    pub run: GatewayArgs,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AllInOneCommand {
    #[command(subcommand)]
    pub action: Option<ServiceAction>,
    #[command(flatten)]
    pub run: AllInOneArgs,
}

/// Installing a role as a service, or removing it.
#[derive(Subcommand)]
pub enum ServiceAction {
    /// Install as a systemd service (system-wide as root, `--user` otherwise), enable and
    /// start it. Settings and secrets go in its environment file (`VIBER_*` variables).
    Install(InstallArgs),
    /// Stop, disable and remove the service (its data and settings stay).
    Uninstall(UninstallArgs),
}

#[derive(Args, Clone, Default)]
pub struct InstallArgs {
    /// A user service (`systemctl --user`); the default when not root.
    #[arg(long)]
    pub user: bool,
    /// Print the unit and change nothing.
    #[arg(long)]
    pub print: bool,
    /// Write the unit and its settings, but do not enable or start it.
    #[arg(long)]
    pub no_start: bool,
    /// Where to write the unit [default: /etc/systemd/system, or ~/.config/systemd/user].
    #[arg(long)]
    pub unit_dir: Option<PathBuf>,
    /// More flags for the role, after `--` (for example `-- --listen 0.0.0.0:7391`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Args, Clone, Default)]
pub struct UninstallArgs {
    /// The user service (`systemctl --user`); the default when not root.
    #[arg(long)]
    pub user: bool,
    /// Only remove the unit file: no `systemctl disable --now`.
    #[arg(long)]
    pub no_stop: bool,
    /// Where the unit was written.
    #[arg(long)]
    pub unit_dir: Option<PathBuf>,
}
