//! `GET /api/openapi.json`: the OpenAPI 3.1 description of this HTTP surface.
//!
//! It is not written by hand: every route is registered through utoipa-axum's
//! `OpenApiRouter` with `routes!`, from handlers annotated with `#[utoipa::path]`, so the
//! description lists exactly the routes the router serves; the schemas are derived from the
//! `protocol` types the handlers return. This file holds what the handlers do not say:
//! the document's header, the security schemes and the error responses every operation has.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr};
use utoipa::ToSchema;

use crate::gateway::auth::{CSRF_HEADER, SESSION_COOKIE};
use crate::protocol::api::ErrorBody;

/// Security scheme names.
pub const OPERATOR_TOKEN: &str = "operatorToken";
pub const SESSION: &str = "session";
pub const CSRF: &str = "csrf";
pub const NODE_TOKEN: &str = "nodeToken";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "viber",
        description = "The REST API of a viber gateway: nodes, tasks, environments, threads, \
            usage and events. Every error answers `{\"error\": {\"code\", \"message\"}}` \
            (`ErrorBody`). Requests with a JSON body refuse unknown fields.",
        license(name = "MIT", identifier = "MIT"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "system", description = "Health, this description and the node link"),
        (name = "session", description = "Board sessions (a cookie in exchange for a token)"),
        (name = "nodes", description = "Enrolled machines that run tasks"),
        (name = "tasks", description = "Goals run on a node, their streams and approvals"),
        (name = "environments", description = "Repositories, setup, variables, secrets and their bindings to nodes"),
        (name = "jobs", description = "Goals an environment runs on a cron schedule"),
        (name = "threads", description = "Conversations in an environment, one task per message"),
        (name = "terminals", description = "Terminals on nodes, relayed through the gateway"),
        (name = "usage", description = "Token usage"),
        (name = "events", description = "Push-only gateway events (SSE)"),
    )
)]
struct ApiDoc;

/// The document every route is added to: header, tags, security schemes, `ErrorBody`.
pub fn base() -> OpenApi {
    let mut doc = <ApiDoc as utoipa::OpenApi>::openapi();
    doc.info.version = crate::VERSION.to_string();
    doc
}

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            OPERATOR_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An operator token (`<data-dir>/admin-token`, `vbr_adm_...`).",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "A board session, opened with `POST /api/session`.",
            ))),
        );
        c.add_security_scheme(
            CSRF,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                CSRF_HEADER,
                "The session's CSRF token; required with the session cookie on every \
                 request that is not GET, HEAD or OPTIONS.",
            ))),
        );
        c.add_security_scheme(
            NODE_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A node's own token (`vbr_node_...`), not an operator's.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Declares operator authentication on every operation of `doc` (the routes behind
/// `auth::require_operator`): a bearer token, or the session cookie (with the CSRF header
/// on writes).
pub fn require_operator(doc: &mut OpenApi) {
    let none = Vec::<String>::new;
    for item in doc.paths.paths.values_mut() {
        let ops: [(&mut Option<Operation>, bool); 5] = [
            (&mut item.get, true),
            (&mut item.put, false),
            (&mut item.post, false),
            (&mut item.delete, false),
            (&mut item.patch, false),
        ];
        for (op, safe) in ops {
            let Some(op) = op.as_mut() else { continue };
            let cookie = if safe {
                SecurityRequirement::new(SESSION, none())
            } else {
                SecurityRequirement::new(SESSION, none()).add(CSRF, none())
            };
            op.security = Some(vec![
                SecurityRequirement::new(OPERATOR_TOKEN, none()),
                cookie,
            ]);
        }
    }
}

/// The error answers of every operation: `ErrorBody` with any 4xx or 5xx status (operations
/// list the specific statuses worth knowing besides these).
pub struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        [
            (
                "4XX",
                "The request was refused (see `error.code` and `error.message`)",
            ),
            ("5XX", "The gateway failed or is unavailable"),
        ]
        .into_iter()
        .map(|(status, description)| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", body)
                .build();
            (status.to_string(), response.into())
        })
        .collect()
    }
}

/// One event of `GET /api/tasks/{id}/stream`, as Server-Sent Events parsers see it (the
/// `schema` of a `text/event-stream` response describes one event).
pub struct TaskStreamEvent;

impl utoipa::PartialSchema for TaskStreamEvent {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "A chunk (`id` its sequence number, `data` its AI SDK UI chunk JSON), or \
                 `data: [DONE]` once the task has ended.",
            ))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["message"])),
            )
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]+$")),
            )
            .property("data", ObjectBuilder::new().schema_type(Type::String))
            .required("data")
            .into()
    }
}

impl ToSchema for TaskStreamEvent {}

/// One event of `GET /api/events` (`event: <type>`, `data: <EventEnvelope JSON>`).
pub struct GatewayEvent;

impl utoipa::PartialSchema for GatewayEvent {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "`event` names the event (`ready` first, then `node.online`, `task.state`, ...); \
                 `data` is the event as JSON with its `type` and `at` (RFC 3339).",
            ))
            .property("event", ObjectBuilder::new().schema_type(Type::String))
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json"),
            )
            .required("event")
            .required("data")
            .into()
    }
}

impl ToSchema for GatewayEvent {}

/// The serialized description, made once when the router is built.
#[derive(Clone)]
pub struct Description(pub Arc<str>);

impl Description {
    pub fn new(doc: &OpenApi) -> Description {
        Description(
            serde_json::to_string(doc)
                .expect("the OpenAPI description serializes")
                .into(),
        )
    }
}

/// `GET /api/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "This OpenAPI 3.1 description", content_type = "application/json", body = Object),
        Errors,
    )
)]
pub async fn openapi_json(Extension(doc): Extension<Description>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.to_string(),
    )
        .into_response()
}
