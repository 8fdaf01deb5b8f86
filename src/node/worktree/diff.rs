//! A worktree's diff against the commit its branch started from: commits, staged, unstaged
//! and untracked files (ignored ones excluded), as `git diff` would show them had every
//! change been added. Git does the work on a temporary index (`git add -A` into a copy of
//! HEAD's tree), so the worktree's own index is never touched.

use std::path::Path;

use super::ops::run;
use super::Worktree;
use crate::protocol::api::{ChangedFile, FileStatus};
use crate::protocol::worktree::GitResult;

/// Options every listing and patch shares, so they list the files in the same order.
const DIFF: &[&str] = &[
    "diff",
    "--cached",
    "-M",
    "--no-ext-diff",
    "--no-textconv",
    "--no-color",
];

/// Room kept in the answer frame for everything but the patches.
const FRAME_SLACK: usize = 64 * 1024;

pub(super) fn diff(wt: &Worktree, max_file: u64, max_total: u64) -> Result<GitResult, String> {
    let root = wt.dir.parent().unwrap_or(&wt.dir);
    let index = root.join(format!(
        ".index-{}-{}",
        wt.thread_id,
        crate::crypto::hex(&crate::crypto::random_bytes(4))
    ));
    let _cleanup = Remove(&index);
    let with_index = |args: &[&str]| {
        let mut c = wt.git();
        c.env("GIT_INDEX_FILE", &index).args(args);
        let out = run(c)?;
        if out.ok {
            Ok(out.stdout)
        } else {
            Err(format!("git {}: {}", args[0], out.stderr.trim()))
        }
    };
    with_index(&["read-tree", "HEAD"])?;
    with_index(&["add", "-A"])?;
    let base = wt.base.as_str();
    let status = with_index(&[DIFF, &["--name-status", "-z", base]].concat())?;
    let numstat = with_index(&[DIFF, &["--numstat", "-z", base]].concat())?;
    let patch = with_index(&[DIFF, &["--binary", "--full-index", base]].concat())?;
    let mut files = parse_status(&status)?;
    let counts = parse_numstat(&numstat);
    let patches = split_patch(&patch);
    if counts.len() != files.len() || patches.len() != files.len() {
        return Err(format!(
            "git listed {} files, {} counts and {} patches",
            files.len(),
            counts.len(),
            patches.len()
        ));
    }
    let mut total = 0u64;
    for ((f, count), p) in files.iter_mut().zip(counts).zip(patches) {
        (f.additions, f.deletions, f.binary) = count;
        let len = p.len() as u64;
        if len > max_file || total + len > max_total {
            f.truncated = true;
        } else {
            total += len;
            f.patch = p.to_string();
        }
    }
    // JSON escapes may make the answer longer than the patches: leave out the longest
    // until the frame fits.
    let limit = crate::protocol::MAX_FRAME_BYTES - FRAME_SLACK;
    while serde_json::to_string(&files).map_or(0, |s| s.len()) > limit {
        let Some(longest) = files.iter_mut().max_by_key(|f| f.patch.len()) else {
            break;
        };
        longest.patch.clear();
        longest.truncated = true;
    }
    Ok(GitResult {
        head: Some(wt.output(&["rev-parse", "HEAD"])?),
        base: Some(wt.base.clone()),
        files,
        ..GitResult::default()
    })
}

/// Deletes a file when dropped.
struct Remove<'a>(&'a Path);

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// `--name-status -z`: `X\0path\0`, or `R100\0old\0new\0` for renames and copies.
fn parse_status(out: &str) -> Result<Vec<ChangedFile>, String> {
    let mut parts = out.split('\0').filter(|s| !s.is_empty());
    let mut files = Vec::new();
    while let Some(code) = parts.next() {
        let bad = || format!("unexpected git output near {code:?}");
        let status = match code.as_bytes().first() {
            Some(b'A') => FileStatus::Added,
            Some(b'M') => FileStatus::Modified,
            Some(b'D') => FileStatus::Deleted,
            Some(b'R') => FileStatus::Renamed,
            Some(b'C') => FileStatus::Copied,
            Some(b'T') => FileStatus::TypeChanged,
            _ => return Err(bad()),
        };
        let first = parts.next().ok_or_else(bad)?.to_string();
        let (path, old_path) = match status {
            FileStatus::Renamed | FileStatus::Copied => {
                (parts.next().ok_or_else(bad)?.to_string(), Some(first))
            }
            _ => (first, None),
        };
        files.push(ChangedFile {
            path,
            old_path,
            status,
            additions: 0,
            deletions: 0,
            binary: false,
            patch: String::new(),
            truncated: false,
        });
    }
    Ok(files)
}

/// `--numstat -z`: `add\tdel\tpath\0`, or `add\tdel\t\0old\0new\0` for renames; `-` counts
/// for binary files.
fn parse_numstat(out: &str) -> Vec<(u64, u64, bool)> {
    let mut counts = Vec::new();
    let mut parts = out.split('\0');
    while let Some(entry) = parts.next() {
        if entry.is_empty() {
            continue;
        }
        let mut fields = entry.splitn(3, '\t');
        let (a, d, path) = (
            fields.next().unwrap_or(""),
            fields.next().unwrap_or(""),
            fields.next().unwrap_or(""),
        );
        if path.is_empty() {
            // A rename: the old and new paths follow.
            parts.next();
            parts.next();
        }
        let binary = a == "-" && d == "-";
        counts.push((a.parse().unwrap_or(0), d.parse().unwrap_or(0), binary));
    }
    counts
}

/// The patch of each file: the text from one `diff --git` line to the next.
fn split_patch(patch: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = Vec::new();
    let mut at = 0;
    for line in patch.split_inclusive('\n') {
        if line.starts_with("diff --git ") {
            starts.push(at);
        }
        at += line.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &s)| &patch[s..starts.get(i + 1).copied().unwrap_or(patch.len())])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse() {
        let files = parse_status("M\0a.txt\0R087\0old name\0new name\0A\0bin.dat\0").unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(files[1].status, FileStatus::Renamed);
        assert_eq!(files[1].old_path.as_deref(), Some("old name"));
        assert_eq!(files[1].path, "new name");
        let counts = parse_numstat("1\t2\ta.txt\x003\t0\t\0old name\0new name\0-\t-\tbin.dat\0");
        assert_eq!(counts, vec![(1, 2, false), (3, 0, false), (0, 0, true)]);
        assert!(parse_status("Z\0x\0").is_err());
        let p = "diff --git a/x b/x\n+diff --git in content\ndiff --git a/y b/y\n-y\n";
        assert_eq!(
            split_patch(p),
            vec![
                "diff --git a/x b/x\n+diff --git in content\n",
                "diff --git a/y b/y\n-y\n"
            ]
        );
    }
}
