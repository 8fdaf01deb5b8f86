//! The REST API's request bodies and response views (`/api/*`).
//!
//! The gateway's handlers return these types, the CLI deserializes them, and the board's
//! TypeScript types are generated from them (`assets/src/protocol.gen.ts`, checked by a unit
//! test in this module), so the three cannot drift apart. Times are RFC 3339 strings;
//! optional fields are left out rather than sent as null unless a field says otherwise.
//! Requests refuse unknown fields; views ignore them (a newer gateway may add some).

use serde::{Deserialize, Serialize};

mod audit;
mod changes;
mod environments;
mod jobs;
mod nodes;
mod tasks;
mod terminals;
mod threads;

pub use audit::*;
pub use changes::*;
pub use environments::*;
pub use jobs::*;
pub use nodes::*;
pub use tasks::*;
pub use terminals::*;
pub use threads::*;

/// `{"error": {"code", "message"}}`: the body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}
