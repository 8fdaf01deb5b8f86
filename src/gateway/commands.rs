//! Gateway -> node commands that must arrive: follow-up messages, approval answers and
//! config pushes.
//!
//! A command gets an id and is stored in SQLite before it is sent. It stays there until the
//! node answers `command:ack` for that id, and is sent again each time the node reconnects
//! (also after a gateway restart). The node applies an id once, however often it arrives.
//! Submits, stops and environment prepares need no such record: they are sent again from
//! the task's or the binding's stored state.
//!
//! The request that sent a command waits a short while for the ack, so its answer can say
//! whether the node applied it (or why the node refused it) rather than only that it was
//! queued.

use std::time::Duration;

use crate::clock::now_ms;
use crate::crypto;
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::link::Outgoing;
use crate::gateway::waiters::Waiters;
use crate::gateway::App;
use crate::protocol::Frame;

/// How long a request waits for the node to apply its command before answering "queued".
const ACK_WAIT: Duration = Duration::from_secs(5);

/// What became of a command by the time its request answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The node applied it.
    Applied,
    /// The node refused it (the task is not running there, say).
    Refused(String),
    /// Stored, not yet acknowledged: the node is away or slow. It is sent again when the
    /// node reconnects.
    Queued,
}

impl Delivery {
    /// The API's answer: whether the node applied it already (false: queued), or the node's
    /// refusal as a 409.
    pub fn answer(self) -> ApiResult<bool> {
        match self {
            Delivery::Applied => Ok(true),
            Delivery::Queued => Ok(false),
            Delivery::Refused(why) => Err(ApiError::conflict(format!("the node refused: {why}"))),
        }
    }
}

/// Requests waiting for their command's ack (the node's error, if it refused), by id.
pub type Commands = Waiters<Option<String>>;

/// Stores `frame` as a command for `node_id` (about `task_id`, if any), sends it when the
/// node is online and waits up to [`ACK_WAIT`] for the node to apply it.
pub async fn send(
    app: &App,
    node_id: &str,
    task_id: Option<&str>,
    mut frame: Frame,
) -> anyhow::Result<Delivery> {
    let id = crypto::new_id("cmd");
    frame.set_command_id(id.clone());
    app.store
        .insert_command(
            id.clone(),
            node_id.to_string(),
            task_id.map(str::to_string),
            frame.encode(),
            now_ms(),
        )
        .await?;
    let mut waiting = app.commands.wait(id, node_id);
    let Some(link) = app.registry.sender(node_id) else {
        return Ok(Delivery::Queued);
    };
    let _ = link.send(Outgoing::frame(frame)).await;
    Ok(
        match tokio::time::timeout(ACK_WAIT, &mut waiting.answer).await {
            Ok(Ok(None)) => Delivery::Applied,
            Ok(Ok(Some(why))) => Delivery::Refused(why),
            _ => Delivery::Queued,
        },
    )
}

/// A node's `command:ack`: forgets the command and wakes the request waiting for it. An ack
/// from a node the command was not sent to changes nothing.
pub async fn acked(
    app: &App,
    node_id: &str,
    command_id: String,
    error: Option<String>,
) -> anyhow::Result<()> {
    if !app
        .store
        .delete_command(command_id.clone(), node_id.to_string())
        .await?
    {
        return Ok(());
    }
    if let Some(why) = &error {
        tracing::warn!(command = %command_id, reason = %why, "node refused a command");
    }
    let _ = app.commands.answer(node_id, &command_id, error);
    Ok(())
}

/// When a node connects: sends its unacknowledged commands again, oldest first. Commands of
/// tasks that ended meanwhile are moot and forgotten.
pub async fn on_node_connected(app: &App, node_id: &str) -> anyhow::Result<()> {
    let Some(link) = app.registry.sender(node_id) else {
        return Ok(());
    };
    for cmd in app.store.commands_of(node_id.to_string()).await? {
        let live = match &cmd.task_id {
            Some(task) => app
                .store
                .task(task.clone())
                .await?
                .is_some_and(|t| !t.state.is_terminal()),
            None => true,
        };
        let frame = match Frame::decode(&cmd.frame) {
            Ok(frame) if live => frame,
            _ => {
                app.store
                    .delete_command(cmd.id, node_id.to_string())
                    .await?;
                continue;
            }
        };
        if link.send(Outgoing::frame(frame)).await.is_err() {
            break;
        }
    }
    Ok(())
}
