//! Tokens, hashes and the node's Ed25519 identity (ring), plus 0600 file helpers.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the OS random source is available");
    buf
}

/// A uniformly random u64 (for jitter and ids).
pub fn random_u64() -> u64 {
    let b = random_bytes(8);
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// A bearer token: `prefix` followed by 256 random bits, base64url. The prefix tells a
/// human (and a secret scanner) what kind of token it is.
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", B64.encode(random_bytes(32)))
}

/// A short random id such as `task_3f9a0c1d2b4e5f60`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}", random_u64())
}

/// Lowercase hex SHA-256, used to store tokens without storing them.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A node's id is derived from its public key, so an id cannot be claimed without the key.
pub fn node_id_for(public_key: &[u8]) -> String {
    format!("node_{}", &sha256_hex(public_key)[..20])
}

/// Checks an Ed25519 signature; both key and signature are base64url.
pub fn verify_signature(public_key_b64: &str, message: &[u8], signature_b64: &str) -> bool {
    let (Ok(key), Ok(sig)) = (B64.decode(public_key_b64), B64.decode(signature_b64)) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, key)
        .verify(message, &sig)
        .is_ok()
}

/// Decodes a base64url public key, for deriving the node id.
pub fn decode_public_key(public_key_b64: &str) -> Option<Vec<u8>> {
    B64.decode(public_key_b64).ok().filter(|k| k.len() == 32)
}

/// A node's Ed25519 key pair, kept as PKCS#8 in a 0600 file in its data dir.
pub struct NodeKey {
    pair: Ed25519KeyPair,
}

impl NodeKey {
    /// A new key kept only in memory (simulated nodes, tests).
    pub fn generate() -> anyhow::Result<NodeKey> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| anyhow::anyhow!("generating key: {e}"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| anyhow::anyhow!("reading new key: {e}"))?;
        Ok(NodeKey { pair })
    }

    pub fn load_or_create(path: &Path) -> anyhow::Result<NodeKey> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let pair = Ed25519KeyPair::from_pkcs8(&bytes)
                    .map_err(|e| anyhow::anyhow!("{} is not a valid key: {e}", path.display()))?;
                Ok(NodeKey { pair })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|e| anyhow::anyhow!("generating key: {e}"))?;
                write_private_file(path, pkcs8.as_ref())?;
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                    .map_err(|e| anyhow::anyhow!("reading new key: {e}"))?;
                Ok(NodeKey { pair })
            }
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    pub fn public_key_b64(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    pub fn node_id(&self) -> String {
        node_id_for(self.pair.public_key().as_ref())
    }

    pub fn sign_b64(&self, message: &[u8]) -> String {
        B64.encode(self.pair.sign(message).as_ref())
    }
}

/// Writes `contents` to `path` with mode 0600, replacing it atomically.
/// Creates `dir` (and its parents) and makes it private to this user (0700): data dirs hold
/// keys, the database and session logs.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_is_created_private_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("viber-key-{}", random_u64()));
        let path = dir.join("node-key");
        let k1 = NodeKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(k1.public_key_b64(), k2.public_key_b64());
        let sig = k1.sign_b64(b"hello");
        assert!(verify_signature(&k2.public_key_b64(), b"hello", &sig));
        assert!(!verify_signature(&k2.public_key_b64(), b"hellO", &sig));
        assert!(!verify_signature("not base64!", b"hello", &sig));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
