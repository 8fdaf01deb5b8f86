//! Viewers of a terminal: each an attachment with its own cursor into the ring, sending
//! what it has not seen through the connection's queue, then the exit.
//!
//! Must not touch: the terminal's process (`run.rs`).

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{lock, Term};
use crate::protocol::terminal::{Bytes64, MAX_OUTPUT_CHUNK};
use crate::protocol::Frame;

/// Sends one viewer the output from its cursor on, then the exit; lasts until the viewer
/// detaches (the gateway may move the cursor back after the exit, when it dropped frames).
pub(super) async fn attachment(
    t: Arc<Term>,
    attachment_id: String,
    mut cursor_rx: watch::Receiver<u64>,
    cancel: CancellationToken,
    queue: mpsc::Sender<Frame>,
) {
    let mut end = t.end.subscribe();
    let mut exit = t.exit.subscribe();
    let mut cursor = *cursor_rx.borrow_and_update();
    // Where the exit was last sent from.
    let mut exit_sent: Option<u64> = None;
    loop {
        if cursor_rx.has_changed().unwrap_or(false) {
            cursor = *cursor_rx.borrow_and_update();
        }
        let read = lock(&t.ring).read(cursor, MAX_OUTPUT_CHUNK);
        let exited = exit.borrow_and_update().clone();
        let frame = match (read, exited) {
            (Some(r), _) => {
                cursor = r.offset + r.data.len() as u64;
                Frame::TerminalOutput {
                    terminal_id: t.id.clone(),
                    attachment_id: attachment_id.clone(),
                    offset: r.offset,
                    data: Bytes64(r.data),
                    skipped_from: r.skipped_from,
                }
            }
            // Everything was read after the exit was set: the end, once per cursor.
            (None, Some(e)) if exit_sent != Some(cursor) => {
                exit_sent = Some(cursor);
                Frame::TerminalExit {
                    terminal_id: t.id.clone(),
                    attachment_id: attachment_id.clone(),
                    offset: Some(cursor),
                    code: e.code,
                    error: e.error,
                }
            }
            (None, _) => {
                tokio::select! {
                    _ = end.changed() => {}
                    _ = exit.changed() => {}
                    moved = moved(&mut cursor_rx) => match moved {
                        Some(to) => cursor = to,
                        None => return,
                    },
                    _ = cancel.cancelled() => return,
                }
                continue;
            }
        };
        tokio::select! {
            r = queue.send(frame) => if r.is_err() { return },
            _ = cancel.cancelled() => return,
        }
    }
}

/// The cursor the gateway moved an attachment to (None: the attachment is gone). Waiting
/// marks the move seen, so this is the one place that takes it.
async fn moved(cursor: &mut watch::Receiver<u64>) -> Option<u64> {
    cursor.changed().await.ok()?;
    Some(*cursor.borrow_and_update())
}
