//! The outbound network a sandboxed process tree gets (a task's `networkAccess`), the
//! allowlist the node's proxy enforces under `allowlist`, with its question to the operator
//! about unlisted hosts, and the node's own name mappings for that proxy.
//!
//! Must not touch: the proxy's wire handling (`proxy.rs`), the sandbox's command line
//! (`bwrap.rs`).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use super::proxy;
use crate::protocol::{NetworkAccess, TaskOptions};

/// The outbound network one process tree gets.
#[derive(Clone)]
pub enum Network {
    On,
    Off,
    /// Only through the node's proxy, to what the allowlist allows.
    Allowlist(Arc<Allowlist>),
}

/// Asks an operator whether a task may reach a host its allowlist does not name: `Ok` to
/// let the connection through, `Err` with why not.
pub trait NetworkAsk: Send + Sync {
    fn ask(&self, host: String, port: u16) -> BoxFuture<'static, Result<(), String>>;
}

/// The hosts a task may reach, and who to ask about others.
pub struct Allowlist {
    hosts: Vec<String>,
    /// None: refuse what is not listed without asking.
    ask: Option<Arc<dyn NetworkAsk>>,
    /// `host:port`s an operator allowed during this task.
    approved: Mutex<Vec<String>>,
    /// One question at a time, so concurrent connections to one host ask once.
    asking: tokio::sync::Mutex<()>,
}

impl Allowlist {
    pub fn new(hosts: Vec<String>, ask: Option<Arc<dyn NetworkAsk>>) -> Allowlist {
        Allowlist {
            hosts,
            ask,
            approved: Mutex::new(Vec::new()),
            asking: tokio::sync::Mutex::new(()),
        }
    }

    fn listed(&self, host: &str, port: u16) -> bool {
        self.hosts
            .iter()
            .chain(lock(&self.approved).iter())
            .any(|p| proxy::matches(p, host, port))
    }

    /// Whether an entry names this address itself (so a name resolving to it may be
    /// reached, private or not).
    pub(super) fn names_address(&self, ip: IpAddr, port: u16) -> bool {
        self.hosts
            .iter()
            .any(|p| proxy::matches(p, &ip.to_string(), port))
    }

    /// Whether `host:port` may be reached: listed, approved before, or approved now.
    pub(super) async fn allows(&self, host: &str, port: u16) -> Result<(), String> {
        if self.listed(host, port) {
            return Ok(());
        }
        let refused = format!(
            "network access to {host}:{port} is not allowed: this environment's \
             networkAccess is \"allowlist\" and {host} is not on its networkAllowlist"
        );
        let Some(ask) = &self.ask else {
            return Err(refused);
        };
        let _one = self.asking.lock().await;
        if self.listed(host, port) {
            return Ok(());
        }
        ask.ask(host.to_string(), port)
            .await
            .map_err(|why| format!("{refused}; {why}"))?;
        lock(&self.approved).push(format!("{host}:{port}"));
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Network {
    /// A task's network, from its options (default: on); `ask` is consulted about hosts an
    /// allowlist does not name.
    pub fn of(options: &TaskOptions, ask: Option<Arc<dyn NetworkAsk>>) -> Network {
        match options.network_access.unwrap_or(NetworkAccess::On) {
            NetworkAccess::On => Network::On,
            NetworkAccess::Off => Network::Off,
            NetworkAccess::Allowlist => Network::Allowlist(Arc::new(Allowlist::new(
                options.network_allowlist.clone(),
                ask,
            ))),
        }
    }
}

/// Parses `--proxy-resolve HOST=IP`.
pub fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let (host, ip) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected HOST=IP"))?;
    let ip: IpAddr = ip
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: {ip:?} is not an IP address: {e}"))?;
    Ok((host.trim().trim_end_matches('.').to_ascii_lowercase(), ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_entries_parse() {
        assert_eq!(
            parse_resolve("Api.Example.com.=127.0.0.1").unwrap(),
            ("api.example.com".to_string(), "127.0.0.1".parse().unwrap())
        );
        assert!(parse_resolve("nohost").is_err());
        assert!(parse_resolve("h=notanip").is_err());
    }
}
