//! `viber nodes`, `viber node add`, `viber node rm`.

use super::{or_dash, print_table, Client};
use crate::protocol::api::{EnrollRequest, Enrollment, NodeList};

pub async fn list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let v: NodeList = client.get("/api/vibers").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let nodes = &v.nodes;
    if nodes.is_empty() {
        println!("no nodes enrolled; add one with `viber node add NAME`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.id.clone(),
                n.name.clone(),
                n.status.to_string(),
                n.version.clone(),
                n.platform.clone(),
                or_dash(n.last_seen.as_deref()),
                n.running_tasks.len().to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "STATUS",
            "VERSION",
            "PLATFORM",
            "LAST SEEN",
            "RUNNING",
        ],
        &rows,
    );
    Ok(())
}

pub async fn add(client: &Client, name: &str, expires_in_secs: Option<u64>) -> anyhow::Result<()> {
    let body = EnrollRequest {
        name: name.to_string(),
        expires_in_secs,
    };
    let v: Enrollment = client.post("/api/nodes/enroll", &body).await?;
    println!(
        "Enrollment token for {:?} (one use, expires {}).",
        name, v.expires_at
    );
    println!("On the new machine, run:\n");
    println!("  {}\n", v.command);
    Ok(())
}

pub async fn remove(client: &Client, id: &str) -> anyhow::Result<()> {
    client.delete(&format!("/api/nodes/{id}")).await?;
    println!("revoked {id}");
    Ok(())
}
