//! `viber audit`: the audit log, newest first.

use super::{or_dash, print_table, Client};
use crate::protocol::api::AuditPage;

pub async fn list(
    client: &Client,
    limit: u32,
    before: Option<i64>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut path = format!("/api/audit?limit={limit}");
    if let Some(b) = before {
        path.push_str(&format!("&before={b}"));
    }
    let page: AuditPage = client.get(&path).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    if page.entries.is_empty() {
        println!("nothing recorded yet");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.at.clone(),
                e.actor.clone(),
                e.peer.clone(),
                format!("{} {}", e.method, e.path),
                e.status.to_string(),
                or_dash((!e.fields.is_empty()).then(|| e.fields.join(","))),
            ]
        })
        .collect();
    print_table(
        &["ID", "AT", "WHO", "FROM", "REQUEST", "STATUS", "FIELDS"],
        &rows,
    );
    if let Some(b) = page.next_before {
        println!("older: viber audit --before {b}");
    }
    Ok(())
}
