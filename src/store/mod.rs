//! The gateway's SQLite state: the only module that contains SQL. One file per table group
//! (nodes, tasks, environments, bindings, threads, sessions, commands); enum columns are the
//! `protocol` enums, read and written through `sql.rs`, never compared as strings.
//!
//! `schema.sql` is embedded and applied at open (see [`migrate`]). Two connections in WAL
//! mode, one for writes and one for reads, so a long replay never waits behind a write
//! batch. Every public method is async and runs its statement on tokio's blocking pool:
//! no SQLite call ever runs on the reactor.

mod bindings;
mod commands;
mod environments;
mod nodes;
mod sessions;
mod sql;
mod tasks;
mod threads;

pub use bindings::{BindingRecord, BindingUpdate};
pub use commands::CommandRecord;
pub use environments::{EnvironmentRecord, SecretChange, SecretRecord};
pub use nodes::{EnrollRefusal, NodeRecord};
pub use tasks::{ChunkBatch, NewTask, TaskFinish, TaskRecord};
pub use threads::{ThreadMessage, ThreadRecord};

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::Connection;

const SCHEMA: &str = include_str!("../../schema.sql");

#[derive(Clone)]
pub struct Store {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data dir {}", dir.display()))?;
        }
        let mut writer =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        configure(&writer)?;
        migrate(&mut writer)?;
        let reader = Connection::open(path)?;
        configure(&reader)?;
        Ok(Store {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Runs `f` on the write connection, off the reactor.
    async fn write<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .context("database task panicked")?
        .context("database write")
    }

    /// Runs `f` on the read connection, off the reactor.
    async fn read<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .context("database task panicked")?
        .context("database read")
    }

    /// Checkpoints the WAL so the database file is complete on its own. Called at shutdown;
    /// the connections close when the last clone of the store is dropped.
    pub async fn close(&self) -> anyhow::Result<()> {
        self.write(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Schema version after migrations.
    pub async fn schema_version(&self) -> anyhow::Result<i64> {
        self.read(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .await
    }
}

fn configure(conn: &Connection) -> anyhow::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

/// Splits `schema.sql` into its numbered sections.
fn migrations() -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = Vec::new();
    for line in SCHEMA.lines() {
        if let Some(n) = line.trim().strip_prefix("-- migration:") {
            let n: i64 = n
                .trim()
                .parse()
                .expect("schema.sql migration numbers are integers");
            out.push((n, String::new()));
        } else if let Some((_, sql)) = out.last_mut() {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    out
}

/// Applies every migration newer than the database's `user_version`, each in a transaction.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let all = migrations();
    let latest = all.last().map(|(n, _)| *n).unwrap_or(0);
    if current > latest {
        anyhow::bail!(
            "database schema version {current} is newer than this viber ({latest}); upgrade viber"
        );
    }
    for (n, sql) in all.into_iter().filter(|(n, _)| *n > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(&sql)
            .with_context(|| format!("applying schema migration {n}"))?;
        tx.pragma_update(None, "user_version", n)?;
        tx.commit()?;
        tracing::info!(version = n, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_apply_once_and_reopen_cleanly() {
        let dir = std::env::temp_dir().join(format!("viber-store-{}", crate::crypto::random_u64()));
        let path = dir.join("viber.db");
        let store = Store::open(&path).unwrap();
        let latest = migrations().last().unwrap().0;
        assert_eq!(store.schema_version().await.unwrap(), latest);
        store.close().await.unwrap();
        drop(store);
        let again = Store::open(&path).unwrap();
        assert_eq!(again.schema_version().await.unwrap(), latest);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn migration_numbers_increase() {
        let nums: Vec<i64> = migrations().iter().map(|(n, _)| *n).collect();
        assert!(!nums.is_empty());
        assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
    }
}
