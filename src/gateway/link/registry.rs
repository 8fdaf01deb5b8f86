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
    /// [`Store::tasks_inserted`](crate::store::Store::tasks_inserted) as it was when the last
    /// check found the node with no unfinished task: until a task is inserted after it, the
    /// every-[`CHECK_EVERY`] check has nothing to find and is not made.
    pub clean_at: Option<u64>,
}

/// A node's tasks are checked against the store at least every this many heartbeats (and
/// whenever the tasks it reports change).
const CHECK_EVERY: u32 = 8;

/// What a heartbeat has checked against the store.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Checks {
    /// The node's tasks: on its first heartbeat, when the tasks it reports changed, and every
    /// [`CHECK_EVERY`] beats unless the last check found none and no task was inserted since
    /// ([`NodeConn::clean_at`]).
    pub tasks: bool,
    /// The worktrees it reports (orphans removed): first, on a change and every
    /// [`CHECK_EVERY`] beats.
    pub worktrees: bool,
}

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

    /// Records a heartbeat in memory. Returns what to check against the store now (see
    /// [`Checks`]); an idle fleet's heartbeats touch no database.
    pub fn record_heartbeat(
        &self,
        node_id: &str,
        conn_id: u64,
        status: NodeStatus,
        now: i64,
        inserted: u64,
    ) -> Checks {
        let mut nodes = self.lock();
        let Some(c) = nodes.get_mut(node_id).filter(|c| c.conn_id == conn_id) else {
            return Checks::default();
        };
        let changed = c.info.running_tasks != status.running_tasks;
        let first = c.beats_unchecked == 0;
        let due = c.beats_unchecked >= CHECK_EVERY;
        let checks = Checks {
            tasks: changed || first || (due && c.clean_at != Some(inserted)),
            worktrees: changed || first || due,
        };
        if checks.worktrees {
            c.beats_unchecked = 1;
        } else {
            c.beats_unchecked = c.beats_unchecked.saturating_add(1);
        }
        if checks.tasks {
            c.clean_at = None;
        }
        if changed {
            c.info.running_tasks = status.running_tasks.clone();
        }
        c.status = status;
        c.last_seen = now;
        checks
    }

    /// Records that a check of the node's tasks, made with the store's count of inserted
    /// tasks at `inserted` (read before the check read the store), found no unfinished task.
    pub fn checked_clean(&self, node_id: &str, conn_id: u64, inserted: u64) {
        if let Some(c) = self.lock().get_mut(node_id) {
            if c.conn_id == conn_id {
                c.clean_at = Some(inserted);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_with(node: &str) -> Registry {
        let r = Registry::default();
        let (tx, _rx) = mpsc::channel(1);
        r.insert(NodeConn {
            conn_id: 1,
            tx,
            info: ViberInfo {
                id: node.into(),
                ..ViberInfo::default()
            },
            status: NodeStatus::default(),
            connected_at: 0,
            last_seen: 0,
            beats_unchecked: 0,
            clean_at: None,
        });
        r
    }

    fn beat(r: &Registry, tasks: &[&str], inserted: u64) -> bool {
        beat_checks(r, tasks, inserted).tasks
    }

    fn beat_checks(r: &Registry, tasks: &[&str], inserted: u64) -> Checks {
        let status = NodeStatus {
            running_tasks: tasks.iter().map(|t| t.to_string()).collect(),
            ..NodeStatus::default()
        };
        r.record_heartbeat("n", 1, status, 0, inserted)
    }

    #[test]
    fn a_node_found_with_no_task_is_checked_again_only_once_a_task_is_inserted() {
        let r = registry_with("n");
        // The first beat checks; the check found nothing while 5 tasks had been inserted.
        assert!(beat(&r, &[], 5));
        r.checked_clean("n", 1, 5);
        // No periodic check of its tasks while nothing is inserted, however many beats; its
        // worktrees are still checked every CHECK_EVERY beats.
        for i in 1..=3 * CHECK_EVERY {
            let checks = beat_checks(&r, &[], 5);
            assert!(!checks.tasks);
            assert_eq!(checks.worktrees, i % CHECK_EVERY == 0, "beat {i}");
        }
        // A task inserted anywhere: the periodic check of its tasks is made again, at the
        // next period.
        for _ in 1..CHECK_EVERY {
            assert!(!beat(&r, &[], 6));
        }
        assert!(beat(&r, &[], 6));
        // Not found clean this time: the next check comes after CHECK_EVERY beats.
        for _ in 1..CHECK_EVERY {
            assert!(!beat(&r, &[], 6));
        }
        assert!(beat(&r, &[], 6));
    }

    #[test]
    fn a_change_in_the_tasks_a_node_reports_is_checked_at_once_even_when_clean() {
        let r = registry_with("n");
        assert!(beat(&r, &[], 0));
        r.checked_clean("n", 1, 0);
        assert!(!beat(&r, &[], 0));
        assert!(beat(&r, &["task_a"], 0), "a new task reported");
        assert!(beat(&r, &[], 0), "the task gone from the report");
        // A stale clean mark for another connection is ignored.
        r.checked_clean("n", 2, 0);
        for _ in 1..CHECK_EVERY {
            assert!(!beat(&r, &[], 0));
        }
        assert!(beat(&r, &[], 0));
    }
}
