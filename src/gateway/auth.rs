//! Operator authentication: bearer tokens whose SHA-256 is in the database.

use std::collections::HashSet;
use std::path::Path;
use std::sync::RwLock;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::App;
use crate::crypto;
use crate::store::Store;

pub const ADMIN_TOKEN_FILE: &str = "admin-token";
pub const ADMIN_TOKEN_PREFIX: &str = "vbr_adm_";

pub struct OperatorAuth {
    hashes: RwLock<HashSet<String>>,
}

impl OperatorAuth {
    /// Loads the admin token from `<data-dir>/admin-token`, creating it (mode 0600) on first
    /// start, and makes sure the database holds its hash (and only its hash).
    pub async fn init(store: &Store, data_dir: &Path) -> anyhow::Result<(OperatorAuth, String)> {
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            Ok(_) | Err(_) => {
                let t = crypto::new_token(ADMIN_TOKEN_PREFIX);
                crypto::write_private_file(&path, format!("{t}\n").as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                tracing::info!(path = %path.display(), "created admin token");
                t
            }
        };
        store
            .set_admin_token_hash(crypto::sha256_hex(token.as_bytes()), crate::clock::now_ms())
            .await?;
        let hashes = store.operator_token_hashes().await?.into_iter().collect();
        Ok((
            OperatorAuth {
                hashes: RwLock::new(hashes),
            },
            token,
        ))
    }

    pub fn is_valid(&self, token: &str) -> bool {
        let h = crypto::sha256_hex(token.as_bytes());
        self.hashes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&h)
    }
}

/// Middleware on every `/api/*` route: requires `Authorization: Bearer <operator token>`.
pub async fn require_operator(
    State(app): State<App>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return Err(ApiError::unauthorized(
            "missing operator token: send `Authorization: Bearer <token>` (see <data-dir>/admin-token)",
        ));
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token.is_empty() || !app.auth.is_valid(token) {
        return Err(ApiError::unauthorized("invalid operator token"));
    }
    Ok(next.run(req).await)
}
