//! `GET /api/audit`: the operator requests that changed something, and the sign-ins.

use serde::{Deserialize, Serialize};

/// One recorded request: who made it, from where, what it asked and how it ended. Values
/// are never recorded: `fields` names the body's fields, and for a field that is an object
/// (variables, secrets) the names inside it as `field.NAME`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    /// `operator-token`, `session:<8 hex>` (a board session, by a digest of its id), or
    /// `anonymous` (not signed in: a failed sign-in, a refused request).
    pub actor: String,
    pub method: String,
    /// The route's pattern, `/api/environments/{id}`.
    pub route: String,
    /// The path as requested, with its ids.
    pub path: String,
    /// The response's HTTP status.
    pub status: u16,
    /// The client's address.
    pub peer: String,
    pub fields: Vec<String>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub next_before: Option<i64>,
}

/// `GET /api/audit?limit=&before=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries per page, 1 to 1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only entries older than this id (a page's `nextBefore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
}
