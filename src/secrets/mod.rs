//! Secrets: sealed at rest with AES-256-GCM, and a streaming redactor for every output path.
//!
//! The gateway seals each secret value under the current key of its [`Keyring`] and stores
//! the key id next to it, so keys can rotate: values sealed under an older key still open
//! while that key is configured. Plaintext exists only in memory: on the gateway while it
//! builds a frame for a node, and on the node while a process that needs it runs.

pub mod redact;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use crate::crypto;

pub use redact::Redactor;

/// Key file in the gateway's data dir (base64 of 32 random bytes, mode 0600).
pub const KEY_FILE: &str = "secret.key";
/// Environment variable that overrides the key file (base64 of 32 bytes).
pub const KEY_ENV: &str = "VIBER_SECRET_KEY";
/// Older keys still accepted for opening, comma-separated base64 (for rotation).
pub const OLD_KEYS_ENV: &str = "VIBER_SECRET_KEYS_OLD";

/// A sealed value as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the GCM tag.
    pub ciphertext: Vec<u8>,
}

pub struct Keyring {
    current_id: String,
    keys: HashMap<String, LessSafeKey>,
}

fn key_id(raw: &[u8]) -> String {
    crypto::sha256_hex(raw)[..12].to_string()
}

fn parse_key(b64: &str) -> anyhow::Result<Vec<u8>> {
    let raw = B64
        .decode(b64.trim())
        .context("secret key is not valid base64")?;
    if raw.len() != 32 {
        bail!("secret key must be 32 bytes, got {}", raw.len());
    }
    Ok(raw)
}

impl Keyring {
    /// The key from `VIBER_SECRET_KEY`, else `<data-dir>/secret.key` (created on first start),
    /// plus any older keys from `VIBER_SECRET_KEYS_OLD`.
    pub fn load(data_dir: &Path) -> anyhow::Result<Keyring> {
        let current = match std::env::var(KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => parse_key(&v).context(KEY_ENV)?,
            _ => {
                let path = data_dir.join(KEY_FILE);
                match std::fs::read_to_string(&path) {
                    Ok(text) => parse_key(&text).with_context(|| path.display().to_string())?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let raw = crypto::random_bytes(32);
                        crypto::write_private_file(
                            &path,
                            format!("{}\n", B64.encode(&raw)).as_bytes(),
                        )
                        .with_context(|| format!("writing {}", path.display()))?;
                        tracing::info!(path = %path.display(), "created secret key");
                        raw
                    }
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
        };
        let mut ring = Keyring::from_raw(&current)?;
        if let Ok(old) = std::env::var(OLD_KEYS_ENV) {
            for k in old.split(',').filter(|k| !k.trim().is_empty()) {
                ring.add_old(&parse_key(k).context(OLD_KEYS_ENV)?)?;
            }
        }
        Ok(ring)
    }

    pub fn from_raw(raw: &[u8]) -> anyhow::Result<Keyring> {
        let id = key_id(raw);
        let mut keys = HashMap::new();
        keys.insert(id.clone(), less_safe(raw)?);
        Ok(Keyring {
            current_id: id,
            keys,
        })
    }

    fn add_old(&mut self, raw: &[u8]) -> anyhow::Result<()> {
        self.keys.insert(key_id(raw), less_safe(raw)?);
        Ok(())
    }

    pub fn current_key_id(&self) -> &str {
        &self.current_id
    }

    /// Seals `plaintext`; `aad` binds the ciphertext to where it is stored.
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Sealed {
        let key = &self.keys[&self.current_id];
        let nonce_bytes = crypto::random_bytes(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&nonce_bytes).expect("12-byte nonce");
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .expect("AES-GCM seal");
        Sealed {
            key_id: self.current_id.clone(),
            nonce: nonce_bytes,
            ciphertext: buf,
        }
    }

    pub fn open(&self, sealed: &Sealed, aad: &str) -> anyhow::Result<Vec<u8>> {
        let key = self.keys.get(&sealed.key_id).ok_or_else(|| {
            anyhow!(
                "secret sealed under key {} which is not configured (set {OLD_KEYS_ENV})",
                sealed.key_id
            )
        })?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce)
            .map_err(|_| anyhow!("sealed secret has a bad nonce"))?;
        let mut buf = sealed.ciphertext.clone();
        let plain = key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| anyhow!("sealed secret does not authenticate (wrong key or tampered)"))?;
        Ok(plain.to_vec())
    }
}

fn less_safe(raw: &[u8]) -> anyhow::Result<LessSafeKey> {
    let unbound = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| anyhow!("bad AES-256 key"))?;
    Ok(LessSafeKey::new(unbound))
}

/// What an API shows instead of a secret value.
pub fn mask(value_len: usize) -> String {
    if value_len == 0 {
        String::new()
    } else {
        "••••••••".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let ring = Keyring::from_raw(&[7u8; 32]).unwrap();
        let s = ring.seal(b"hunter2-secret", "env:e1:TOKEN");
        assert_eq!(s.key_id, ring.current_key_id());
        assert!(!s.ciphertext.windows(6).any(|w| w == b"hunter"));
        assert_eq!(ring.open(&s, "env:e1:TOKEN").unwrap(), b"hunter2-secret");
        // Bound to its slot.
        assert!(ring.open(&s, "env:e2:TOKEN").is_err());
        let mut bad = s.clone();
        bad.ciphertext[0] ^= 1;
        assert!(ring.open(&bad, "env:e1:TOKEN").is_err());
        // Two seals of one value differ (fresh nonces).
        assert_ne!(
            ring.seal(b"x", "a").ciphertext,
            ring.seal(b"x", "a").ciphertext
        );
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let old = Keyring::from_raw(&[1u8; 32]).unwrap();
        let sealed = old.seal(b"v", "slot");
        let mut new = Keyring::from_raw(&[2u8; 32]).unwrap();
        assert!(new.open(&sealed, "slot").is_err());
        new.add_old(&[1u8; 32]).unwrap();
        assert_eq!(new.open(&sealed, "slot").unwrap(), b"v");
        assert_ne!(new.seal(b"v", "slot").key_id, sealed.key_id);
    }

    #[test]
    fn key_file_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("viber-keys-{}", crypto::random_u64()));
        let a = Keyring::load(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let b = Keyring::load(&dir).unwrap();
        assert_eq!(a.current_key_id(), b.current_key_id());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
