//! `GET /api/usage?from=&to=`: tokens and cost of agent tasks created in a time range (default: the
//! last 30 days), summed by node, environment and model, and day by day. Costs are what the
//! agents reported, plus the gateway's price table (`gateway::prices`) for tokens whose
//! agent reported none.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;

use super::openapi::Errors;
use crate::clock::{iso8601, now_ms, parse_time};
use crate::gateway::error::{ApiError, ApiResult, Query};
use crate::gateway::prices::Prices;
use crate::gateway::App;
use crate::protocol::api::{UsageDaily, UsageQuery, UsageReport, UsageRow, UsageTotal};
use crate::store::UsageFact;

/// Tokens of agent tasks created in `[from, to)` (default: the last 30 days).
#[utoipa::path(
    get,
    path = "/usage",
    operation_id = "usage",
    tag = "usage",
    params(UsageQuery),
    responses(
        (status = 200, description = "Totals by node, environment and model, and by day", body = UsageReport),
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
    let facts = app.store.usage_daily(from, to).await?;
    Ok(Json(report(&app.prices, &facts, from, to)))
}

/// The report from the day-by-day facts: each fact priced once, then summed by node,
/// environment and model (most tokens first) and in all.
pub fn report(prices: &Prices, facts: &[UsageFact], from: i64, to: i64) -> UsageReport {
    let priced: Vec<UsageTotal> = facts.iter().map(|f| priced(prices, f)).collect();
    let by = |key: fn(&UsageFact) -> &Option<String>| -> Vec<UsageRow> {
        let mut sums: BTreeMap<Option<String>, UsageTotal> = BTreeMap::new();
        for (f, u) in facts.iter().zip(&priced) {
            sums.entry(key(f).clone()).or_default().add(u);
        }
        let mut rows: Vec<UsageRow> = sums
            .into_iter()
            .map(|(key, usage)| UsageRow { key, usage })
            .collect();
        rows.sort_by_key(|r| {
            std::cmp::Reverse(r.usage.input_tokens.saturating_add(r.usage.output_tokens))
        });
        rows
    };
    let mut total = UsageTotal::default();
    for u in &priced {
        total.add(u);
    }
    UsageReport {
        from: iso8601(from),
        to: iso8601(to),
        by_node: by(|f| &f.node_id),
        by_environment: by(|f| &f.environment_id),
        by_model: by(|f| &f.model),
        daily: facts
            .iter()
            .zip(&priced)
            .map(|(f, u)| UsageDaily {
                day: iso8601(f.day * 86_400_000)[..10].to_string(),
                node_id: f.node_id.clone(),
                environment_id: f.environment_id.clone(),
                model: f.model.clone(),
                usage: u.clone(),
            })
            .collect(),
        total,
        priced_models: prices.len(),
    }
}

/// One fact with its cost: what was reported, plus the table's price for the tokens of tasks
/// that reported none.
fn priced(prices: &Prices, f: &UsageFact) -> UsageTotal {
    let unreported = f
        .unreported_input_tokens
        .saturating_add(f.unreported_output_tokens);
    let estimated = prices.cost(
        f.model.as_deref(),
        f.unreported_input_tokens,
        f.unreported_output_tokens,
    );
    UsageTotal {
        tasks: f.tasks,
        input_tokens: f.input_tokens,
        output_tokens: f.output_tokens,
        cost_usd: f.reported_cost_usd + estimated.unwrap_or(0.0),
        estimated_cost_usd: estimated.unwrap_or(0.0),
        unpriced_tokens: if estimated.is_some() { 0 } else { unreported },
    }
}
