//! Live node connections: who is online, what they last reported, and a channel to each.
//!
//! Owns: the in-memory map of connected nodes and the [`Outgoing`] queue into each
//! connection. Must not touch: the store (presence is memory only; the session records
//! connects and disconnects), the socket (only the session writes to it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::gateway::App;
use crate::protocol::{Frame, NodeStatus, ViberInfo};

/// Something for a node's connection task to do.
#[derive(Debug)]
pub enum Outgoing {
    /// Boxed: a connection's queue allocates its slots in blocks up front, and a `Frame` is
    /// hundreds of bytes, which every idle node would pay for.
    Frame(Box<Frame>),
    /// Send an error frame and close with this code.
    Close { code: u16, error: Box<Frame> },
}

impl Outgoing {
    pub fn frame(frame: Frame) -> Outgoing {
        Outgoing::Frame(Box::new(frame))
    }
}

/// One authenticated connection.
#[derive(Debug, Clone)]
pub struct NodeConn {
    pub conn_id: u64,
    pub tx: mpsc::Sender<Outgoing>,
    pub info: ViberInfo,
    pub status: NodeStatus,
    pub connected_at: i64,
    pub last_seen: i64,
    /// Heartbeats since the last check of its tasks against the store.
    pub beats_unchecked: u32,
}

/// A node's tasks are checked against the store at least every this many heartbeats (and
/// whenever the tasks it reports change).
const CHECK_EVERY: u32 = 8;

/// A snapshot for listings.
#[derive(Debug, Clone)]
pub struct Presence {
    pub info: ViberInfo,
    pub status: NodeStatus,
    pub connected_at: i64,
    pub last_seen: i64,
}

#[derive(Default)]
pub struct Registry {
    nodes: Mutex<HashMap<String, NodeConn>>,
    next_conn: AtomicU64,
}

impl Registry {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a connection; returns the one it replaces, if any.
    pub fn insert(&self, conn: NodeConn) -> Option<NodeConn> {
        self.lock().insert(conn.info.id.clone(), conn)
    }

    /// Removes the node's entry if it still belongs to `conn_id`.
    pub fn remove(&self, node_id: &str, conn_id: u64) -> bool {
        let mut map = self.lock();
        if map.get(node_id).is_some_and(|c| c.conn_id == conn_id) {
            map.remove(node_id);
            true
        } else {
            false
        }
    }

    /// Records a heartbeat in memory. Returns whether the node's tasks should be checked
    /// against the store now: on its first heartbeat, when the tasks it runs changed, and
    /// every [`CHECK_EVERY`] beats; an idle fleet's heartbeats touch no database.
    pub fn record_heartbeat(
        &self,
        node_id: &str,
        conn_id: u64,
        status: NodeStatus,
        now: i64,
    ) -> bool {
        let mut nodes = self.lock();
        let Some(c) = nodes.get_mut(node_id).filter(|c| c.conn_id == conn_id) else {
            return false;
        };
        let changed = c.info.running_tasks != status.running_tasks;
        let check = changed || c.beats_unchecked == 0 || c.beats_unchecked >= CHECK_EVERY;
        c.beats_unchecked = if check { 1 } else { c.beats_unchecked + 1 };
        if changed {
            c.info.running_tasks = status.running_tasks.clone();
        }
        c.status = status;
        c.last_seen = now;
        check
    }

    pub fn touch(&self, node_id: &str, conn_id: u64, now: i64) {
        if let Some(c) = self.lock().get_mut(node_id) {
            if c.conn_id == conn_id {
                c.last_seen = now;
            }
        }
    }

    pub fn presence(&self, node_id: &str) -> Option<Presence> {
        self.lock().get(node_id).map(|c| Presence {
            info: c.info.clone(),
            status: c.status.clone(),
            connected_at: c.connected_at,
            last_seen: c.last_seen,
        })
    }

    /// The online node with the fewest running tasks among those `eligible` accepts (ties go
    /// to the smallest id, so the choice is stable).
    pub fn least_busy(&self, eligible: impl Fn(&ViberInfo) -> bool) -> Option<String> {
        self.lock()
            .values()
            .filter(|c| eligible(&c.info))
            .min_by_key(|c| (c.status.running_tasks.len(), &c.info.id))
            .map(|c| c.info.id.clone())
    }

    pub fn online_count(&self) -> usize {
        self.lock().len()
    }

    /// The id of the node's live connection.
    pub fn conn_id(&self, node_id: &str) -> Option<u64> {
        self.lock().get(node_id).map(|c| c.conn_id)
    }

    pub fn sender(&self, node_id: &str) -> Option<mpsc::Sender<Outgoing>> {
        self.lock().get(node_id).map(|c| c.tx.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeConn>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Disconnects a node's live connection (after revocation).
pub async fn kick(app: &App, node_id: &str, code: u16, error: Frame) {
    if let Some(tx) = app.registry.sender(node_id) {
        let _ = tx
            .send(Outgoing::Close {
                code,
                error: Box::new(error),
            })
            .await;
    }
}
