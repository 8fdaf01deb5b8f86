//! `viber thread diff|commit|push|pr|sync|archive`: a thread's work in its git worktree.

use std::io::IsTerminal;

use super::{seg, Client};
use crate::protocol::api::{
    ChangedFile, CommitRequest, GitOutcome, PatchThread, PullRequestRequest, PullRequestView,
    SyncMode, SyncRequest, ThreadDiff, ThreadView,
};

/// How `thread diff` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffFormat {
    /// The changed files with their counts, then the patch.
    Both,
    /// Only the files and counts.
    Stat,
    /// Only the patch, uncoloured: it applies with `git apply`.
    Patch,
}

pub async fn diff(client: &Client, thread: &str, format: DiffFormat) -> anyhow::Result<()> {
    // A patch that must apply asks for every file whole.
    let query = if format == DiffFormat::Stat {
        "?maxFileBytes=0"
    } else {
        "?maxFileBytes=786432"
    };
    let d: ThreadDiff = client
        .get(&format!("/api/threads/{}/diff{query}", seg(thread)))
        .await?;
    if format == DiffFormat::Patch {
        if let Some(f) = d.files.iter().find(|f| f.truncated) {
            anyhow::bail!(
                "the patch of {} is too large to print whole; see it on the node in the thread's worktree",
                f.path
            );
        }
        let patch: String = d.files.iter().map(|f| f.patch.as_str()).collect();
        print!("{patch}");
        return Ok(());
    }
    let color = std::io::stdout().is_terminal();
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    println!(
        "{} {} (base {})",
        d.branch,
        d.head.get(..12).unwrap_or(&d.head),
        d.base.get(..12).unwrap_or(&d.base)
    );
    for f in &d.files {
        let counts = if f.binary {
            "binary".to_string()
        } else {
            format!(
                "{} {}",
                paint("32", &format!("+{}", f.additions)),
                paint("31", &format!("-{}", f.deletions))
            )
        };
        println!("  {:<10} {} {counts}", f.status.as_str(), name(f));
    }
    println!(
        "{} files, {} {}",
        d.files.len(),
        paint("32", &format!("+{}", d.additions)),
        paint("31", &format!("-{}", d.deletions))
    );
    if format == DiffFormat::Stat {
        return Ok(());
    }
    for f in &d.files {
        println!();
        if f.truncated {
            println!(
                "{}",
                paint("33", &format!("{}: patch too large, left out", f.path))
            );
            continue;
        }
        for line in f.patch.lines() {
            let code = match line.as_bytes().first() {
                _ if line.starts_with("+++") || line.starts_with("---") => "1",
                Some(b'+') => "32",
                Some(b'-') => "31",
                Some(b'@') => "36",
                _ if line.starts_with("diff --git") => "1",
                _ => "",
            };
            if code.is_empty() {
                println!("{line}");
            } else {
                println!("{}", paint(code, line));
            }
        }
    }
    Ok(())
}

fn name(f: &ChangedFile) -> String {
    match &f.old_path {
        Some(old) => format!("{old} -> {}", f.path),
        None => f.path.clone(),
    }
}

fn print_outcome(verb: &str, o: &GitOutcome) {
    if let Some(out) = o.output.as_deref().filter(|s| !s.trim().is_empty()) {
        eprint!("{out}");
        if !out.ends_with('\n') {
            eprintln!();
        }
    }
    let at = o.head.get(..12).unwrap_or(&o.head);
    match &o.remote {
        Some(r) => println!("{verb} {} at {at} ({r})", o.branch),
        None => println!("{verb} {} at {at}", o.branch),
    }
}

pub async fn commit(client: &Client, thread: &str, message: Option<String>) -> anyhow::Result<()> {
    let o: GitOutcome = client
        .post(
            &format!("/api/threads/{}/commit", seg(thread)),
            &CommitRequest { message },
        )
        .await?;
    print_outcome("committed", &o);
    Ok(())
}

pub async fn push(client: &Client, thread: &str) -> anyhow::Result<()> {
    let o: GitOutcome = client
        .post_empty(&format!("/api/threads/{}/push", seg(thread)))
        .await?;
    print_outcome("pushed", &o);
    Ok(())
}

pub async fn pull_request(
    client: &Client,
    thread: &str,
    req: PullRequestRequest,
) -> anyhow::Result<()> {
    let pr: PullRequestView = client
        .post(&format!("/api/threads/{}/pull-request", seg(thread)), &req)
        .await?;
    println!(
        "pull request #{} {} -> {}{}: {}",
        pr.number,
        pr.head,
        pr.base,
        if pr.draft { " (draft)" } else { "" },
        pr.url
    );
    Ok(())
}

/// Exits non-zero (1) when the sync conflicted.
pub async fn sync(client: &Client, thread: &str, rebase: bool) -> anyhow::Result<u8> {
    let mode = if rebase {
        SyncMode::Rebase
    } else {
        SyncMode::Merge
    };
    let o: GitOutcome = client
        .post(
            &format!("/api/threads/{}/sync", seg(thread)),
            &SyncRequest { mode },
        )
        .await?;
    if !o.conflicts.is_empty() {
        eprintln!(
            "{} conflicts with the environment's branch in: {}; nothing was changed",
            mode.as_str(),
            o.conflicts.join(", ")
        );
        return Ok(1);
    }
    print_outcome("synced", &o);
    Ok(0)
}

pub async fn archive(client: &Client, thread: &str, delete_branch: bool) -> anyhow::Result<()> {
    let body = PatchThread {
        title: None,
        status: Some("archived".into()),
        delete_branch: Some(delete_branch),
    };
    let t: ThreadView = client
        .send(
            client
                .request(
                    reqwest::Method::PATCH,
                    &format!("/api/threads/{}", seg(thread)),
                )
                .json(&body),
        )
        .await?;
    println!("archived {}", t.id);
    Ok(())
}
