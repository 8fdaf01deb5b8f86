//! The audit log: a middleware that records every `/api` request that changes something
//! (`POST`, `PUT`, `PATCH`, `DELETE`, and WebSocket upgrades such as a terminal attach),
//! sign-ins included, with who made it, from where and how it ended; and `GET /api/audit`.
//!
//! Values are never recorded: only the names of the body's fields (and, for an object such
//! as `secrets` or `variables`, the names inside it). A request is recorded after its
//! response, refused ones too (a failed sign-in is a 401 from `anonymous`).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::openapi::Errors;
use crate::clock::{iso8601, now_ms};
use crate::gateway::error::{ApiError, ApiResult, Query, MAX_BODY_BYTES};
use crate::gateway::{auth, App};
use crate::protocol::api::{AuditEntry, AuditPage, AuditQuery};
use crate::store::AuditRecord;

/// Field names kept per request, and the length of each.
const MAX_FIELDS: usize = 64;
const MAX_FIELD_NAME: usize = 64;

/// Records the request if it changes something; see the module documentation.
pub async fn record(State(app): State<App>, req: Request, next: Next) -> Response {
    let upgrade = req
        .headers()
        .get(axum::http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !(writes || upgrade) || !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let mut rec = AuditRecord {
        id: 0,
        at: now_ms(),
        actor: auth::actor(&app, req.headers()),
        method: if upgrade {
            format!("{} (websocket)", req.method())
        } else {
            req.method().to_string()
        },
        route: req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| path.clone(), |m| m.as_str().to_string()),
        path,
        status: 0,
        peer: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default(),
        fields: Vec::new(),
    };
    let res = if upgrade {
        next.run(req).await
    } else {
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(bytes) => {
                rec.fields = field_names(&bytes);
                next.run(Request::from_parts(parts, Body::from(bytes)))
                    .await
            }
            Err(_) => ApiError::too_large(format!("request body over {} bytes", MAX_BODY_BYTES))
                .into_response(),
        }
    };
    rec.status = res.status().as_u16();
    if let Err(e) = app.store.insert_audit(rec).await {
        tracing::error!(error = format!("{e:#}"), "recording an audit entry");
    }
    res
}

/// The names of a JSON object body's fields, and of the fields of its object fields
/// (`secrets.API_KEY`); nothing for any other body.
fn field_names(body: &[u8]) -> Vec<String> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let name = |s: &str| crate::text::head(s, MAX_FIELD_NAME).to_string();
    let mut out = Vec::new();
    for (k, v) in &map {
        out.push(name(k));
        if let Value::Object(inner) = v {
            out.extend(inner.keys().map(|ik| format!("{}.{}", name(k), name(ik))));
        }
    }
    out.truncate(MAX_FIELDS);
    out
}

/// The audit log, newest first.
#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "audit",
    tag = "system",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of entries, newest first", body = AuditPage),
        (status = 422, description = "limit out of range", body = crate::protocol::api::ErrorBody),
        Errors,
    )
)]
pub async fn audit(
    State(app): State<App>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit must be 1 to 1000"));
    }
    let rows = app
        .store
        .audit_page(q.before.unwrap_or(i64::MAX), limit)
        .await?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let entries = rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            at: iso8601(r.at),
            actor: r.actor,
            method: r.method,
            route: r.route,
            path: r.path,
            status: r.status,
            peer: r.peer,
            fields: r.fields,
        })
        .collect();
    Ok(Json(AuditPage {
        entries,
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::field_names;

    #[test]
    fn only_names_are_kept() {
        let body = br#"{"name": "e", "secrets": {"API_KEY": "sk-123", "B": null}, "n": 5}"#;
        let f = field_names(body);
        assert_eq!(f, ["name", "secrets", "secrets.API_KEY", "secrets.B", "n"]);
        assert!(!f.concat().contains("sk-123"));
        assert!(field_names(b"not json").is_empty());
        assert!(field_names(b"[1, 2]").is_empty());
        assert!(field_names(b"").is_empty());
    }
}
