//! Device pairing requests: keys that asked to join without a token, and what an operator
//! decided about them.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::nodes::{node_from_row, upsert_node, NODE_COLUMNS};
use super::{Cached, NodeRecord, Store};
use crate::protocol::api::PairingStatus;

/// A pairing request as stored.
#[derive(Debug, Clone)]
pub struct PairingRecord {
    pub node_id: String,
    pub public_key: String,
    pub name: String,
    pub hostname: String,
    pub platform: String,
    pub version: String,
    pub address: String,
    pub requested_at: i64,
    pub expires_at: i64,
    pub status: PairingStatus,
    pub decided_at: Option<i64>,
    /// The name the approving operator gave, if any.
    pub approved_name: Option<String>,
}

/// Pending requests kept at most (more are refused until some lapse or are decided).
pub const MAX_PENDING: usize = 1000;

const COLUMNS: &str = "node_id, public_key, name, hostname, platform, version, address, \
                       requested_at, expires_at, status, decided_at, approved_name";

fn from_row(r: &Row) -> rusqlite::Result<PairingRecord> {
    Ok(PairingRecord {
        node_id: r.get(0)?,
        public_key: r.get(1)?,
        name: r.get(2)?,
        hostname: r.get(3)?,
        platform: r.get(4)?,
        version: r.get(5)?,
        address: r.get(6)?,
        requested_at: r.get(7)?,
        expires_at: r.get(8)?,
        status: r.get(9)?,
        decided_at: r.get(10)?,
        approved_name: r.get(11)?,
    })
}

fn get(tx: &rusqlite::Connection, node_id: &str) -> rusqlite::Result<Option<PairingRecord>> {
    tx.row(
        &format!("SELECT {COLUMNS} FROM pairing_requests WHERE node_id = ?1"),
        [node_id],
        from_row,
    )
    .optional()
}

impl Store {
    pub async fn pairing_request(&self, node_id: String) -> anyhow::Result<Option<PairingRecord>> {
        self.read(move |c| get(c, &node_id)).await
    }

    /// Records that `req.node_id` asks to pair and returns the request as it stands: a new
    /// pending request (or one whose time ran out) starts over with `req`'s times; one still
    /// pending keeps its times and takes `req`'s description; an approved or rejected one is
    /// returned unchanged. None when [`MAX_PENDING`] other requests are pending already.
    pub async fn request_pairing(
        &self,
        req: PairingRecord,
    ) -> anyhow::Result<Option<PairingRecord>> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let now = req.requested_at;
            match get(&tx, &req.node_id)? {
                Some(old) if old.status != PairingStatus::Pending && old.expires_at > now => {
                    return Ok(Some(old))
                }
                Some(old) if old.status == PairingStatus::Rejected => return Ok(Some(old)),
                Some(old) if old.status == PairingStatus::Pending && old.expires_at > now => {
                    tx.exec(
                        "UPDATE pairing_requests SET public_key = ?2, name = ?3, hostname = ?4,
                                platform = ?5, version = ?6, address = ?7
                         WHERE node_id = ?1",
                        params![
                            req.node_id,
                            req.public_key,
                            req.name,
                            req.hostname,
                            req.platform,
                            req.version,
                            req.address
                        ],
                    )?;
                }
                _ => {
                    let pending: usize = tx.row(
                        "SELECT count(*) FROM pairing_requests
                         WHERE status = 'pending' AND expires_at > ?1",
                        [now],
                        |r| r.get(0),
                    )?;
                    if pending >= MAX_PENDING {
                        return Ok(None);
                    }
                    tx.exec(
                        &format!(
                            "INSERT OR REPLACE INTO pairing_requests ({COLUMNS})
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', NULL, NULL)"
                        ),
                        params![
                            req.node_id,
                            req.public_key,
                            req.name,
                            req.hostname,
                            req.platform,
                            req.version,
                            req.address,
                            req.requested_at,
                            req.expires_at
                        ],
                    )?;
                }
            }
            let stored = get(&tx, &req.node_id)?.expect("written above");
            tx.commit()?;
            Ok(Some(stored))
        })
        .await
    }

    /// Requests an operator should see: pending and approved ones not yet lapsed, and
    /// rejected ones; newest first.
    pub async fn list_pairing_requests(&self, now: i64) -> anyhow::Result<Vec<PairingRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM pairing_requests
                 WHERE status = 'rejected' OR expires_at > ?1
                 ORDER BY requested_at DESC, node_id LIMIT 1000"
            ))?;
            let rows = st.query_map([now], from_row)?;
            rows.collect()
        })
        .await
    }

    /// Records an operator's answer to a request that has not lapsed (a rejected one can
    /// be approved later). An approval stays until `expires_at` for the node to collect.
    /// None when there is no such request.
    pub async fn decide_pairing(
        &self,
        node_id: String,
        status: PairingStatus,
        approved_name: Option<String>,
        now: i64,
        expires_at: i64,
    ) -> anyhow::Result<Option<PairingRecord>> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let n = tx.exec(
                "UPDATE pairing_requests SET status = ?2, decided_at = ?3, approved_name = ?4,
                        expires_at = ?5
                 WHERE node_id = ?1 AND (status = 'rejected' OR expires_at > ?3)",
                params![node_id, status, now, approved_name, expires_at],
            )?;
            let stored = if n == 1 { get(&tx, &node_id)? } else { None };
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    /// Turns an approved request into a node holding `node.token_hash`, in one
    /// transaction, and forgets the request. None when the request is not (or no longer)
    /// approved, or belongs to another key.
    pub async fn complete_pairing(
        &self,
        node: NodeRecord,
        now: i64,
    ) -> anyhow::Result<Option<NodeRecord>> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let stored = complete(&tx, node, now)?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }
}

fn complete(tx: &Transaction, node: NodeRecord, now: i64) -> rusqlite::Result<Option<NodeRecord>> {
    let Some(req) = get(tx, &node.id)? else {
        return Ok(None);
    };
    if req.status != PairingStatus::Approved
        || req.expires_at <= now
        || req.public_key != node.public_key
    {
        return Ok(None);
    }
    let name = req.approved_name.unwrap_or(req.name);
    upsert_node(tx, &node, &name, now)?;
    tx.exec(
        "DELETE FROM pairing_requests WHERE node_id = ?1",
        [&node.id],
    )?;
    tx.row(
        &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"),
        [&node.id],
        node_from_row,
    )
    .map(Some)
}
