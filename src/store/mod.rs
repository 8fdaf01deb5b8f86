//! The gateway's SQLite state: the only module that contains SQL. One file per table group
//! (nodes, pairing, tasks, environments, shared credentials, jobs, bindings, threads, sessions, commands, audit), and `retention.rs`
//! for what the sweeper deletes; enum columns are the
//! `protocol` enums, read and written through `sql.rs`, never compared as strings.
//!
//! `schema.sql` is embedded and applied at open (see [`migrate`]). WAL mode, one connection
//! for writes and a pool of read connections ([`readers`]), so a long replay never waits
//! behind a write batch and replays of different tasks read side by side. Every public
//! method is async and runs its statement on tokio's blocking pool:
//! no SQLite call ever runs on the reactor.

mod audit;
mod bindings;
mod chunks;
mod commands;
mod environments;
mod jobs;
mod nodes;
mod pairing;
mod readers;
mod retention;
mod sessions;
mod shared;
mod sql;
mod tasks;
mod terminals;
mod threads;
mod worktrees;

pub use audit::AuditRecord;
pub use bindings::{BindingRecord, BindingUpdate};
pub use chunks::{chunk_type, APPROVAL_CHUNK_TYPES};
pub use commands::CommandRecord;
pub use environments::{AllowedHosts, EnvironmentRecord, SecretChange, SecretRecord};
pub use jobs::{JobRecord, JobRun};
pub use nodes::{EnrollRefusal, NodeRecord};
pub use pairing::PairingRecord;
pub use retention::Pruned;
pub use shared::SecretOrigin;
pub use tasks::{AgentReport, ChunkBatch, NewTask, TaskFinish, TaskRecord, UsageFact};
pub use terminals::TerminalRecord;
pub use threads::{ThreadMessage, ThreadRecord};
pub use worktrees::WorktreeRecord;

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::Connection;

const SCHEMA: &str = include_str!("../../schema.sql");

