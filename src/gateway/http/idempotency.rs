//! `Idempotency-Key` on side-effecting requests: the first response for a key is stored and
//! replayed (with `Idempotent-Replayed: true`) to every retry with the same key and route.

use std::future::Future;

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
    let _serial = app.idempotency.lock().await;
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
