//! `GET /metrics`: the gateway's Prometheus metrics (see `gateway::metrics`), for the
//! operator's token or session. `--metrics-listen` serves the same without a token on an
//! address of its own, for a scraper on a private interface.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};

use crate::gateway::error::ApiResult;
use crate::gateway::{auth, metrics, App};

/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "system",
    security(("operatorToken" = []), ("session" = [])),
    responses(
        (status = 200, description = "Prometheus metrics (OpenMetrics text): nodes by status, tasks by state and executor, chunks and bytes relayed, SSE watchers, frames by type, SQLite batch latency and size, approvals waiting, tokens by model", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "No operator token or session", body = crate::protocol::api::ErrorBody),
        super::Errors,
    )
)]
pub async fn metrics(State(app): State<App>, headers: HeaderMap, uri: Uri) -> ApiResult<Response> {
    auth::check_operator(&app, &headers, &Method::GET, &uri)?;
    scrape(&app).await
}

/// The scrape, as a response.
async fn scrape(app: &App) -> ApiResult<Response> {
    let text = metrics::render(app).await?;
    let mut res = text.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    Ok(res)
}

/// `--metrics-listen`: `/metrics` without a token, nothing else.
pub async fn unauthenticated(State(app): State<App>, uri: Uri) -> Response {
    if uri.path() != "/metrics" {
        return crate::gateway::error::ApiError::not_found("only /metrics is served here")
            .into_response();
    }
    match scrape(&app).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}
