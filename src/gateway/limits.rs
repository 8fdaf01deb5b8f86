//! Limits on what an unauthenticated or greedy client can hold: WebSocket connections still
//! in their handshake, SSE watchers (per task and in all), failed sign-ins and pairing
//! requests per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::gateway::error::ApiError;

/// SSE watchers of one task.
pub const WATCHERS_PER_TASK: usize = 64;
/// SSE watchers in all (task streams and `/api/events`).
pub const WATCHERS_TOTAL: usize = 4096;
/// Failed `POST /api/session` attempts per address per window before it must wait.
const LOGIN_FAILURES: u32 = 10;
const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Pairing requests (connections without a token) per address per window.
pub const PAIRING_REQUESTS: u32 = 30;
const PAIRING_WINDOW: Duration = Duration::from_secs(600);
/// Addresses remembered per limit (the windows that ended are dropped past it).
const ADDRESSES: usize = 10_000;

pub struct Limits {
    handshakes: Arc<Semaphore>,
    watchers: Arc<Watchers>,
    login_failures: PerAddress,
    pairing_requests: PerAddress,
}

#[derive(Default)]
struct Watchers {
    total: AtomicUsize,
    per_task: Mutex<HashMap<String, usize>>,
}

/// One SSE watcher; leaving (dropping it) frees its place.
pub struct Watching {
    watchers: Arc<Watchers>,
    task: Option<String>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.watchers.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(task) = &self.task {
            let mut map = self.watchers.lock();
            if let Some(n) = map.get_mut(task) {
                *n -= 1;
                if *n == 0 {
                    map.remove(task);
                }
            }
        }
    }
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.per_task.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Limits {
    pub fn new(pending_handshakes: usize) -> Limits {
        Limits {
            handshakes: Arc::new(Semaphore::new(pending_handshakes)),
            watchers: Arc::default(),
            login_failures: PerAddress::new(LOGIN_FAILURES, LOGIN_WINDOW),
            pairing_requests: PerAddress::new(PAIRING_REQUESTS, PAIRING_WINDOW),
        }
    }

    /// A place for a WebSocket connection until it has authenticated, or None when too many
    /// are in their handshake.
    pub fn handshake(&self) -> Option<OwnedSemaphorePermit> {
        self.handshakes.clone().try_acquire_owned().ok()
    }

    /// Open SSE streams, in all.
    pub fn watchers(&self) -> usize {
        self.watchers.total.load(Ordering::Relaxed)
    }

    /// A place for one SSE watcher (of `task`, or of the event bus), or a 429.
    pub fn watch(&self, task: Option<&str>) -> Result<Watching, ApiError> {
        let w = &self.watchers;
        if let Some(task) = task {
            let mut map = w.lock();
            let n = map.entry(task.to_string()).or_default();
            if *n >= WATCHERS_PER_TASK {
                return Err(ApiError::too_many(format!(
                    "task {task} already has {WATCHERS_PER_TASK} watchers; close some"
                )));
            }
            *n += 1;
        }
        // From here the guard undoes both counts, whatever happens next.
        let guard = Watching {
            watchers: w.clone(),
            task: task.map(str::to_string),
        };
        if w.total.fetch_add(1, Ordering::Relaxed) >= WATCHERS_TOTAL {
            drop(guard);
            return Err(ApiError::too_many(format!(
                "the gateway already serves {WATCHERS_TOTAL} streams; close some"
            )));
        }
        Ok(guard)
    }

    /// Counts a sign-in attempt from `addr` before its token is checked, so parallel guesses
    /// count too; refuses it when the address already used up its window. A success gives
    /// the attempt back ([`Limits::login_succeeded`]).
    pub fn login_attempt(&self, addr: IpAddr) -> Result<(), ApiError> {
        self.login_failures.attempt(addr).map_err(|wait| {
            ApiError::too_many(format!(
                "too many failed sign-ins from this address; try again in {} s",
                wait.as_secs() + 1
            ))
        })
    }

    /// The attempt from `addr` succeeded: it does not count as a failure.
    pub fn login_succeeded(&self, addr: IpAddr) {
        self.login_failures.give_back(addr);
    }

    /// Counts a pairing request from `addr`; refuses it, with how long to wait, when the
    /// address already made [`PAIRING_REQUESTS`] in the window.
    pub fn pairing_attempt(&self, addr: IpAddr) -> Result<(), Duration> {
        self.pairing_requests.attempt(addr)
    }
}

/// At most `limit` attempts per client address (see [`client_key`]) per `window`, for at
/// most [`ADDRESSES`] addresses at once.
pub struct PerAddress {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl PerAddress {
    pub fn new(limit: u32, window: Duration) -> PerAddress {
        PerAddress {
            limit,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one attempt from `addr`, or says how long until its window ends when it has
    /// used it up.
    pub fn attempt(&self, addr: IpAddr) -> Result<(), Duration> {
        let addr = client_key(addr);
        let mut map = self.lock();
        if map.len() >= ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, (since, _)| since.elapsed() < self.window);
            if map.len() >= ADDRESSES {
                // Full of live entries: a new address goes untracked rather than resetting
                // the others' counts (or growing the map).
                return Ok(());
            }
        }
        let e = map.entry(addr).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= self.window {
            *e = (Instant::now(), 0);
        }
        if e.1 >= self.limit {
            return Err(self.window.saturating_sub(e.0.elapsed()));
        }
        e.1 += 1;
        Ok(())
    }

    /// Gives back one attempt of `addr`.
    pub fn give_back(&self, addr: IpAddr) {
        if let Some(e) = self.lock().get_mut(&client_key(addr)) {
            e.1 = e.1.saturating_sub(1);
        }
    }
}

/// Who a sign-in limit applies to: an IPv4 address, or an IPv6 /64 (one host usually has a
/// whole /64 to pick addresses from).
fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_are_counted_per_task_and_freed_on_drop() {
        let l = Limits::new(1);
        let held: Vec<_> = (0..WATCHERS_PER_TASK)
            .map(|_| l.watch(Some("t")).unwrap())
            .collect();
        assert!(l.watch(Some("t")).is_err());
        assert!(l.watch(Some("other")).is_ok());
        drop(held);
        assert!(l.watch(Some("t")).is_ok());
        assert_eq!(l.watchers.total.load(Ordering::Relaxed), 0);
        assert!(l.watchers.lock().is_empty());
        let first = l.handshake().unwrap();
        assert!(l.handshake().is_none());
        drop(first);
        assert!(l.handshake().is_some());
    }

    /// Parallel guesses count before any of them is checked; a success gives its place back.
    #[test]
    fn sign_in_attempts_count_before_they_are_checked() {
        let l = Limits::new(1);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..LOGIN_FAILURES {
            l.login_attempt(ip).unwrap();
        }
        assert!(l.login_attempt(ip).is_err());
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        l.login_attempt(other).unwrap();
        l.login_succeeded(other);
        assert_eq!(l.login_failures.lock()[&other].1, 0);
        // One IPv6 /64 is one client.
        for i in 0..LOGIN_FAILURES {
            let a: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            l.login_attempt(a).unwrap();
        }
        assert!(l
            .login_attempt("2001:db8:1:2:ffff::9".parse().unwrap())
            .is_err());
        assert!(l.login_attempt("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }
}
