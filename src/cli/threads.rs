//! `viber thread ...`: threads inside an environment.

use super::tasks::{exit_code_of, follow_stream};
use super::{or_dash, print_table, seg, Client};
use crate::protocol::api::{
    CreateThread, SendMessage, SendOutcome, TaskView, ThreadList, ThreadListQuery, ThreadMessages,
    ThreadView,
};
use crate::protocol::TaskState;

pub async fn new(
    client: &Client,
    env: &str,
    title: Option<String>,
    executor: Option<String>,
    message: String,
) -> anyhow::Result<u8> {
    let body = CreateThread {
        environment_id: env.to_string(),
        title,
    };
    let t: ThreadView = client.post("/api/threads", &body).await?;
    eprintln!("thread {}", t.id);
    send(client, &t.id, None, executor, message).await
}

/// Sends a message; a new task is streamed to its end, a follow-up is just acknowledged.
pub async fn send(
    client: &Client,
    thread: &str,
    mode: Option<String>,
    executor: Option<String>,
    message: String,
) -> anyhow::Result<u8> {
    let body = SendMessage {
        message,
        injection_mode: mode,
        executor,
    };
    let key = crate::crypto::new_id("cli");
    let v: SendOutcome = client
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
    let started = match v {
        SendOutcome::FollowUp(f) => {
            let note = super::tasks::queued_note(f.delivered);
            println!("sent to running task {}{note}", f.task_id);
            return Ok(0);
        }
        SendOutcome::Started(t) => t,
    };
    let task = started.task_id.unwrap_or(started.id);
    if started.state == TaskState::Pending {
        eprintln!("task {task} waits for the environment to be ready");
    }
    follow_stream(client, &task, true).await?;
    let t: TaskView = client.get(&format!("/api/tasks/{task}")).await?;
    Ok(exit_code_of(&t))
}

pub async fn list(client: &Client, env: Option<String>, as_json: bool) -> anyhow::Result<()> {
    let q = ThreadListQuery {
        environment_id: env,
    };
    let v: ThreadList = client
        .send(
            client
                .request(reqwest::Method::GET, "/api/threads")
                .query(&q),
        )
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v
        .threads
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.title.clone(),
                t.status.to_string(),
                t.environment_id.clone(),
                or_dash(t.last_message_at.as_deref()),
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
    let t: ThreadView = client.get(&format!("/api/threads/{}", seg(thread))).await?;
    println!("{} [{}] in {}", t.title, t.status, t.environment_id);
    let v: ThreadMessages = client
        .get(&format!("/api/threads/{}/messages", seg(thread)))
        .await?;
    for m in v.messages {
        println!("\n> {}", m.message);
        if let Some(out) = &m.output {
            print!("{out}");
            if !out.is_empty() && !out.ends_with('\n') {
                println!();
            }
        }
        println!("  [{} {}]", m.task_id, or_dash(m.task.map(|t| t.state)));
    }
    Ok(())
}
