//! The gateway's HTTP surface: one file per resource, all answering with `protocol::api`
//! views. Every `/api/*` route requires an operator (bearer token or board session with
//! CSRF); `/health`, `/ws` (nodes authenticate in the handshake), a node's own config (its
//! node token) and the board do not.
//!
//! Handlers validate input and turn records into views. They must not hold SQL (that is
//! `store/`'s), build frames for a node's running tasks by hand (the task hub and `envs/`
//! do), or import `node::`.

mod audit;
mod bindings;
mod changes;
mod environments;
mod events;
mod idempotency;
mod jobs;
pub mod metrics;
mod node_config;
mod nodes;
mod openapi;
mod pairing;
mod shared;
mod stream;
mod tasks;
mod terminals;
mod threads;
mod usage;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use idempotency::KeyLocks;
pub use nodes::create_enrollment;
pub use openapi::Errors;
pub(crate) use tasks::awaiting_approvals;
pub(crate) use threads::{open_thread, send_message};

use super::error::{ApiError, ApiResult, MAX_BODY_BYTES};
use super::{auth, board, link, App};
use crate::protocol::api::Health;

pub fn router(app: App) -> Router {
    let (api, doc) = api_router(app.clone()).split_for_parts();
    api.layer(Extension(openapi::Description::new(&doc)))
        .merge(board::router())
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            audit::record,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(catch_panic))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(app)
}

/// Every route but the board's, each registered with `routes!` from its annotated handler,
/// so the OpenAPI description (`GET /api/openapi.json`) lists exactly these. One `routes!`
/// per path: it registers all its handlers on every path they name.
#[allow(deprecated)] // the `/api/vibers` aliases, deprecated in the description
fn api_router(app: App) -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health))
        .routes(routes!(openapi::openapi_json))
        // Authenticated with the node's own token, not an operator token.
        .routes(routes!(node_config::node_config))
        .routes(routes!(node_config::node_config_viber))
        // Authenticated with the token in the body (login) or the cookie itself.
        .routes(routes!(auth::session, auth::login, auth::logout))
        // Nodes authenticate in the handshake.
        .routes(routes!(link::upgrade))
        // Operators, checked by the proxy (previews are not under /api).
        .routes(routes!(super::preview::root))
        // Operators, checked by the handler (a scraper's path is not under /api).
        .routes(routes!(metrics::metrics))
        .nest("/api", operator_routes(app))
}

/// `/api/*` behind operator authentication.
#[allow(deprecated)] // the `/api/vibers` aliases, deprecated in the description
fn operator_routes(app: App) -> OpenApiRouter<App> {
    let mut api = OpenApiRouter::default()
        .routes(routes!(nodes::list))
        .routes(routes!(nodes::list_vibers))
        .routes(routes!(nodes::enroll))
        .routes(routes!(pairing::list))
        .routes(routes!(pairing::approve))
        .routes(routes!(pairing::reject))
        .routes(routes!(nodes::get, nodes::revoke))
        .routes(routes!(nodes::get_viber, nodes::revoke_viber))
        .routes(routes!(nodes::config_push))
        .routes(routes!(nodes::config_push_viber))
        .routes(routes!(tasks::list, tasks::create))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::stop))
        .routes(routes!(tasks::message))
        .routes(routes!(stream::stream))
        .routes(routes!(tasks::approve))
        .routes(routes!(events::events))
        .routes(routes!(usage::usage))
        .routes(routes!(audit::audit))
        .routes(routes!(environments::list, environments::create))
        .routes(routes!(
            environments::get,
            environments::update,
            environments::delete
        ))
        .routes(routes!(environments::validate))
        .routes(routes!(bindings::bindings, bindings::bind))
        .routes(routes!(bindings::prepare))
        .routes(routes!(bindings::logs))
        .routes(routes!(threads::list, threads::create))
        .routes(routes!(shared::get))
        .routes(routes!(shared::set, shared::delete))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::list_of_environment, jobs::create))
        .routes(routes!(jobs::get, jobs::update, jobs::delete))
        .routes(routes!(jobs::run_now))
        .routes(routes!(threads::get, threads::patch))
        .routes(routes!(threads::messages, threads::send))
        .routes(routes!(changes::diff))
        .routes(routes!(changes::commit))
        .routes(routes!(changes::push))
        .routes(routes!(changes::pull_request))
        .routes(routes!(changes::sync))
        .routes(routes!(terminals::list, terminals::open))
        .routes(routes!(terminals::get, terminals::close))
        .routes(routes!(terminals::attach));
    openapi::require_operator(api.get_openapi_mut());
    api.fallback(api_not_found)
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

/// `GET /health`: liveness and counts; no authentication.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "system",
    security(()),
    responses((status = 200, description = "The gateway is up", body = Health), Errors)
)]
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
