//! Push-only gateway events (node presence, task state changes) for the board and scripts,
//! served as Server-Sent Events on `/api/events`. Not replayed: a client that sees a `gap`
//! event (it fell behind) or reconnects refreshes its state from the REST API.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::clock::{iso8601, now_ms};

/// One event: its type and its JSON (which repeats the type).
pub struct Event {
    pub kind: String,
    pub json: String,
}

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Events {
    /// Publishes `{"type": kind, "at": ..., ...data}`.
    pub fn publish(&self, kind: &str, mut data: Value) {
        if let Value::Object(m) = &mut data {
            m.insert("type".into(), json!(kind));
            m.insert("at".into(), json!(iso8601(now_ms())));
        }
        let _ = self.tx.send(Arc::new(Event {
            kind: kind.to_string(),
            json: data.to_string(),
        }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
