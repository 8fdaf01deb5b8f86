//! Sealing the secrets of a request and opening them for a frame to a node. Plaintext exists
//! only between these functions and an authenticated frame; it is never stored or returned.

use std::collections::BTreeMap;

use super::input::{valid_key, MAX_VALUE_BYTES};
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::App;
use crate::protocol::api::SecretInput;
use crate::protocol::{SecretScope, SecretValue};
use crate::secrets::redact::MIN_SECRET_LEN;
use crate::store::{SecretChange, SecretOrigin};

/// Seals the secrets of a request. A value too short to be redacted from output is refused:
/// it could not be kept out of logs and streams.
pub fn seal_secrets(
    app: &App,
    owner: Owner<'_>,
    input: BTreeMap<String, Option<SecretInput>>,
) -> ApiResult<BTreeMap<String, SecretChange>> {
    let mut changes = BTreeMap::new();
    for (k, v) in input {
        if !valid_key(&k) {
            return Err(ApiError::validation(format!(
                "secret name {k:?} must match [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
        let (value, scope, file) = match v {
            None => {
                changes.insert(k, SecretChange::Remove);
                continue;
            }
            Some(SecretInput::Value(v)) => (v, SecretScope::Runtime, None),
            Some(SecretInput::Scoped { value, scope, file }) => {
                (value, scope.unwrap_or(SecretScope::Runtime), file)
            }
        };
        if let Some(f) = &file {
            check_secret_file(&k, f)?;
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::too_large(format!(
                "secret {k} is over {MAX_VALUE_BYTES} bytes"
            )));
        }
        if value.len() < MIN_SECRET_LEN {
            return Err(ApiError::validation(format!(
                "secret {k} is shorter than {MIN_SECRET_LEN} characters, so it could not be \
                 redacted from output; use a longer value (or a plain variable if it is not secret)"
            )));
        }
        let sealed = app.keyring.seal(value.as_bytes(), &secret_aad(owner, &k));
        changes.insert(
            k,
            SecretChange::Set {
                scope,
                sealed,
                file,
            },
        );
    }
    Ok(changes)
}

/// A secret file's path: relative, plain names only (no `..`, no `.` alone), at most 200
/// bytes, so it cannot leave the agent home it is written into.
pub fn check_secret_file(key: &str, path: &str) -> ApiResult<()> {
    let ok = !path.is_empty()
        && path.len() <= 200
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "secret {key}: file must be a relative path of plain names inside the agent home \
             (such as .codex/auth.json), got {path:?}"
        )))
    }
}

/// Whose secret a sealed value is.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    Environment(&'a str),
    /// The gateway-wide (shared) secrets every environment inherits.
    Shared,
}

/// Binds a sealed value to its owner and name, so it cannot be moved to another.
fn secret_aad(owner: Owner<'_>, key: &str) -> String {
    match owner {
        Owner::Environment(env_id) => format!("env:{env_id}:{key}"),
        Owner::Shared => format!("shared:{key}"),
    }
}

/// The plaintext secrets an environment runs with (its own and the shared ones it does not
/// override), for a frame to a node.
pub async fn unseal_secrets(
    app: &App,
    env_id: &str,
    runtime_only: bool,
) -> anyhow::Result<Vec<SecretValue>> {
    let mut out = Vec::new();
    for (s, origin) in app.store.effective_secrets(env_id.to_string()).await? {
        if runtime_only && s.scope == SecretScope::Setup {
            continue;
        }
        let owner = match origin {
            SecretOrigin::Environment => Owner::Environment(env_id),
            SecretOrigin::Shared => Owner::Shared,
        };
        let plain = app.keyring.open(&s.sealed, &secret_aad(owner, &s.key))?;
        out.push(SecretValue {
            name: s.key,
            value: String::from_utf8_lossy(&plain).into_owned(),
            scope: s.scope,
            file: s.file,
        });
    }
    Ok(out)
}
