//! `/api/config*`: shared credentials, the variables, secrets and secret files every
//! environment inherits unless it sets the same name itself (`viber config set env.X`).
//!
//! A key names what it sets: `var.NAME` a plain variable, `env.NAME` a secret variable,
//! `file.PATH` a secret delivered as the file PATH in the agent CLIs' home (named
//! `FILE_<PATH IN CAPITALS>`). Secrets are sealed like an environment's and never returned.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::environments::secret_view;
use super::openapi::Errors;
use crate::clock::now_ms;
use crate::gateway::envs::input::{valid_key, MAX_VALUE_BYTES};
use crate::gateway::envs::{check_secret_file, seal_secrets, Owner};
use crate::gateway::error::{ApiError, ApiResult, Body, Path};
use crate::gateway::App;
use crate::protocol::api::{ErrorBody, SecretInput, SetShared, SharedConfig};

/// What a key sets.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Var(String),
    Secret(String),
    File { name: String, path: String },
}

impl Key {
    fn parse(key: &str) -> ApiResult<Key> {
        let bad = || {
            ApiError::validation(format!(
                "key {key:?} must be var.NAME, env.NAME or file.PATH (NAME: [A-Za-z_][A-Za-z0-9_]*)"
            ))
        };
        let (kind, rest) = key.split_once('.').ok_or_else(bad)?;
        match kind {
            "var" if valid_key(rest) => Ok(Key::Var(rest.to_string())),
            "env" if valid_key(rest) => Ok(Key::Secret(rest.to_string())),
            "file" => {
                check_secret_file(key, rest)?;
                Ok(Key::File {
                    name: file_secret_name(rest),
                    path: rest.to_string(),
                })
            }
            _ => Err(bad()),
        }
    }

    fn name(&self) -> &str {
        match self {
            Key::Var(n) | Key::Secret(n) | Key::File { name: n, .. } => n,
        }
    }
}

/// The secret name a shared file is kept under: `FILE_` and its path in capitals, every
/// other character an underscore (`.ssh/id_ed25519` -> `FILE__SSH_ID_ED25519`).
fn file_secret_name(path: &str) -> String {
    let tail: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("FILE_{tail}")
}

async fn config(app: &App) -> ApiResult<SharedConfig> {
    Ok(SharedConfig {
        vars: app.store.shared_vars().await?,
        secrets: app
            .store
            .shared_secrets()
            .await?
            .iter()
            .map(|s| (s.key.clone(), secret_view(s)))
            .collect(),
    })
}

#[utoipa::path(
    get,
    path = "/config",
    operation_id = "getSharedConfig",
    tag = "environments",
    responses(
        (status = 200, description = "Shared variables, and shared secrets masked", body = SharedConfig),
        Errors,
    )
)]
pub async fn get(State(app): State<App>) -> ApiResult<Json<SharedConfig>> {
    Ok(Json(config(&app).await?))
}

#[utoipa::path(
    put,
    path = "/config/{key}",
    operation_id = "setShared",
    tag = "environments",
    params(("key" = String, Path, description = "`var.NAME`, `env.NAME` or `file.PATH` (percent-encode the `/`s)")),
    request_body = SetShared,
    responses(
        (status = 200, description = "Set; every environment that does not set the name itself now runs with it", body = SharedConfig),
        (status = 413, description = "Value too large", body = ErrorBody),
        (status = 409, description = "The name is taken by a secret of another kind or path", body = ErrorBody),
        (status = 422, description = "Bad key, or a secret too short to be redacted", body = ErrorBody),
        Errors,
    )
)]
pub async fn set(
    State(app): State<App>,
    Path(key): Path<String>,
    Body(req): Body<SetShared>,
) -> ApiResult<Json<SharedConfig>> {
    let key = Key::parse(&key)?;
    match key {
        Key::Var(name) => {
            if req.value.len() > MAX_VALUE_BYTES {
                return Err(ApiError::too_large(format!(
                    "{name} is over {MAX_VALUE_BYTES} bytes"
                )));
            }
            app.store.set_shared_var(name, req.value).await?;
        }
        Key::Secret(_) | Key::File { .. } => {
            let file = match &key {
                Key::File { path, .. } => Some(path.clone()),
                _ => None,
            };
            let name = key.name().to_string();
            // Two paths can make one name (`a.b`, `a_b`), and `env.FILE_X` is a name too:
            // never let one silently replace the other.
            let existing = app.store.shared_secrets().await?;
            if let Some(other) = existing.iter().find(|s| s.key == name && s.file != file) {
                let was = match &other.file {
                    Some(path) => format!("file.{path}"),
                    None => format!("env.{name}"),
                };
                return Err(ApiError::conflict(format!(
                    "{name} is already set as {was}; remove it first"
                )));
            }
            let input = SecretInput::Scoped {
                value: req.value,
                scope: req.scope,
                file,
            };
            let mut sealed =
                seal_secrets(&app, Owner::Shared, BTreeMap::from([(name, Some(input))]))?;
            let (name, change) = sealed.pop_first().expect("one secret was sealed");
            app.store.set_shared_secret(name, change, now_ms()).await?;
        }
    }
    Ok(Json(config(&app).await?))
}

#[utoipa::path(
    delete,
    path = "/config/{key}",
    operation_id = "deleteShared",
    tag = "environments",
    params(("key" = String, Path, description = "`var.NAME`, `env.NAME` or `file.PATH`")),
    responses(
        (status = 204, description = "Removed; environments no longer inherit it"),
        (status = 404, description = "Nothing is set under that key", body = ErrorBody),
        (status = 422, description = "Bad key", body = ErrorBody),
        Errors,
    )
)]
pub async fn delete(State(app): State<App>, Path(key): Path<String>) -> ApiResult<StatusCode> {
    let parsed = Key::parse(&key)?;
    let secret = !matches!(parsed, Key::Var(_));
    let had = app
        .store
        .remove_shared(parsed.name().to_string(), secret)
        .await?;
    if had {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("nothing is set under {key:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_what_they_set() {
        assert_eq!(
            Key::parse("var.GREETING").unwrap(),
            Key::Var("GREETING".into())
        );
        assert_eq!(
            Key::parse("env.API_KEY").unwrap(),
            Key::Secret("API_KEY".into())
        );
        assert_eq!(
            Key::parse("file..ssh/id_ed25519").unwrap(),
            Key::File {
                name: "FILE__SSH_ID_ED25519".into(),
                path: ".ssh/id_ed25519".into()
            }
        );
        for bad in [
            "GREETING",
            "var.",
            "env.1X",
            "env.A-B",
            "file./etc/passwd",
            "file.a/../b",
            "other.X",
        ] {
            assert!(Key::parse(bad).is_err(), "{bad}");
        }
    }
}
