//! The gateway's HTTP surface: one file per resource, all answering with `protocol::api`
//! views. Every `/api/*` route requires an operator (bearer token or board session with
//! CSRF); `/health`, `/ws` (nodes authenticate in the handshake), a node's own config (its
//! node token) and the board do not.
//!
//! Handlers validate input and turn records into views. They must not hold SQL (that is
//! `store/`'s), build frames for a node's running tasks by hand (the task hub and `envs/`
//! do), or import `node::`.

mod bindings;
mod environments;
mod events;
mod idempotency;
mod node_config;
mod nodes;
mod stream;
mod tasks;
mod threads;
mod usage;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use tracing::Instrument;

pub use idempotency::KeyLocks;
pub use nodes::create_enrollment;

use super::error::{ApiError, ApiResult, MAX_BODY_BYTES};
use super::{auth, board, link, App};
use crate::protocol::api::Health;

pub fn router(app: App) -> Router {
    Router::new()
        .route("/health", get(health))
        // Authenticated with the node's own token, not an operator token.
        .route("/api/vibers/{id}/config", get(node_config::node_config))
        .route("/api/nodes/{id}/config", get(node_config::node_config))
        // Authenticated with the token in the body (login) or the cookie itself.
        .route(
            "/api/session",
            get(auth::session).post(auth::login).delete(auth::logout),
        )
        .route("/ws", get(link::upgrade))
        .nest("/api", operator_routes(app.clone()))
        .merge(board::router())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(catch_panic))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(app)
}

/// `/api/*` behind operator authentication.
fn operator_routes(app: App) -> Router<App> {
    Router::new()
        .route("/vibers", get(nodes::list))
        .route("/nodes", get(nodes::list))
        .route("/nodes/enroll", post(nodes::enroll))
        .route("/nodes/{id}", get(nodes::get).delete(nodes::revoke))
        .route("/vibers/{id}", get(nodes::get).delete(nodes::revoke))
        .route("/vibers/{id}/config-push", post(nodes::config_push))
        .route("/nodes/{id}/config-push", post(nodes::config_push))
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route("/tasks/{id}", get(tasks::get))
        .route("/tasks/{id}/stop", post(tasks::stop))
        .route("/tasks/{id}/message", post(tasks::message))
        .route("/tasks/{id}/stream", get(stream::stream))
        .route("/tasks/{id}/approvals/{approval}", post(tasks::approve))
        .route("/events", get(events::events))
        .route("/usage", get(usage::usage))
        .route(
            "/environments",
            get(environments::list).post(environments::create),
        )
        .route(
            "/environments/{id}",
            get(environments::get)
                .put(environments::update)
                .delete(environments::delete),
        )
        .route("/environments/{id}/validate", post(environments::validate))
        .route(
            "/environments/{id}/bindings",
            get(bindings::bindings).post(bindings::bind),
        )
        .route(
            "/environments/{id}/bindings/{bid}/prepare",
            post(bindings::prepare),
        )
        .route(
            "/environments/{id}/bindings/{bid}/logs",
            get(bindings::logs),
        )
        .route("/threads", get(threads::list).post(threads::create))
        .route("/threads/{id}", get(threads::get).patch(threads::patch))
        .route(
            "/threads/{id}/messages",
            get(threads::messages).post(threads::send),
        )
        .fallback(api_not_found)
        .layer(axum::middleware::from_fn_with_state(
            app,
            auth::require_operator,
        ))
}

/// One span per HTTP request, so everything a handler logs says which request it served.
async fn request_span(req: Request, next: Next) -> Response {
    let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path());
    next.run(req).instrument(span).await
}

/// A handler that panics answers 500 in the API's error shape, instead of the connection
/// being dropped with no answer. The panic itself is logged.
async fn catch_panic(req: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(res) => res,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "request handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the gateway log",
            )
            .into_response()
        }
    }
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API route")
}

async fn health(State(app): State<App>) -> ApiResult<Json<Health>> {
    let (nodes, tasks) = app.store.counts().await?;
    Ok(Json(Health {
        status: "ok".into(),
        version: crate::VERSION.into(),
        uptime_secs: app.started.elapsed().as_secs(),
        nodes,
        nodes_online: app.registry.online_count() as u64,
        tasks,
    }))
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use axum::Router;

    use crate::protocol::api::ErrorBody;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_error_shape() {
        crate::tls::init();
        let router = Router::new()
            .route("/boom", get(|| async { panic!("boom") as &'static str }))
            .route("/fine", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(super::catch_panic));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let res = reqwest::get(format!("http://{addr}/boom")).await.unwrap();
        assert_eq!(res.status(), 500);
        let body: ErrorBody = res.json().await.unwrap();
        assert_eq!(body.error.code, "internal");
        // The server keeps serving.
        let res = reqwest::get(format!("http://{addr}/fine")).await.unwrap();
        assert_eq!(res.text().await.unwrap(), "fine");
    }
}
