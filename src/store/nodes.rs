//! Nodes and their enrollment.

use rusqlite::{params, OptionalExtension, Row};

use super::{Cached, Store};

/// A node as stored.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub id: String,
    pub name: String,
    pub public_key: String,
    pub token_hash: String,
    pub version: String,
    pub platform: String,
    pub capabilities: Vec<String>,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// JSON of the node's last `config:ack`.
    pub config_state: Option<String>,
}

pub(super) const NODE_COLUMNS: &str =
    "id, name, public_key, token_hash, version, platform, capabilities, \
                            created_at, last_seen_at, revoked_at, config_state";

pub(super) fn node_from_row(r: &Row) -> rusqlite::Result<NodeRecord> {
    let caps: String = r.get(6)?;
    Ok(NodeRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        public_key: r.get(2)?,
        token_hash: r.get(3)?,
        version: r.get(4)?,
        platform: r.get(5)?,
        capabilities: serde_json::from_str(&caps).unwrap_or_default(),
        created_at: r.get(7)?,
        last_seen_at: r.get(8)?,
        revoked_at: r.get(9)?,
        config_state: r.get(10)?,
    })
}

/// Why an enrollment token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollRefusal {
    Unknown,
    Expired,
    Used,
}

/// Creates the node `node` named `name` and seen at `now`, or (for a key that was enrolled
/// before) gives it its new token and un-revokes it.
pub(super) fn upsert_node(
    tx: &rusqlite::Transaction,
    node: &NodeRecord,
    name: &str,
    now: i64,
) -> rusqlite::Result<()> {
    let caps = serde_json::to_string(&node.capabilities).unwrap_or_else(|_| "[]".into());
    tx.exec(
        "INSERT INTO nodes (id, name, public_key, token_hash, version, platform,
                            capabilities, created_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
         ON CONFLICT (id) DO UPDATE SET
            name = excluded.name, public_key = excluded.public_key,
            token_hash = excluded.token_hash, version = excluded.version,
            platform = excluded.platform, capabilities = excluded.capabilities,
            last_seen_at = excluded.last_seen_at, revoked_at = NULL",
        params![
            node.id,
            name,
            node.public_key,
            node.token_hash,
            node.version,
            node.platform,
            caps,
            now
        ],
    )?;
    Ok(())
}

impl Store {
    /// An enrollment token that enrolls up to `uses` nodes until `expires_at`.
    pub async fn create_enrollment(
        &self,
        token_hash: String,
        name: String,
        now: i64,
        expires_at: i64,
        uses: u32,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "INSERT INTO enrollments (token_hash, name, created_at, expires_at, uses)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token_hash, name, now, expires_at, uses],
            )?;
            Ok(())
        })
        .await
    }

    /// Redeems an enrollment token for the node `node.id` in one transaction: one of the
    /// token's uses is taken and the node is created (or, for a key that was enrolled before,
    /// re-enrolled with a new token and un-revoked). The node's name is the one the operator
    /// gave the enrollment; a token for several nodes adds the end of each node's id.
    pub async fn redeem_enrollment(
        &self,
        enrollment_hash: String,
        node: NodeRecord,
        now: i64,
    ) -> anyhow::Result<Result<NodeRecord, EnrollRefusal>> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let row: Option<(String, i64, i64, i64)> = tx
                .row(
                    "SELECT name, expires_at, uses, used_count FROM enrollments
                     WHERE token_hash = ?1",
                    params![enrollment_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let name = match row {
                None => return Ok(Err(EnrollRefusal::Unknown)),
                Some((_, _, uses, used)) if used >= uses => return Ok(Err(EnrollRefusal::Used)),
                Some((_, expires, _, _)) if expires <= now => {
                    return Ok(Err(EnrollRefusal::Expired))
                }
                Some((name, _, 1, _)) => name,
                Some((name, ..)) => {
                    format!("{name}-{}", crate::protocol::worktree::id_tail(&node.id, 8))
                }
            };
            tx.exec(
                "UPDATE enrollments SET used_at = ?2, node_id = ?3, used_count = used_count + 1
                 WHERE token_hash = ?1",
                params![enrollment_hash, now, node.id],
            )?;
            upsert_node(&tx, &node, &name, now)?;
            let stored = tx.row(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"),
                params![node.id],
                node_from_row,
            )?;
            tx.commit()?;
            Ok(Ok(stored))
        })
        .await
    }

    pub async fn node(&self, id: String) -> anyhow::Result<Option<NodeRecord>> {
        self.read(move |c| {
            c.row(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"),
                params![id],
                node_from_row,
            )
            .optional()
        })
        .await
    }

    /// Enrolled, not revoked nodes, oldest first.
    pub async fn list_nodes(&self) -> anyhow::Result<Vec<NodeRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE revoked_at IS NULL ORDER BY created_at, id"
            ))?;
            let rows = st.query_map([], node_from_row)?;
            rows.collect()
        })
        .await
    }

    /// Records what a node said about itself when it connected or disconnected.
    pub async fn touch_node(
        &self,
        id: String,
        version: String,
        platform: String,
        capabilities: Vec<String>,
        seen_at: i64,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            let caps = serde_json::to_string(&capabilities).unwrap_or_else(|_| "[]".into());
            c.exec(
                "UPDATE nodes SET version = ?2, platform = ?3, capabilities = ?4, last_seen_at = ?5
                 WHERE id = ?1",
                params![id, version, platform, caps, seen_at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn set_node_last_seen(&self, id: String, seen_at: i64) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE nodes SET last_seen_at = ?2 WHERE id = ?1",
                params![id, seen_at],
            )?;
            Ok(())
        })
        .await
    }

    /// Revokes a node. Returns false when no such (unrevoked) node exists.
    pub async fn revoke_node(&self, id: String, now: i64) -> anyhow::Result<bool> {
        self.write(move |c| {
            let n = c.exec(
                "UPDATE nodes SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// (enrolled nodes, tasks) for `/health`.
    pub async fn counts(&self) -> anyhow::Result<(i64, i64)> {
        self.read(|c| {
            c.row(
                "SELECT (SELECT count(*) FROM nodes WHERE revoked_at IS NULL),
                        (SELECT count(*) FROM tasks)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }
}

impl Store {
    /// Stores a node's last `config:ack` (JSON).
    pub async fn set_node_config_state(
        &self,
        node_id: String,
        state: String,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE nodes SET config_state = ?2 WHERE id = ?1",
                params![node_id, state],
            )?;
            Ok(())
        })
        .await
    }
}
