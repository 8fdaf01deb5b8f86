//! `viber config ...`: shared credentials every environment inherits.

use clap::Subcommand;

use crate::cli::ClientArgs;
use crate::protocol::SecretScope;

#[derive(Subcommand)]
pub enum ConfigAction {
    /// Set a shared variable (`var.NAME VALUE`), secret (`env.NAME`, value from stdin) or
    /// secret file (`file.PATH < FILE`, delivered at PATH in the agent CLIs' home). Every
    /// environment inherits it unless it sets the same name itself.
    Set {
        key: String,
        /// The value of a `var.` (secrets are read from stdin, never argv).
        value: Option<String>,
        /// For a secret: runtime (setup and tasks) or setup (setup only).
        #[arg(long, value_parser = parse_scope)]
        scope: Option<SecretScope>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the shared variables, and the secrets masked.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a shared variable, secret or file (`var.NAME`, `env.NAME`, `file.PATH`).
    Rm {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn parse_scope(s: &str) -> Result<SecretScope, String> {
    s.parse().map_err(|e| format!("{e}"))
}