#[derive(Clone)]
pub struct Store {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<readers::Readers>,
    /// Tasks inserted since the store opened (see [`Store::tasks_inserted`]).
    tasks_inserted: Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data dir {}", dir.display()))?;
        }
        // Created 0600 before SQLite opens it: SQLite gives the WAL and shared-memory files
        // the database file's mode.
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        let mut writer =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        configure(&writer)?;
        migrate(&mut writer)?;
        let reader = readers::open(path)?;
        Ok(Store {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(readers::Readers::new(path.to_path_buf(), reader)),
            tasks_inserted: Arc::default(),
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

    /// Runs `f` on a read connection, off the reactor.
    async fn read<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            f(&conn).context("database read")
        })
        .await
        .context("database task panicked")?
    }

    /// Closes the read connections that concurrent reads opened, but one: called when the
    /// gateway is quiet, so their page caches are given back. Returns how many it closed.
    pub async fn close_spare_readers(&self) -> usize {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.close_spare())
            .await
            .unwrap_or(0)
    }

    /// Checkpoints the WAL so the database file is complete on its own. Called at shutdown;
    /// the connections close when the last clone of the store is dropped.
    pub async fn close(&self) -> anyhow::Result<()> {
        self.write(|c| {
            c.row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Schema version after migrations.
    pub async fn schema_version(&self) -> anyhow::Result<i64> {
        self.read(|c| c.row("PRAGMA user_version", [], |r| r.get(0)))
            .await
    }
}

fn configure(conn: &Connection) -> anyhow::Result<()> {
    // First: a connection opened next to a busy writer or a checkpoint waits, not fails.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Room for every statement the store prepares (`prepare_cached`), so none is parsed
    // again: a node's heartbeat check, say, would otherwise parse its query each time.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Statements kept prepared per connection: more than the store has.
const STATEMENT_CACHE: usize = 128;

/// `execute` and `query_row` through the connection's cache of prepared statements
/// (rusqlite's own prepare each statement again on every call). The store's SQL is fixed
/// text, or built from a few fixed pieces, so each statement is parsed once per connection.
trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
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
    let current: i64 = conn.row("PRAGMA user_version", [], |r| r.get(0))?;
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

    /// The schema version of the previous release.
    const PREVIOUS_RELEASE: i64 = 4;
    const DAY: i64 = 24 * 3600 * 1000;

    /// A database as the previous release left it, holding a bit of everything; `now` is
    /// the present, `old` a time 40 days ago.
    fn previous_release_db(path: &Path, now: i64) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut conn = Connection::open(path).unwrap();
        configure(&conn).unwrap();
        for (n, sql) in migrations()
            .into_iter()
            .filter(|(n, _)| *n <= PREVIOUS_RELEASE)
        {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(&sql).unwrap();
            tx.pragma_update(None, "user_version", n).unwrap();
            tx.commit().unwrap();
        }
        let old = now - 40 * DAY;
        conn.execute_batch(&format!(
            "INSERT INTO tasks (id, node_id, goal, executor, state, created_at, finished_at,
                                exit_code, result, last_seq, input_tokens, output_tokens, model)
             VALUES ('t_old', 'n1', 'echo old', 'shell', 'completed', {old}, {old}, 0, 'ok', 1,
                     5, 7, 'm'),
                    ('t_new', 'n1', 'echo new', 'shell', 'completed', {now}, {now}, 0, NULL, 0,
                     0, 0, NULL),
                    ('t_run', 'n1', 'sleep', 'shell', 'running', {old}, NULL, NULL, NULL, 0,
                     0, 0, NULL);
             INSERT INTO task_chunks (task_id, seq, chunk) VALUES
                    ('t_old', 0, '{{\"type\":\"start\"}}'), ('t_old', 1, '{{\"type\":\"finish\"}}'),
                    ('t_new', 0, '{{\"type\":\"start\"}}'), ('t_run', 0, '{{\"type\":\"start\"}}');
             INSERT INTO idempotency_keys (scope, key, status, response, created_at) VALUES
                    ('s', 'old', 201, '{{}}', {old}), ('s', 'new', 201, '{{}}', {now});
             INSERT INTO binding_logs (binding_id, seq, line, at) VALUES
                    ('b1', 0, 'old line', {old}), ('b1', 1, 'new line', {now});
             INSERT INTO operator_tokens (id, name, token_hash, created_at)
                    VALUES ('admin', 'admin', 'h', {old});
             INSERT INTO sessions (session_hash, csrf_token, operator_hash, created_at, expires_at)
                    VALUES ('gone', 'c', 'h', {old}, {old}), ('live', 'c', 'h', {now}, {now} + {DAY});
             INSERT INTO enrollments (token_hash, name, created_at, expires_at) VALUES
                    ('e_old', 'x', {old}, {old}), ('e_new', 'y', {now}, {now} + {DAY});"
        ))
        .unwrap();
    }

    /// Stores a command for task `task` of node `n1`.
    async fn command(store: &Store, id: &str, task: &str, now: i64) {
        store
            .insert_command(id.into(), "n1".into(), Some(task.into()), "{}".into(), now)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_previous_release_database_migrates_with_its_data() {
        let dir = std::env::temp_dir().join(format!("viber-store-{}", crate::crypto::random_u64()));
        let path = dir.join("viber.db");
        let now = crate::clock::now_ms();
        previous_release_db(&path, now);
        let store = Store::open(&path).unwrap();
        let latest = migrations().last().unwrap().0;
        assert!(latest > PREVIOUS_RELEASE);
        assert_eq!(store.schema_version().await.unwrap(), latest);
        let t = store.task("t_old".into()).await.unwrap().unwrap();
        assert_eq!(t.goal, "echo old");
        assert_eq!(t.state, crate::protocol::TaskState::Completed);
        assert_eq!((t.input_tokens, t.output_tokens), (5, 7));
        assert_eq!(t.result.as_deref(), Some("ok"));
        assert_eq!(t.output_pruned_at, None);
        assert_eq!(
            store
                .chunks_after("t_old".into(), -1, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(store.unfinished_tasks().await.unwrap().len(), 1);
        // New tables work on the migrated database.
        command(&store, "c1", "t_run", now).await;
        assert_eq!(store.commands_of("n1".into()).await.unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn retention_deletes_only_what_is_past_its_time() {
        let dir = std::env::temp_dir().join(format!("viber-store-{}", crate::crypto::random_u64()));
        let path = dir.join("viber.db");
        let now = crate::clock::now_ms();
        previous_release_db(&path, now);
        let store = Store::open(&path).unwrap();
        command(&store, "c_done", "t_old", now).await;
        command(&store, "c_live", "t_run", now).await;
        let cutoff = now - 30 * DAY;
        let p = store.prune_records(cutoff, now - DAY, now).await.unwrap();
        assert_eq!(
            p,
            Pruned {
                binding_log_lines: 1,
                idempotency_keys: 1,
                sessions: 1,
                enrollments: 1,
                commands: 1,
                ..Pruned::default()
            }
        );
        assert_eq!(store.prune_task_outputs(cutoff, now).await.unwrap(), (1, 2));
        assert_eq!(store.prune_task_outputs(cutoff, now).await.unwrap(), (0, 0));
        let t = store.task("t_old".into()).await.unwrap().unwrap();
        assert_eq!(t.output_pruned_at, Some(now));
        assert_eq!(t.result.as_deref(), Some("ok"));
        assert!(store
            .chunks_after("t_old".into(), -1, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store
                .chunks_after("t_new".into(), -1, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .chunks_after("t_run".into(), -1, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        let cmds = store.commands_of("n1".into()).await.unwrap();
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].id, "c_live");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A stored run cut short or with unbalanced brackets (a damaged file, a hand edit)
    /// fails the read with the parser's reason instead of handing out a broken chunk.
    #[tokio::test]
    async fn a_damaged_run_of_chunks_fails_its_read() {
        let dir = std::env::temp_dir().join(format!("viber-store-{}", crate::crypto::random_u64()));
        let path = dir.join("viber.db");
        let store = Store::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            r#"INSERT INTO task_chunk_runs (task_id, first_seq, last_seq, chunks) VALUES
                   ('good', 0, 1, '[{"type":"start"}, {"type":"text-delta","delta":"a,]"}]'),
                   ('bad', 0, 1, '[{"type":"start"},{"type":"text-delta","delta":"a]');"#,
        )
        .unwrap();
        let good = store.chunks_after("good".into(), -1, 10).await.unwrap();
        assert_eq!(
            good,
            [
                (0, r#"{"type":"start"}"#.to_string()),
                (1, r#"{"type":"text-delta","delta":"a,]"}"#.to_string())
            ]
        );
        let err = store.chunks_after("bad".into(), -1, 10).await.unwrap_err();
        assert!(format!("{err:#}").contains("EOF while parsing"), "{err:#}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Chunks are stored in runs of one task's consecutive chunks, cut by count and by
    /// bytes; a resend (the node sends again what was not acknowledged) keeps
    /// what was stored first; readers see every chunk once, in order, from any point.
    #[tokio::test]
    async fn chunks_are_stored_once_and_in_order_however_a_batch_is_cut() {
        let dir = std::env::temp_dir().join(format!("viber-store-{}", crate::crypto::random_u64()));
        let store = Store::open(&dir.join("viber.db")).unwrap();
        let text = |s: u64, tag: &str| {
            // From 600 on, every 100th chunk is large: runs are cut by bytes there.
            let big = s >= 600 && s % 100 == 99;
            let pad = if big {
                "x".repeat(100_000)
            } else {
                String::new()
            };
            format!(r#"{{"type":"text-delta","delta":"{tag}{s}{pad}"}}"#)
        };
        let chunk = |task: &str, s: u64, tag: &str| -> tasks::BatchChunk {
            (task.into(), s, text(s, tag).into())
        };
        let batch = |rows: Vec<tasks::BatchChunk>| {
            Arc::new(ChunkBatch {
                chunks: rows,
                ..ChunkBatch::default()
            })
        };
        // Task a's first 1,200 chunks, with task b's between its 600th and 601st.
        let mut first: Vec<_> = (0..600).map(|s| chunk("a", s, "first")).collect();
        first.extend((0..3).map(|s| chunk("b", s, "first")));
        first.extend((600..1200).map(|s| chunk("a", s, "first")));
        store.apply_chunk_batch(batch(first)).await.unwrap();
        // 100 resent and 100 new, then all resent.
        let again = (1100..1300).map(|s| chunk("a", s, "again")).collect();
        store.apply_chunk_batch(batch(again)).await.unwrap();
        let late = (1250..1300).map(|s| chunk("a", s, "late")).collect();
        store.apply_chunk_batch(batch(late)).await.unwrap();
        let expected = |s: u64| text(s, if s < 1200 { "first" } else { "again" });
        let rows = store.chunks_after("a".into(), -1, 5000).await.unwrap();
        assert_eq!(rows.len(), 1300);
        for (i, (seq, chunk)) in rows.iter().enumerate() {
            assert_eq!((*seq, chunk.as_str()), (i as u64, &*expected(i as u64)));
        }
        // From inside a run, a page at a time.
        let (mut after, mut seen) = (99i64, Vec::new());
        loop {
            let page = store.chunks_after("a".into(), after, 70).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.0 as i64;
            assert!(page.len() == 70 || after == 1299, "{}", page.len());
            seen.extend(page.into_iter().map(|(s, _)| s));
        }
        assert_eq!(seen, (100..1300).collect::<Vec<u64>>());
        // Runs follow on from each other, cut at 512 chunks or after 256 KiB (from 600 on,
        // where every 100th chunk is 100 KB); task b's chunks in between do not cut a run.
        let runs: Vec<(i64, i64, usize)> = store
            .read(|c| {
                let mut st = c.prepare_cached(
                    "SELECT first_seq, last_seq, length(chunks) FROM task_chunk_runs
                     WHERE task_id = 'a' ORDER BY last_seq",
                )?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect()
            })
            .await
            .unwrap();
        let ends: Vec<(i64, i64)> = runs.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(ends, [(0, 511), (512, 899), (900, 1199), (1200, 1299)]);
        assert!(runs.iter().all(|r| r.2 < chunks::RUN_BYTES + 100_100));
        let rows = store.chunks_after("b".into(), -1, 1000).await.unwrap();
        let b: Vec<(u64, String)> = (0..3).map(|s| (s, text(s, "first"))).collect();
        assert_eq!(rows, b);
        // The stored size is that of the chunks themselves.
        let bytes: usize = (0..1300).map(|s| expected(s).len()).sum();
        assert_eq!(
            store.task_output_size("a".into()).await.unwrap(),
            (1300, bytes as u64)
        );
        let all: String = (0..1300)
            .map(|s| {
                let c = expected(s);
                let d = c.strip_prefix(r#"{"type":"text-delta","delta":""#).unwrap();
                d.strip_suffix(r#""}"#).unwrap().to_string()
            })
            .collect();
        let tail = store.task_text("a".into(), 1000, Vec::new()).await.unwrap();
        assert_eq!(tail, all[all.len() - 1000..]);
        // Chunks not stored yet: those past the stored ones are added, once.
        let delta = |d: &str| format!(r#"{{"type":"text-delta","delta":"{d}"}}"#).into();
        let unstored = vec![
            (1299, delta("repeat")),
            (1300, delta("-new")),
            (1301, delta("!")),
        ];
        let tail = store.task_text("a".into(), 1000, unstored).await.unwrap();
        assert_eq!(tail, format!("{}-new!", &all[all.len() - 995..]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A chunk's type is read as every other reader reads it: escapes decoded (and then
    /// owned), the last of a repeated key, nothing from what is not an object with a
    /// string type.
    #[test]
    fn a_chunks_type_is_read_as_json_reads_it() {
        use std::borrow::Cow;
        let t = chunk_type;
        assert!(matches!(
            t(r#"{"type":"text-delta"}"#),
            Some(Cow::Borrowed("text-delta"))
        ));
        let escaped = t(r#"{"delta":"\u001b","type":"tool\u002dx"}"#);
        assert!(matches!(escaped, Some(Cow::Owned(ref k)) if k == "tool-x"));
        let twice = t(r#"{"type":"a","\u0074ype":"b","x":[1,{"type":"c"}]}"#);
        assert_eq!(twice.as_deref(), Some("b"));
        for none in [r#"{"delta":"x"}"#, r#"{"type":5}"#, r#"["type"]"#, "null"] {
            assert_eq!(t(none), None, "{none}");
        }
        // A thread's text reads a delta the same way: the last of a repeated one.
        let fields = chunks::string_fields(
            r#"{"type":"text-delta","delta":"a","delta":"b"}"#,
            ["type", "delta"],
        );
        assert_eq!(
            fields.map(|[k, d]| (k.unwrap().into_owned(), d.unwrap().into_owned())),
            Some(("text-delta".into(), "b".into()))
        );
    }

    #[test]
    fn migration_numbers_increase() {
        let nums: Vec<i64> = migrations().iter().map(|(n, _)| *n).collect();
        assert!(!nums.is_empty());
        assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
    }
}
