//! `viber thread ...`: threads inside an environment.

use serde_json::{json, Value};

use super::tasks::{exit_code_of, follow_stream};
use super::{field, print_table, seg, Client};

pub async fn new(
    client: &Client,
    env: &str,
    title: Option<String>,
    message: String,
) -> anyhow::Result<u8> {
    let mut body = json!({ "environmentId": env });
    if let Some(t) = title {
        body["title"] = json!(t);
    }
    let t = client.post("/api/threads", &body).await?;
    let id = field(&t, "id");
    eprintln!("thread {id}");
    send(client, &id, None, message).await
}

/// Sends a message; a new task is streamed to its end, a follow-up is just acknowledged.
pub async fn send(
    client: &Client,
    thread: &str,
    mode: Option<String>,
    message: String,
) -> anyhow::Result<u8> {
    let mut body = json!({ "message": message });
    if let Some(m) = mode {
        body["injectionMode"] = json!(m);
    }
    let key = crate::crypto::new_id("cli");
    let v = client
        .send(
            client
                .request(
                    reqwest::Method::POST,
                    &format!("/api/threads/{}/messages", seg(thread)),
                )
                .header("idempotency-key", key)
                .json(&body),
        )
        .await?;
    let task = field(&v, "taskId");
    if v["followUp"] == true {
        println!("sent to running task {task}");
        return Ok(0);
    }
    if v["state"] == "pending" {
        eprintln!("task {task} waits for the environment to be ready");
    }
    follow_stream(client, &task, true).await?;
    let t = client.get(&format!("/api/tasks/{task}")).await?;
    Ok(exit_code_of(&t))
}

pub async fn list(client: &Client, env: Option<String>, as_json: bool) -> anyhow::Result<()> {
    let path = match env {
        Some(e) => format!("/api/threads?environmentId={}", seg(&e)),
        None => "/api/threads".into(),
    };
    let v = client.get(&path).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["threads"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                field(t, "id"),
                field(t, "title"),
                field(t, "status"),
                field(t, "environmentId"),
                field(t, "lastMessageAt"),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no threads; start one with `viber thread new ENV -- MESSAGE`");
    } else {
        print_table(
            &["ID", "TITLE", "STATUS", "ENVIRONMENT", "LAST MESSAGE"],
            &rows,
        );
    }
    Ok(())
}

pub async fn show(client: &Client, thread: &str) -> anyhow::Result<()> {
    let t = client.get(&format!("/api/threads/{}", seg(thread))).await?;
    println!(
        "{} [{}] in {}",
        field(&t, "title"),
        field(&t, "status"),
        field(&t, "environmentId")
    );
    let v: Value = client
        .get(&format!("/api/threads/{}/messages", seg(thread)))
        .await?;
    for m in v["messages"].as_array().into_iter().flatten() {
        println!("\n> {}", field(m, "message"));
        let task = &m["task"];
        if let Some(out) = m["output"].as_str() {
            print!("{out}");
            if !out.is_empty() && !out.ends_with('\n') {
                println!();
            }
        }
        println!("  [{} {}]", field(m, "taskId"), field(task, "state"));
    }
    Ok(())
}
