//! `viber task run|list|show|logs|stop|send`.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use super::{field, print_table, Client};
pub use crate::protocol::sse::{SseEvent, SseParser};

/// Writes a task's chunks to the terminal: text to stdout, errors to stderr.
fn render(chunk: &Value) {
    match chunk["type"].as_str() {
        Some("text-delta") | Some("reasoning-delta") => {
            let mut out = std::io::stdout();
            let _ = out.write_all(chunk["delta"].as_str().unwrap_or("").as_bytes());
            let _ = out.flush();
        }
        Some("error") => eprintln!("error: {}", chunk["errorText"].as_str().unwrap_or("")),
        Some("tool-input-available") => {
            eprintln!("[tool {}] {}", field(chunk, "toolName"), chunk["input"])
        }
        Some("tool-approval-request") => eprintln!(
            "[approval needed] answer with `viber task approve` ({})",
            field(chunk, "approvalId")
        ),
        Some("abort") => eprintln!("[stopped] {}", chunk["reason"].as_str().unwrap_or("")),
        _ => {}
    }
}

/// Prints a task's stream. With `follow`, waits for the end, resuming after disconnects
/// (a gateway restart) with `Last-Event-ID`; without, prints what is stored and returns.
pub async fn follow_stream(client: &Client, id: &str, follow: bool) -> anyhow::Result<()> {
    let mut last_id: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let path = if follow {
            format!("/api/tasks/{id}/stream")
        } else {
            format!("/api/tasks/{id}/stream?follow=false")
        };
        let mut req = client.request(Method::GET, &path);
        if let Some(l) = &last_id {
            req = req.header("last-event-id", l);
        }
        let res = match req.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let status = r.status();
                let body = r.bytes().await.unwrap_or_default();
                bail!("{}", super::api_error_message(status, &body));
            }
            Err(e) if follow && failures < 60 => {
                failures += 1;
                tracing::debug!(error = %e, "stream connect failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot reach the gateway at {}", client.base()))
            }
        };
        failures = 0;
        let mut parser = SseParser::default();
        let mut body = res.bytes_stream();
        while let Some(part) = body.next().await {
            let Ok(bytes) = part else { break };
            for ev in parser.push(&String::from_utf8_lossy(&bytes)) {
                if ev.data == "[DONE]" {
                    return Ok(());
                }
                if ev.id.is_some() {
                    last_id = ev.id.clone();
                }
                if let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) {
                    render(&chunk);
                }
            }
        }
        if !follow {
            return Ok(());
        }
        // Dropped without [DONE]: the gateway went away. Resume where we were.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Exit code mirroring the task's end: 0 completed, its exit code (or 1) on error, 130 stopped.
pub fn exit_code_of(task: &Value) -> u8 {
    match task["state"].as_str() {
        Some("completed") => 0,
        Some("stopped") => 130,
        _ => task["exitCode"]
            .as_i64()
            .filter(|c| (1..=255).contains(c))
            .map(|c| c as u8)
            .unwrap_or(1),
    }
}

pub struct RunArgs {
    pub node: Option<String>,
    pub executor: Option<String>,
    pub cwd: Option<String>,
    pub detach: bool,
    pub goal: String,
}

pub async fn run(client: &Client, args: RunArgs) -> anyhow::Result<u8> {
    let mut body = json!({ "goal": args.goal });
    if let Some(n) = args.node {
        body["nodeId"] = json!(n);
    }
    if let Some(e) = args.executor {
        body["executor"] = json!(e);
    }
    if let Some(c) = args.cwd {
        body["options"] = json!({ "cwd": c });
    }
    let key = crate::crypto::new_id("cli");
    let task = client
        .send(
            client
                .request(Method::POST, "/api/tasks")
                .header("idempotency-key", key)
                .json(&body),
        )
        .await?;
    let id = field(&task, "id");
    if args.detach {
        println!("{id}");
        return Ok(0);
    }
    eprintln!("task {id} on {}", field(&task, "nodeId"));
    // Ctrl-C stops the task (and we keep streaming until it has ended).
    let stopper = {
        let client_base = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping task {id} (Ctrl-C again to leave it running)");
                let _ = client_base
                    .post(&format!("/api/tasks/{id}/stop"), &json!({}))
                    .await;
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        })
    };
    follow_stream(client, &id, true).await?;
    stopper.abort();
    let task = client.get(&format!("/api/tasks/{id}")).await?;
    if let Some(e) = task["error"].as_str() {
        if task["state"] != "completed" {
            eprintln!("task {id} {}: {e}", field(&task, "state"));
        }
    }
    Ok(exit_code_of(&task))
}

pub async fn list(
    client: &Client,
    node: Option<String>,
    state: Option<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut q = vec![];
    if let Some(n) = node {
        q.push(("nodeId", n));
    }
    if let Some(s) = state {
        q.push(("state", s));
    }
    let v = client
        .send(client.request(Method::GET, "/api/tasks").query(&q))
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let empty = vec![];
    let rows: Vec<Vec<String>> = v["tasks"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|t| {
            let goal = field(t, "goal").replace('\n', " ");
            let goal: String = if goal.chars().count() > 48 {
                goal.chars().take(47).chain(['…']).collect()
            } else {
                goal
            };
            vec![
                field(t, "id"),
                field(t, "state"),
                field(t, "nodeId"),
                field(t, "createdAt"),
                goal,
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no tasks");
    } else {
        print_table(&["ID", "STATE", "NODE", "CREATED", "GOAL"], &rows);
    }
    Ok(())
}

pub async fn show(client: &Client, id: &str) -> anyhow::Result<()> {
    let v = client.get(&format!("/api/tasks/{id}")).await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub async fn stop(client: &Client, id: &str) -> anyhow::Result<()> {
    let v = client
        .post(&format!("/api/tasks/{id}/stop"), &json!({}))
        .await?;
    println!("stop requested for {id} (state: {})", field(&v, "state"));
    Ok(())
}

pub async fn send(client: &Client, id: &str, mode: &str, message: String) -> anyhow::Result<()> {
    client
        .post(
            &format!("/api/tasks/{id}/message"),
            &json!({ "message": message, "injectionMode": mode }),
        )
        .await?;
    println!("sent ({mode})");
    Ok(())
}

/// Answers a task's pending approval (the only one, or `approval`).
pub async fn approve(
    client: &Client,
    id: &str,
    approval: Option<String>,
    deny: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let approval = match approval {
        Some(a) => a,
        None => {
            let t = client.get(&format!("/api/tasks/{id}")).await?;
            let pending = &t["awaitingApproval"];
            if pending.is_null() {
                anyhow::bail!("task {id} is not waiting for an approval");
            }
            eprintln!("{} {}", field(pending, "toolName"), pending["input"]);
            field(pending, "approvalId")
        }
    };
    let mut body = json!({ "approve": !deny });
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    client
        .post(&format!("/api/tasks/{id}/approvals/{approval}"), &body)
        .await?;
    println!("{} {approval}", if deny { "denied" } else { "approved" });
    Ok(())
}
