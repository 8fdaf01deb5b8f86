//! `Idempotency-Key` on side-effecting requests: the first response for a key is stored and
//! replayed (with `Idempotent-Replayed: true`) to every retry with the same key and route.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::clock::now_ms;
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::App;

/// Runs `f` once per `Idempotency-Key`: a retry with the same key gets the stored response.
pub async fn idempotent<T, F, Fut>(
    app: &App,
    headers: &HeaderMap,
    scope: String,
    f: F,
) -> ApiResult<Response>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<(StatusCode, T)>>,
{
    let key = match headers.get("idempotency-key") {
        None => {
            let (status, body) = f().await?;
            return Ok((status, Json(body)).into_response());
        }
        Some(v) => v
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                ApiError::bad_request("Idempotency-Key must be 1 to 255 visible characters")
            })?
            .to_string(),
    };
    // Retries of one key wait for each other; different keys never do.
    let _serial = app.idempotency.lock(format!("{scope}\n{key}")).await;
    if let Some((status, body)) = app
        .store
        .idempotent_response(scope.clone(), key.clone())
        .await?
    {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let mut res = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(res);
    }
    let (status, body) = f().await?;
    let text = serde_json::to_string(&body).map_err(anyhow::Error::from)?;
    app.store
        .save_idempotent_response(scope, key, status.as_u16(), text.clone(), now_ms())
        .await?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], text).into_response())
}

/// One lock per idempotency key in use, so that two retries of one request run one after
/// the other while unrelated requests do not wait. An entry lives only while someone holds
/// or waits for it, so the map stays as small as the number of requests in flight.
#[derive(Default)]
pub struct KeyLocks {
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds one key's lock; dropping it releases the key (and forgets it when nobody waits).
pub struct KeyGuard<'a> {
    owner: &'a KeyLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn lock(&self, key: String) -> KeyGuard<'_> {
        let lock = self.map().entry(key.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        KeyGuard {
            owner: self,
            key,
            guard: Some(guard),
        }
    }

    /// Keys currently locked or waited for.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.owner.map();
        // Only the map holds it now: nobody waits for this key.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyLocks;

    #[tokio::test]
    async fn one_key_serializes_other_keys_do_not_wait_and_nothing_is_kept() {
        let locks = KeyLocks::default();
        let a = locks.lock("a".into()).await;
        // Another key is free while `a` is held.
        let b = tokio::time::timeout(std::time::Duration::from_secs(5), locks.lock("b".into()))
            .await
            .expect("an unrelated key must not wait");
        // The same key waits until `a` is released.
        let again = locks.lock("a".into());
        tokio::pin!(again);
        assert!(futures_util::poll!(again.as_mut()).is_pending());
        drop(a);
        let a2 = again.await;
        drop((a2, b));
        assert!(locks.is_empty(), "released keys are forgotten");
    }
}
