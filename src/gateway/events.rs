//! The gateway's event bus: typed [`Event`]s published by handlers and the task hub, fanned
//! out to `/api/events` subscribers (see `http/events.rs`). Push-only, never replayed: a
//! subscriber that falls behind gets a `gap` and refreshes from the REST API.
//!
//! Owns only the broadcast channel; knows nothing of HTTP or SQL.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::clock::{iso8601, now_ms};
use crate::protocol::events::{Event, EventEnvelope};

/// One published event, serialized once for every subscriber.
pub struct Published {
    pub kind: &'static str,
    pub json: String,
}

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<Published>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Published {
    /// `event`, stamped with the current time and serialized.
    pub fn new(event: Event) -> Published {
        let kind = event.kind();
        let envelope = EventEnvelope {
            event,
            at: iso8601(now_ms()),
        };
        let json = serde_json::to_string(&envelope).expect("events serialize");
        Published { kind, json }
    }
}

impl Events {
    /// Publishes `event`, stamped with the current time.
    pub fn publish(&self, event: Event) {
        // Nobody listening is the common case; skip the serialization then.
        if self.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.tx.send(Arc::new(Published::new(event)));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }
}
