//! The store's read connections: opened as concurrent reads need them, up to one per core
//! (between [`MIN`] and [`MAX`]). In WAL mode readers do not wait for each other or for the
//! writer, so watchers replaying different tasks, and a short read behind a long replay,
//! read side by side instead of taking turns on one connection. Idle, the store holds one:
//! [`Readers::close_spare`] closes the others once the gateway is quiet.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::Connection;

/// At least this many connections may be open, even on one core: a page of a long replay
/// then does not hold up a short read on another request.
const MIN: usize = 2;
/// At most this many: each holds its own page cache (up to SQLite's default 2 MiB).
const MAX: usize = 8;

pub(super) struct Readers {
    path: PathBuf,
    max: usize,
    state: Mutex<State>,
    /// Signalled when a connection is handed back or a slot for one frees.
    freed: Condvar,
}

struct State {
    free: Vec<Connection>,
    /// Connections open, free or in use.
    open: usize,
}

impl Readers {
    /// A pool holding `first`, already opened on `path`, that may open more up to one per
    /// core.
    pub(super) fn new(path: PathBuf, first: Connection) -> Readers {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Readers::with_max(path, first, cores.clamp(MIN, MAX))
    }

    fn with_max(path: PathBuf, first: Connection, max: usize) -> Readers {
        Readers {
            path,
            max,
            state: Mutex::new(State {
                free: vec![first],
                open: 1,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a free connection, opens one if fewer than the most are open, or waits for one
    /// to be handed back. Blocking: called on tokio's blocking pool. A connection that fails
    /// to open (no file descriptor left, say) fails the read only when none is open to wait
    /// for.
    pub(super) fn take(&self) -> anyhow::Result<Reader<'_>> {
        let mut s = self.lock();
        loop {
            if let Some(conn) = s.free.pop() {
                return Ok(Reader {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if s.open < self.max {
                s.open += 1;
                drop(s);
                match open(&self.path) {
                    Ok(conn) => {
                        return Ok(Reader {
                            pool: self,
                            conn: Some(conn),
                        })
                    }
                    Err(e) => {
                        s = self.lock();
                        s.open -= 1;
                        if s.open == 0 {
                            return Err(e.context("opening a read connection"));
                        }
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "opening a read connection; waiting for an open one"
                        );
                    }
                }
            }
            s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Closes free connections until one is left open; returns how many it closed.
    pub(super) fn close_spare(&self) -> usize {
        let spare = {
            let mut s = self.lock();
            let n = s.free.len().min(s.open.saturating_sub(1));
            let spare: Vec<Connection> = s.free.drain(..n).collect();
            s.open -= n;
            spare
        };
        // Closed outside the lock: closing may checkpoint.
        let n = spare.len();
        drop(spare);
        n
    }

    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.lock().open
    }
}

/// Opens a read connection on the store's database, which must exist (the write connection
/// created it): reads only, `query_only` set.
pub(super) fn open(path: &std::path::Path) -> anyhow::Result<Connection> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    super::configure(&conn)?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

/// A read connection taken from [`Readers`]; handed back when dropped. One dropped while
/// its thread panics, or left inside a transaction (which would hold its snapshot, and keep
/// checkpoints from finishing, while it waits in the pool), is closed instead.
pub(super) struct Reader<'a> {
    pool: &'a Readers,
    conn: Option<Connection>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut s = self.pool.lock();
        if std::thread::panicking() || !conn.is_autocommit() {
            s.open -= 1;
            drop(s);
            drop(conn);
        } else {
            s.free.push(conn);
            drop(s);
        }
        self.pool.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn pool(max: usize) -> (PathBuf, Arc<Readers>) {
        let dir =
            std::env::temp_dir().join(format!("viber-readers-{}", crate::crypto::random_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.db");
        // Created as the store's write connection creates it.
        drop(Connection::open(&path).unwrap());
        let first = open(&path).unwrap();
        (dir, Arc::new(Readers::with_max(path, first, max)))
    }

    /// A read of `SELECT n` on a thread of its own, taking a connection as the store does.
    fn read_on_a_thread(readers: &Arc<Readers>, n: i64) -> std::thread::JoinHandle<i64> {
        let readers = readers.clone();
        std::thread::spawn(move || {
            let r = readers.take().unwrap();
            r.query_row("SELECT ?1", [n], |r| r.get(0)).unwrap()
        })
    }

    #[test]
    fn reads_side_by_side_up_to_the_most_then_wait_for_one_handed_back() {
        let (dir, readers) = pool(3);
        // Three readers held at once open three connections.
        let held: Vec<_> = (0..3).map(|_| readers.take().unwrap()).collect();
        assert_eq!(readers.open_count(), 3);
        // A fourth waits until one is handed back, and opens none.
        let waiting = read_on_a_thread(&readers, 1);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiting.is_finished(), "a fourth read went past the most");
        drop(held);
        assert_eq!(waiting.join().unwrap(), 1);
        assert_eq!(readers.open_count(), 3);
        // Quiet: all but one closed, and a read after still works.
        assert_eq!(readers.close_spare(), 2);
        assert_eq!(readers.open_count(), 1);
        assert_eq!(readers.close_spare(), 0);
        let r = readers.take().unwrap();
        assert_eq!(
            r.query_row("SELECT 2", [], |r| r.get::<_, i64>(0)).unwrap(),
            2
        );
        drop(r);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_connection_that_fails_to_open_waits_for_an_open_one_or_fails_when_none_is() {
        let (dir, readers) = pool(3);
        let held = readers.take().unwrap();
        // The database gone: a new connection cannot open (readers do not create it).
        std::fs::rename(dir.join("r.db"), dir.join("moved.db")).unwrap();
        let waiting = read_on_a_thread(&readers, 4);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !waiting.is_finished(),
            "the read did not wait for the open connection"
        );
        drop(held);
        assert_eq!(waiting.join().unwrap(), 4);
        assert_eq!(readers.open_count(), 1);
        // With none open, the read fails with the reason.
        assert_eq!(readers.close_spare(), 0);
        let r2 = readers.clone();
        let gone = std::thread::spawn(move || {
            let _only = r2.take().unwrap();
            panic!("closes the only connection");
        });
        assert!(gone.join().is_err());
        assert_eq!(readers.open_count(), 0);
        let e = readers.take().err().expect("no database to open");
        assert!(
            format!("{e:#}").contains("opening a read connection"),
            "{e:#}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_reader_in_use_is_not_closed_as_spare_and_a_panic_closes_its_own() {
        let (dir, readers) = pool(4);
        let barrier = Arc::new(Barrier::new(2));
        let in_use = readers.take().unwrap();
        let other = readers.take().unwrap();
        drop(other);
        assert_eq!(readers.open_count(), 2);
        // The free one closes; the one in use stays open and is handed back after.
        assert_eq!(readers.close_spare(), 1);
        assert_eq!(readers.open_count(), 1);
        assert_eq!(
            in_use
                .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            1
        );
        drop(in_use);
        assert_eq!(readers.close_spare(), 0);
        // A read that panics closes its connection; the pool opens another when needed.
        let r2 = readers.clone();
        let b2 = barrier.clone();
        let panicked = std::thread::spawn(move || {
            let _r = r2.take().unwrap();
            b2.wait();
            panic!("a read that fails half way");
        });
        barrier.wait();
        assert!(panicked.join().is_err());
        assert_eq!(readers.open_count(), 0);
        let r = readers.take().unwrap();
        assert_eq!(
            r.query_row("SELECT 3", [], |r| r.get::<_, i64>(0)).unwrap(),
            3
        );
        assert_eq!(readers.open_count(), 1);
        // One left inside a transaction is closed, not handed back holding its snapshot;
        // and a reader writes nothing.
        let e = r.execute("CREATE TABLE t (x)", []).unwrap_err();
        assert!(e.to_string().contains("readonly"), "{e}");
        r.execute_batch("BEGIN").unwrap();
        drop(r);
        assert_eq!(readers.open_count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
