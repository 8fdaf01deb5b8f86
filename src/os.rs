//! What the process asks of the operating system at start.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft limit on open files to the hard limit (a gateway holds one socket per
/// connected node: 10,000 nodes need more than the usual 1,024). Returns the limit before
/// and after.
pub fn raise_fd_limit() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, getrlimit(Resource::RLIMIT_NOFILE)?.0))
}

/// Caps glibc's malloc at one heap (arena) per core; call it before any thread starts.
///
/// By default glibc makes up to eight heaps per core, one for each thread that finds the
/// others in use, and a heap keeps what was freed in it. Under a flood watched by ten
/// clients, the runtime's blocking threads (each reading replay pages from SQLite for a
/// watcher that fell behind) each got a heap and kept it: the gateway's peak RSS went from
/// 68 MB after 200k chunks to 131 MB after 1.6M. With one heap per core it was 70 and 84 MB,
/// with no difference in throughput beyond this machine's noise (BENCHMARKS.md). An
/// operator's own `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` wins. Does nothing with other C
/// libraries.
pub fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if ["MALLOC_ARENA_MAX", "GLIBC_TUNABLES"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = nix::libc::c_int::try_from(cores).unwrap_or(nix::libc::c_int::MAX);
        // SAFETY: mallopt sets one of the allocator's parameters; it takes effect for heaps
        // made from now on and touches no memory of ours.
        unsafe {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, cores);
        }
    }
}

/// Gives the C heap's free pages back to the system (glibc's `malloc_trim`): what start-up
/// (migrations, loading state) or a burst of work freed but the heap kept. Does nothing with
/// other C libraries.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's heaps to the system;
    // it touches no memory in use.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
