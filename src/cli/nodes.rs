//! `viber nodes`, `viber node add`, `viber node rm`.

use serde_json::{json, Value};

use super::{field, print_table, Client};

pub async fn list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let v = client.get("/api/vibers").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let empty = Vec::new();
    let nodes = v["nodes"].as_array().unwrap_or(&empty);
    if nodes.is_empty() {
        println!("no nodes enrolled; add one with `viber node add NAME`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                field(n, "id"),
                field(n, "name"),
                field(n, "status"),
                field(n, "version"),
                field(n, "platform"),
                field(n, "lastSeen"),
                n["runningTasks"]
                    .as_array()
                    .map(|a| a.len())
                    .unwrap_or(0)
                    .to_string(),
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
    let mut body = json!({ "name": name });
    if let Some(s) = expires_in_secs {
        body["expiresInSecs"] = Value::from(s);
    }
    let v = client.post("/api/nodes/enroll", &body).await?;
    println!(
        "Enrollment token for {:?} (one use, expires {}).",
        name,
        field(&v, "expiresAt")
    );
    println!("On the new machine, run:\n");
    println!("  {}\n", field(&v, "command"));
    Ok(())
}

pub async fn remove(client: &Client, id: &str) -> anyhow::Result<()> {
    client.delete(&format!("/api/nodes/{id}")).await?;
    println!("revoked {id}");
    Ok(())
}
