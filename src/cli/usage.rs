//! `viber usage`: tokens and cost of agent tasks, by model, environment, node or day.

use std::collections::BTreeMap;

use super::{print_table, seg, Client};
use crate::protocol::api::{UsageReport, UsageRow, UsageTotal};

pub async fn show(
    client: &Client,
    from: Option<String>,
    to: Option<String>,
    by: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(f) = from {
        query.push(format!("from={}", seg(&f)));
    }
    if let Some(t) = to {
        query.push(format!("to={}", seg(&t)));
    }
    let r: UsageReport = client
        .get(&format!("/api/usage?{}", query.join("&")))
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let rows = rows_by(&r, by);
    println!("{} to {}", r.from, r.to);
    let line = |key: String, u: &UsageTotal| {
        vec![
            key,
            u.tasks.to_string(),
            u.input_tokens.to_string(),
            u.output_tokens.to_string(),
            format!("{:.4}", u.cost_usd),
            if u.unpriced_tokens > 0 {
                u.unpriced_tokens.to_string()
            } else {
                String::new()
            },
        ]
    };
    let mut table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| line(row.key.clone().unwrap_or_else(|| "-".into()), &row.usage))
        .collect();
    table.push(line("total".into(), &r.total));
    print_table(
        &[
            &by.to_uppercase(),
            "TASKS",
            "INPUT",
            "OUTPUT",
            "COST USD",
            "UNPRICED TOKENS",
        ],
        &table,
    );
    if r.total.unpriced_tokens > 0 {
        println!(
            "\nsome tokens have no cost: their agent reported none and their model is not in the gateway's price table (--prices, {} models)",
            r.priced_models
        );
    }
    Ok(())
}

/// The report's sums by `by`; by day, the daily rows added up per day.
fn rows_by(r: &UsageReport, by: &str) -> Vec<UsageRow> {
    match by {
        "environment" => r.by_environment.clone(),
        "node" => r.by_node.clone(),
        "day" => {
            let mut days: BTreeMap<String, UsageTotal> = BTreeMap::new();
            for d in &r.daily {
                days.entry(d.day.clone()).or_default().add(&d.usage);
            }
            days.into_iter()
                .map(|(day, usage)| UsageRow {
                    key: Some(day),
                    usage,
                })
                .collect()
        }
        _ => r.by_model.clone(),
    }
}
