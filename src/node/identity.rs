//! A node's durable identity: its Ed25519 key (`node-key`) and the node token the gateway
//! issued at enrollment (`node.json`), both mode 0600 in the data dir.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::crypto;

pub const KEY_FILE: &str = "node-key";
pub const CREDENTIALS_FILE: &str = "node.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The gateway URL the token was issued by.
    pub gateway: String,
    pub node_id: String,
    pub node_token: String,
}

impl Credentials {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(CREDENTIALS_FILE)
    }

    /// The saved credentials, if any were issued by `gateway`.
    pub fn load_for(data_dir: &Path, gateway: &str) -> anyhow::Result<Option<Credentials>> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let creds: Credentials = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not valid JSON", path.display()))?;
                Ok(Some(creds).filter(|c| same_gateway(&c.gateway, gateway)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(data_dir);
        let json = serde_json::to_vec_pretty(self)?;
        crypto::write_private_file(&path, &json)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Compares gateway URLs ignoring scheme (http vs ws) and a trailing `/ws` or slash.
fn same_gateway(a: &str, b: &str) -> bool {
    fn norm(u: &str) -> &str {
        let u = u
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_start_matches("wss://")
            .trim_start_matches("ws://");
        let u = u.trim_end_matches('/');
        u.strip_suffix("/ws").unwrap_or(u)
    }
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn gateway_urls_compare_by_host_and_path() {
        assert!(super::same_gateway("http://h:1", "ws://h:1/ws"));
        assert!(super::same_gateway("https://h:1/", "wss://h:1"));
        assert!(!super::same_gateway("http://h:1", "http://h:2"));
    }
}
