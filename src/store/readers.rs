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
    /// to be handed back. Blocking: called on tokio's blocking pool.
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
                return match open(&self.path) {
                    Ok(conn) => Ok(Reader {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
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

fn open(path: &std::path::Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    super::configure(&conn)?;
    Ok(conn)
}

/// A read connection taken from [`Readers`]; handed back when dropped. One dropped while
/// its thread panics is closed instead: it may have been left inside a statement.
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
        if std::thread::panicking() {
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
        let first = open(&path).unwrap();
        (dir, Arc::new(Readers::with_max(path, first, max)))
    }

    #[test]
    fn reads_side_by_side_up_to_the_most_then_wait_for_one_handed_back() {
        let (dir, readers) = pool(3);
        // Three readers held at once open three connections.
        let held: Vec<_> = (0..3).map(|_| readers.take().unwrap()).collect();
        assert_eq!(readers.open_count(), 3);
        // A fourth waits until one is handed back, and opens none.
        let waiting = {
            let readers = readers.clone();
            std::thread::spawn(move || {
                let r = readers.take().unwrap();
                r.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).unwrap()
            })
        };
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
        drop(r);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
