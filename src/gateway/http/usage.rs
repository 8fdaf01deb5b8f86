//! `GET /api/usage?from=&to=`: tokens and cost of agent tasks created in a time range (default: the
//! last 30 days), summed by node, environment and model.

use axum::extract::State;
use axum::Json;

use super::openapi::Errors;
use crate::clock::{iso8601, now_ms, parse_time};
use crate::gateway::error::{ApiError, ApiResult, Query};
use crate::gateway::App;
use crate::protocol::api::{UsageQuery, UsageReport, UsageRow, UsageTotal};

/// Tokens of agent tasks created in `[from, to)` (default: the last 30 days).
#[utoipa::path(
    get,
    path = "/usage",
    operation_id = "usage",
    tag = "usage",
    params(UsageQuery),
    responses(
        (status = 200, description = "Totals by node, environment and model", body = UsageReport),
        (status = 400, description = "from or to is not a time", body = crate::protocol::api::ErrorBody),
        (status = 422, description = "from is not before to", body = crate::protocol::api::ErrorBody),
        Errors,
    )
)]
pub async fn usage(
    State(app): State<App>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    let parse = |v: &Option<String>, name: &str, default: i64| -> ApiResult<i64> {
        match v {
            None => Ok(default),
            Some(s) => parse_time(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} must be epoch milliseconds or an RFC 3339 time"
                ))
            }),
        }
    };
    let now = now_ms();
    let to = parse(&q.to, "to", now + 1)?;
    let from = parse(&q.from, "from", to - 30 * 86_400_000)?;
    if from >= to {
        return Err(ApiError::validation("from must be before to"));
    }
    let rows = |rows: Vec<(Option<String>, i64, i64, i64, f64)>| -> Vec<UsageRow> {
        rows.into_iter()
            .map(
                |(key, tasks, input_tokens, output_tokens, cost_usd)| UsageRow {
                    key,
                    tasks,
                    input_tokens,
                    output_tokens,
                    cost_usd,
                },
            )
            .collect()
    };
    let by_node = rows(app.store.usage_by("node_id", from, to).await?);
    let total = by_node.iter().fold(
        UsageTotal {
            tasks: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
        },
        |t, r| UsageTotal {
            tasks: t.tasks + r.tasks,
            input_tokens: t.input_tokens + r.input_tokens,
            output_tokens: t.output_tokens + r.output_tokens,
            cost_usd: t.cost_usd + r.cost_usd,
        },
    );
    Ok(Json(UsageReport {
        from: iso8601(from),
        to: iso8601(to),
        by_node,
        by_environment: rows(app.store.usage_by("environment_id", from, to).await?),
        by_model: rows(app.store.usage_by("model", from, to).await?),
        total,
    }))
}
