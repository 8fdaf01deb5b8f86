//! The TCP ports a terminal's processes listen on, from `/proc`: the process tree under its
//! root pids, their socket inodes (`/proc/PID/fd`), and the listening sockets of their
//! network namespace (`/proc/PID/net/tcp` and `tcp6`, which a sandbox with a network of
//! its own has apart from the node's).
//!
//! Must not touch: anything outside `/proc`.

use std::collections::{BTreeSet, HashMap, HashSet};

/// TCP state LISTEN in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// Ports listened on by `roots` and every process below them, sorted.
pub fn listening(roots: &[u32]) -> Vec<u16> {
    let tree = descendants(roots);
    let mut inodes = HashSet::new();
    for pid in &tree {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy();
                if let Some(inode) = link
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    inodes.insert(inode);
                }
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut ports = BTreeSet::new();
    let mut seen_ns = HashSet::new();
    for pid in &tree {
        // One read per network namespace.
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        if !seen_ns.insert(ns) {
            continue;
        }
        for table in ["tcp", "tcp6"] {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
                continue;
            };
            ports.extend(
                parse_listening(&text)
                    .filter(|(_, inode)| inodes.contains(inode))
                    .map(|(port, _)| port),
            );
        }
    }
    ports.into_iter().collect()
}

/// (port, inode) of every listening socket in a `/proc/net/tcp` table.
fn parse_listening(table: &str) -> impl Iterator<Item = (u16, u64)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != LISTEN {
            return None;
        }
        let port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
        Some((port, f[9].parse().ok()?))
    })
}

/// `roots` and all their descendants, by the parent pids in `/proc/PID/stat`.
fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name is in parentheses and may hold spaces: fields follow the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out: Vec<u32> = roots.iter().copied().filter(|p| *p != 0).collect();
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(
                c.iter()
                    .copied()
                    .filter(|p| !out.contains(p))
                    .collect::<Vec<_>>(),
            );
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_read_from_the_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F41 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(
            parse_listening(table).collect::<Vec<_>>(),
            vec![(8000, 12345)]
        );
    }

    #[test]
    fn a_listening_child_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening(&[std::process::id()]).contains(&port));
    }
}
