//! The gateway's event bus: typed [`Event`]s published by handlers and the task hub, fanned
//! out to `/api/events` subscribers (see `http/events.rs`). Push-only, never replayed: a
//! subscriber that falls behind gets a `gap` and refreshes from the REST API.
//!
//! Owns only the broadcast channel; knows nothing of HTTP or SQL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Node presence events of the current window, not yet published.
    presence: Arc<Mutex<Presence>>,
}

/// Presence events are held this long and published together: one by one when they are
/// few, as one `nodes.changed` when a fleet comes or goes at once.
const PRESENCE_WINDOW: Duration = Duration::from_millis(200);
/// At most this many presence events of one window go out one by one.
const PRESENCE_ONE_BY_ONE: usize = 32;

#[derive(Default)]
struct Presence {
    held: Vec<Event>,
    /// A flush of the window is scheduled.
    flushing: bool,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(1024).0,
            presence: Arc::default(),
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

    /// Publishes a node's `node.online` or `node.offline` with the others of its window (see
    /// [`PRESENCE_WINDOW`]): a reconnect storm of 10,000 nodes is a few `nodes.changed`, not
    /// 10,000 events for every watcher (and a `gap` for every board).
    pub fn publish_presence(&self, event: Event) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let mut p = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        p.held.push(event);
        if p.flushing {
            return;
        }
        p.flushing = true;
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PRESENCE_WINDOW).await;
            this.flush_presence();
        });
    }

    fn flush_presence(&self) {
        let held = {
            let mut p = self.presence.lock().unwrap_or_else(|e| e.into_inner());
            p.flushing = false;
            std::mem::take(&mut p.held)
        };
        if held.len() <= PRESENCE_ONE_BY_ONE {
            for e in held {
                self.publish(e);
            }
            return;
        }
        let online = held
            .iter()
            .filter(|e| matches!(e, Event::NodeOnline { .. }))
            .count() as u64;
        self.publish(Event::NodesChanged {
            online,
            offline: held.len() as u64 - online,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(i: usize) -> Event {
        Event::NodeOnline {
            node_id: format!("node_{i}"),
            name: format!("n{i}"),
        }
    }

    #[tokio::test]
    async fn presence_comes_one_by_one_when_few_and_as_one_count_when_many() {
        let events = Events::default();
        let mut rx = events.subscribe();
        for i in 0..3 {
            events.publish_presence(online(i));
        }
        for _ in 0..3 {
            assert_eq!(rx.recv().await.unwrap().kind, "node.online");
        }
        for i in 0..1000 {
            events.publish_presence(online(i));
        }
        events.publish_presence(Event::NodeOffline {
            node_id: "node_x".into(),
            name: "x".into(),
            reason: "gone".into(),
        });
        let summary = rx.recv().await.unwrap();
        assert_eq!(summary.kind, "nodes.changed");
        assert!(
            summary.json.contains(r#""online":1000,"offline":1"#),
            "{}",
            summary.json
        );
        assert!(rx.try_recv().is_err());
    }
}
