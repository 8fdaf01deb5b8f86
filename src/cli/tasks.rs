//! `viber task run|list|show|logs|stop|send`.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::Value;

use super::{or_dash, print_table, Client};
use crate::protocol::api::{
    ApprovalAnswer, ApprovalAnswered, CreateTask, MessageAccepted, MessageRequest, StreamQuery,
    TaskList, TaskListQuery, TaskView,
};
pub use crate::protocol::sse::{SseEvent, SseParser};
use crate::protocol::{TaskOptions, TaskState};

/// A field of a stream chunk as text, or `-`.
fn chunk_field(chunk: &Value, key: &str) -> String {
    match &chunk[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// What a stream chunk shows a person: output text, or a line of its own about the run.
pub enum Shown {
    Text(String),
    Note(String),
}

/// A chunk as a person reads it (text, reasoning, tool calls, approvals, errors, a stop);
/// None for the chunks that only structure the stream.
pub fn shown(chunk: &Value) -> Option<Shown> {
    Some(match chunk["type"].as_str()? {
        "text-delta" | "reasoning-delta" => Shown::Text(chunk["delta"].as_str()?.to_string()),
        "error" => Shown::Note(format!(
            "error: {}",
            chunk["errorText"].as_str().unwrap_or("")
        )),
        "tool-input-available" => Shown::Note(format!(
            "[tool {}] {}",
            chunk_field(chunk, "toolName"),
            chunk["input"]
        )),
        "tool-approval-request" => Shown::Note(format!(
            "[approval needed] answer with `viber task approve` ({})",
            chunk_field(chunk, "approvalId")
        )),
        "abort" => Shown::Note(format!(
            "[stopped] {}",
            chunk["reason"].as_str().unwrap_or("")
        )),
        _ => return None,
    })
}

/// Writes a task's chunks to the terminal: text to stdout, the rest to stderr.
fn render(chunk: &Value) {
    match shown(chunk) {
        Some(Shown::Text(t)) => {
            let mut out = std::io::stdout();
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
        }
        Some(Shown::Note(n)) => eprintln!("{n}"),
        None => {}
    }
}

/// Prints a task's stream. With `follow`, waits for the end, resuming after disconnects
/// (a gateway restart) with `Last-Event-ID`; without, prints what is stored and returns.
pub async fn follow_stream(client: &Client, id: &str, follow: bool) -> anyhow::Result<()> {
    follow_stream_with(client, id, follow, render).await
}

/// [`follow_stream`], handing each chunk to `on_chunk`.
pub async fn follow_stream_with(
    client: &Client,
    id: &str,
    follow: bool,
    mut on_chunk: impl FnMut(&Value),
) -> anyhow::Result<()> {
    let mut last_id: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let query = StreamQuery {
            follow: (!follow).then_some(false),
        };
        let mut req = client
            .request(Method::GET, &format!("/api/tasks/{id}/stream"))
            .query(&query);
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
            for ev in parser.push_bytes(&bytes)? {
                if ev.data == "[DONE]" {
                    return Ok(());
                }
                if ev.id.is_some() {
                    last_id = ev.id.clone();
                }
                if let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) {
                    on_chunk(&chunk);
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
pub fn exit_code_of(task: &TaskView) -> u8 {
    match task.state {
        TaskState::Completed => 0,
        TaskState::Stopped => 130,
        _ => task
            .exit_code
            .and_then(|c| u8::try_from(c).ok())
            .filter(|c| *c != 0)
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
    let body = CreateTask {
        node_id: args.node,
        goal: args.goal,
        executor: args.executor,
        options: TaskOptions {
            cwd: args.cwd,
            ..TaskOptions::default()
        },
    };
    let key = crate::crypto::new_id("cli");
    let task: TaskView = client
        .send(
            client
                .request(Method::POST, "/api/tasks")
                .header("idempotency-key", key)
                .json(&body),
        )
        .await?;
    let id = task.id;
    if args.detach {
        println!("{id}");
        return Ok(0);
    }
    eprintln!("task {id} on {}", or_dash(task.node_id));
    // Ctrl-C stops the task (and we keep streaming until it has ended).
    let stopper = {
        let client_base = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping task {id} (Ctrl-C again to leave it running)");
                let _ = client_base
                    .post_empty::<TaskView>(&format!("/api/tasks/{id}/stop"))
                    .await;
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        })
    };
    follow_stream(client, &id, true).await?;
    stopper.abort();
    let task: TaskView = client.get(&format!("/api/tasks/{id}")).await?;
    if let Some(e) = &task.error {
        if task.state != TaskState::Completed {
            eprintln!("task {id} {}: {e}", task.state);
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
    let q = TaskListQuery {
        node_id: node,
        state,
        limit: None,
    };
    let v: TaskList = client
        .send(client.request(Method::GET, "/api/tasks").query(&q))
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v
        .tasks
        .iter()
        .map(|t| {
            let goal = t.goal.replace('\n', " ");
            let goal: String = if goal.chars().count() > 48 {
                goal.chars().take(47).chain(['…']).collect()
            } else {
                goal
            };
            vec![
                t.id.clone(),
                t.state.to_string(),
                or_dash(t.node_id.as_deref()),
                t.created_at.clone(),
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
    let v: TaskView = client.get(&format!("/api/tasks/{id}")).await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub async fn stop(client: &Client, id: &str) -> anyhow::Result<()> {
    let v: TaskView = client.post_empty(&format!("/api/tasks/{id}/stop")).await?;
    println!("stop requested for {id} (state: {})", v.state);
    Ok(())
}

pub async fn send(client: &Client, id: &str, mode: &str, message: String) -> anyhow::Result<()> {
    let body = MessageRequest {
        message,
        injection_mode: Some(mode.to_string()),
    };
    let sent: MessageAccepted = client
        .post(&format!("/api/tasks/{id}/message"), &body)
        .await?;
    println!("sent ({mode}){}", queued_note(sent.delivered));
    Ok(())
}

/// What to add when the node has not applied a command yet.
pub fn queued_note(delivered: bool) -> &'static str {
    if delivered {
        ""
    } else {
        "; the node is away, it applies when the node is back"
    }
}

/// Answers a task's pending approval (the only one, or `approval`).
pub async fn approve(
    client: &Client,
    id: &str,
    approval: Option<String>,
    answer: ApprovalAnswer,
) -> anyhow::Result<()> {
    let approval = match approval {
        Some(a) => a,
        None => {
            let t: TaskView = client.get(&format!("/api/tasks/{id}")).await?;
            let Some(pending) = t.awaiting_approval else {
                anyhow::bail!("task {id} is not waiting for an approval");
            };
            eprintln!("{} {}", or_dash(pending.tool_name), pending.input);
            pending.approval_id
        }
    };
    let answered: ApprovalAnswered = client
        .post(&format!("/api/tasks/{id}/approvals/{approval}"), &answer)
        .await?;
    let verdict = if answer.approve { "approved" } else { "denied" };
    println!("{verdict} {approval}{}", queued_note(answered.delivered));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: &str, exit_code: Option<i64>) -> TaskView {
        let exit_code = exit_code.map_or(String::new(), |c| format!(r#","exitCode":{c}"#));
        serde_json::from_str(&format!(
            r#"{{"id":"task_1","nodeId":null,"goal":"true","executor":"shell","options":{{}},"state":"{state}","createdAt":"t","lastSeq":-1{exit_code}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn exit_codes_mirror_the_task_end() {
        assert_eq!(exit_code_of(&task("completed", Some(3))), 0);
        assert_eq!(exit_code_of(&task("stopped", None)), 130);
        assert_eq!(exit_code_of(&task("error", Some(4))), 4);
        assert_eq!(exit_code_of(&task("error", Some(255))), 255);
        for odd in [None, Some(0), Some(-1), Some(256)] {
            assert_eq!(exit_code_of(&task("error", odd)), 1, "{odd:?}");
        }
    }
}
