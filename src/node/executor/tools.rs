//! The agent's tools. Every path is confined to the task's working directory: a path argument
//! becomes a path relative to it (`..` refused), and every file is opened beneath the
//! directory's descriptor (`node::beneath`), so a symlink in the tree, dangling or not,
//! cannot lead a read, a write, a listing or a grep outside it.
//!
//! Owns: the tools' JSON schemas, running one tool call, capping what goes back to the model.
//! Must not touch: approvals, UI chunks and redaction (the agent loop in `llm/` does them).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::shell::{run_bash, BashRun};
use super::RunOutcome;
use crate::node::beneath::Beneath;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Most bytes of file content or command output handed back to the model.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// Most bytes a tool keeps before redaction: the cap plus more than the longest secret
/// (32 KiB), so a secret across the cap is whole when it is redacted, and then cut away
/// (see [`finish`]).
const RAW_CAP: usize = OUTPUT_CAP + 64 * 1024;
const DEFAULT_BASH_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_LIST: usize = 2000;
const MAX_GREP: usize = 500;

/// Where tools run.
pub struct ToolContext<'a> {
    pub root: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    /// Where `bash` runs: the task's sandbox and network.
    pub confine: &'a crate::node::sandbox::Confinement,
    /// Cancelled to interrupt a running tool (stop or steer).
    pub abort: CancellationToken,
}

/// Whether `name` is one of the tools.
pub fn known(name: &str) -> bool {
    definitions()
        .iter()
        .any(|d| d["function"]["name"].as_str() == Some(name))
}

/// JSON schemas of the tools, in the OpenAI `tools` format.
pub fn definitions() -> Vec<Value> {
    let f = |name: &str, description: &str, params: Value| json!({"type": "function", "function": {"name": name, "description": description, "parameters": params}});
    vec![
        f(
            "bash",
            "Run a bash command in the working directory. Returns exit code and output (stdout and stderr).",
            json!({"type": "object", "properties": {
                "command": {"type": "string"},
                "timeout_secs": {"type": "integer", "description": "default 120"}
            }, "required": ["command"]}),
        ),
        f(
            "read_file",
            "Read a text file. Optional 1-based line offset and line limit.",
            json!({"type": "object", "properties": {
                "path": {"type": "string"}, "offset": {"type": "integer"}, "limit": {"type": "integer"}
            }, "required": ["path"]}),
        ),
        f(
            "write_file",
            "Create or overwrite a file with the given content.",
            json!({"type": "object", "properties": {
                "path": {"type": "string"}, "content": {"type": "string"}
            }, "required": ["path", "content"]}),
        ),
        f(
            "edit_file",
            "Replace one exact occurrence of old_string with new_string in a file.",
            json!({"type": "object", "properties": {
                "path": {"type": "string"}, "old_string": {"type": "string"}, "new_string": {"type": "string"}
            }, "required": ["path", "old_string", "new_string"]}),
        ),
        f(
            "list_files",
            "List files under a directory (default: the working directory), skipping .git.",
            json!({"type": "object", "properties": {
                "path": {"type": "string"}, "recursive": {"type": "boolean"}
            }}),
        ),
        f(
            "grep",
            "Find lines containing a fixed string in files under a path.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string"}, "path": {"type": "string"}
            }, "required": ["pattern"]}),
        ),
    ]
}

/// Tools that change nothing (may run without approval under `agent-decides`).
pub fn is_read_only(name: &str) -> bool {
    matches!(name, "read_file" | "list_files" | "grep")
}

/// Turns a tool's path argument into a path relative to `root`: an absolute path must name
/// something inside it, and `..` is refused. Opening it then stays beneath `root`.
pub fn confine(root: &Path, p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    let rel = if path.is_absolute() {
        let canon = root
            .canonicalize()
            .map_err(|e| format!("working directory unavailable: {e}"))?;
        path.strip_prefix(&canon)
            .or_else(|_| path.strip_prefix(root))
            .map_err(|_| format!("path {p:?} is outside the working directory"))?
            .to_path_buf()
    } else {
        path.to_path_buf()
    };
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("path {p:?} leaves the working directory"));
    }
    Ok(rel)
}

/// Says a refused open the way the model can act on.
fn io_error(what: &str, p: &Path, e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied && e.to_string().contains("outside") {
        format!(
            "path {:?} is outside the working directory: {e}",
            p.display()
        )
    } else {
        format!("cannot {what} {}: {e}", p.display())
    }
}

fn arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, String> {
    args[name]
        .as_str()
        .ok_or_else(|| format!("missing string argument {name:?}"))
}

/// Ends an output cut at [`RAW_CAP`], before redaction.
const RAW_CUT: &str = "\n[output truncated before redaction]";

/// What a tool keeps of a long output before redaction (marked, so [`finish`] knows a
/// secret may have been cut in two at its end).
fn cap(s: String) -> String {
    cut_with(s, RAW_CAP, |_| RAW_CUT.to_string())
}

fn cap_at(s: String, max: usize) -> String {
    cut_with(s, max, |cut| {
        format!("\n[output truncated: showing the first {cut} bytes]")
    })
}

/// `s` cut to `max` bytes (on a character boundary) and followed by `note(cut)`, if longer.
fn cut_with(mut s: String, max: usize, note: impl FnOnce(usize) -> String) -> String {
    if s.len() > max {
        let cut = crate::text::head(&s, max).len();
        s.truncate(cut);
        s.push_str(&note(cut));
    }
    s
}

/// A tool's result as the model and the stream get it: redacted first, then cut to
/// [`OUTPUT_CAP`], so a cut never leaves the first part of a secret behind. `redact` takes
/// a whole text; `redact_head` a text cut short, whose end may be the start of a secret
/// (it drops such an end).
pub fn finish(
    result: Result<Value, String>,
    redact: impl Fn(&str) -> String,
    redact_head: impl Fn(&str) -> String,
) -> Result<Value, String> {
    let one = |s: &str| -> String {
        let clean = match s.strip_suffix(RAW_CUT) {
            Some(head) => redact_head(head) + RAW_CUT,
            None => redact(s),
        };
        cap_at(clean, OUTPUT_CAP)
    };
    fn walk(v: &mut Value, one: &dyn Fn(&str) -> String) {
        match v {
            Value::String(s) => *s = one(s),
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, one)),
            Value::Object(m) => m.values_mut().for_each(|x| walk(x, one)),
            _ => {}
        }
    }
    match result {
        Ok(mut v) => {
            walk(&mut v, &one);
            Ok(v)
        }
        Err(e) => Err(one(&e)),
    }
}

/// Runs one tool; `Ok` is the output for the model, `Err` a message for a failed call.
pub async fn run(name: &str, args: &Value, ctx: &ToolContext<'_>) -> Result<Value, String> {
    match name {
        "bash" => bash(args, ctx).await,
        _ => {
            // The file tools read, write and walk the disk: off the reactor.
            let (name, args, root) = (name.to_string(), args.clone(), ctx.root.to_path_buf());
            tokio::task::spawn_blocking(move || file_tool(&name, &args, &root))
                .await
                .unwrap_or_else(|e| Err(format!("the tool failed: {e}")))
        }
    }
}

/// The tools that only touch files, run on a blocking thread.
fn file_tool(name: &str, args: &Value, root: &Path) -> Result<Value, String> {
    let b = Beneath::open_root(root).map_err(|e| format!("working directory unavailable: {e}"))?;
    match name {
        "read_file" => read_file(args, root, &b),
        "write_file" => write_file(args, root, &b),
        "edit_file" => edit_file(args, root, &b),
        "list_files" => list_files(args, root, &b),
        "grep" => grep(args, root, &b),
        other => Err(format!("unknown tool {other:?}")),
    }
}

fn read_file(args: &Value, root: &Path, b: &Beneath) -> Result<Value, String> {
    let rel = confine(root, arg(args, "path")?)?;
    let text = b
        .read_to_string(&rel)
        .map_err(|e| io_error("read", &rel, e))?;
    let offset = args["offset"].as_u64().unwrap_or(1).max(1) as usize;
    let limit = args["limit"].as_u64().map(|l| l as usize);
    let lines: Vec<&str> = text
        .lines()
        .skip(offset - 1)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    Ok(json!(cap(lines.join("\n"))))
}

fn write_file(args: &Value, root: &Path, b: &Beneath) -> Result<Value, String> {
    let p = arg(args, "path")?;
    let rel = confine(root, p)?;
    let content = arg(args, "content")?;
    b.write(&rel, content.as_bytes())
        .map_err(|e| io_error("write", &rel, e))?;
    Ok(json!(format!("wrote {} bytes to {p}", content.len())))
}

fn edit_file(args: &Value, root: &Path, b: &Beneath) -> Result<Value, String> {
    let p = arg(args, "path")?;
    let rel = confine(root, p)?;
    let (old, new) = (arg(args, "old_string")?, arg(args, "new_string")?);
    if old.is_empty() {
        return Err("old_string must not be empty".into());
    }
    let text = b
        .read_to_string(&rel)
        .map_err(|e| io_error("read", &rel, e))?;
    match text.matches(old).count() {
        0 => Err(format!("old_string not found in {p}")),
        1 => {
            b.write(&rel, text.replacen(old, new, 1).as_bytes())
                .map_err(|e| io_error("write", &rel, e))?;
            Ok(json!(format!("edited {p}")))
        }
        n => Err(format!(
            "old_string appears {n} times in {p}; include more surrounding text to make it unique"
        )),
    }
}

fn list_files(args: &Value, root: &Path, b: &Beneath) -> Result<Value, String> {
    let base = confine(root, args["path"].as_str().unwrap_or("."))?;
    let recursive = args["recursive"].as_bool().unwrap_or(true);
    let mut out = Vec::new();
    list(b, &base, Path::new(""), recursive, &mut out)?;
    out.sort();
    let truncated = out.len() > MAX_LIST;
    out.truncate(MAX_LIST);
    let mut text = out.join("\n");
    if truncated {
        text.push_str(&format!(
            "\n[more than {MAX_LIST} entries; list a subdirectory]"
        ));
    }
    Ok(json!(text))
}

fn grep(args: &Value, root: &Path, b: &Beneath) -> Result<Value, String> {
    let pattern = arg(args, "pattern")?;
    let base = confine(root, args["path"].as_str().unwrap_or("."))?;
    let is_file = b
        .open(&base, OFlag::O_RDONLY, Mode::empty())
        .and_then(|f| f.metadata())
        .map_err(|e| io_error("read", &base, e))?
        .is_file();
    // Paths of the files to search, relative to `base`.
    let mut files = Vec::new();
    let dir = if is_file {
        files.push(base.display().to_string());
        PathBuf::new()
    } else {
        list(b, &base, Path::new(""), true, &mut files)?;
        base
    };
    let files_capped = files.len() > MAX_LIST;
    let mut hits = Vec::new();
    'files: for f in files.iter().take(MAX_LIST).filter(|f| !f.ends_with('/')) {
        let Ok(text) = b.read_to_string(&dir.join(f)) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if line.contains(pattern) {
                hits.push(format!("{f}:{}:{line}", i + 1));
                if hits.len() >= MAX_GREP {
                    break 'files;
                }
            }
        }
    }
    // Say where the search stopped short, so the model does not take it as complete.
    if hits.len() >= MAX_GREP {
        hits.push(format!(
            "[stopped at {MAX_GREP} matches; use a narrower pattern or path]"
        ));
    }
    if files_capped {
        hits.push(format!(
            "[searched only the first {MAX_LIST} entries of {}; grep a subdirectory]",
            args["path"].as_str().unwrap_or(".")
        ));
    }
    Ok(json!(cap(hits.join("\n"))))
}

/// Lists `base/sub` beneath the root into `out` (paths relative to `base`, directories with a
/// trailing `/`). A symlink is listed as an entry when it resolves inside the tree, never
/// followed into, and left out when it leads outside.
fn list(
    b: &Beneath,
    base: &Path,
    sub: &Path,
    recursive: bool,
    out: &mut Vec<String>,
) -> Result<(), String> {
    let here = base.join(sub);
    let dir = b
        .open(&here, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty())
        .map_err(|e| io_error("list", &here, e))?;
    // Read the directory this descriptor holds, not whatever its path names by now.
    let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir));
    let Ok(rd) = std::fs::read_dir(fd_path) else {
        return Ok(());
    };
    for e in rd.flatten() {
        if out.len() > MAX_LIST {
            return Ok(());
        }
        let name = e.file_name();
        if name == ".git" {
            continue;
        }
        let rel = sub.join(&name);
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            out.push(format!("{}/", rel.display()));
            if recursive {
                // A subdirectory that cannot be read is left out, not the whole listing.
                let _ = list(b, base, &rel, true, out);
            }
        } else if !kind.is_symlink() || b.contains(&base.join(&rel)) {
            out.push(rel.display().to_string());
        }
    }
    Ok(())
}

async fn bash(args: &Value, ctx: &ToolContext<'_>) -> Result<Value, String> {
    let command = arg(args, "command")?;
    let timeout = args["timeout_secs"]
        .as_u64()
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_BASH_TIMEOUT);
    let abort = ctx.abort.child_token();
    let timer = {
        let abort = abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            abort.cancel();
        })
    };
    let mut output = String::new();
    let outcome = run_bash(
        BashRun {
            script: command,
            cwd: ctx.root,
            env: ctx.env,
            abort: abort.clone(),
            stop_grace: Duration::from_secs(1),
            confine: ctx.confine,
        },
        |s| {
            if output.len() <= RAW_CAP {
                output.push_str(&s);
            }
        },
    )
    .await;
    timer.abort();
    let output = cap(output);
    match outcome {
        RunOutcome::Exited(code) => Ok(json!({"exitCode": code, "output": output})),
        RunOutcome::Interrupted if ctx.abort.is_cancelled() => Err("interrupted".into()),
        RunOutcome::Interrupted => {
            Err(format!("timed out after {} s\n{output}", timeout.as_secs()))
        }
        RunOutcome::Failed(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(root: &Path) -> ToolContext<'_> {
        static ENV: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
        static OFF: std::sync::OnceLock<crate::node::sandbox::Confinement> =
            std::sync::OnceLock::new();
        ToolContext {
            root,
            env: ENV.get_or_init(BTreeMap::new),
            confine: OFF.get_or_init(crate::node::sandbox::Confinement::unconfined),
            abort: CancellationToken::new(),
        }
    }

    #[tokio::test]
    async fn tools_work_and_stay_inside_the_working_dir() {
        let dir = std::env::temp_dir().join(format!("viber-tools-{}", crate::crypto::random_u64()));
        let root = dir.join("work");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.join("outside.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.join("outside.txt"), root.join("link.txt")).unwrap();
        std::os::unix::fs::symlink(&dir, root.join("up")).unwrap();
        let c = ctx(&root);

        file_tools_read_write_and_edit(&c, &root).await;
        list_grep_and_bash(&c).await;
        paths_outside_are_refused(&c).await;
        assert_eq!(
            std::fs::read_to_string(dir.join("outside.txt")).unwrap(),
            "secret"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    async fn file_tools_read_write_and_edit(c: &ToolContext<'_>, root: &Path) {
        run(
            "write_file",
            &json!({"path": "src/a.txt", "content": "one\ntwo\nthree\n"}),
            c,
        )
        .await
        .unwrap();
        assert_eq!(
            run(
                "read_file",
                &json!({"path": "src/a.txt", "offset": 2, "limit": 1}),
                c
            )
            .await
            .unwrap(),
            json!("two")
        );
        run(
            "edit_file",
            &json!({"path": "src/a.txt", "old_string": "two", "new_string": "2"}),
            c,
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("src/a.txt")).unwrap(),
            "one\n2\nthree\n"
        );
        let e = run(
            "edit_file",
            &json!({"path": "src/a.txt", "old_string": "absent", "new_string": "x"}),
            c,
        )
        .await
        .unwrap_err();
        assert!(e.contains("not found"), "{e}");
        std::fs::write(root.join("dup.txt"), "x x").unwrap();
        let e = run(
            "edit_file",
            &json!({"path": "dup.txt", "old_string": "x", "new_string": "y"}),
            c,
        )
        .await
        .unwrap_err();
        assert!(e.contains("2 times"), "{e}");
    }

    /// After `file_tools_read_write_and_edit`.
    async fn list_grep_and_bash(c: &ToolContext<'_>) {
        let listing = run("list_files", &json!({}), c).await.unwrap();
        assert!(listing.as_str().unwrap().contains("src/a.txt"), "{listing}");
        let hits = run("grep", &json!({"pattern": "thr"}), c).await.unwrap();
        assert_eq!(hits, json!("src/a.txt:3:three"));
        let out = run("bash", &json!({"command": "echo hi; exit 3"}), c)
            .await
            .unwrap();
        assert_eq!(out, json!({"exitCode": 3, "output": "hi\n"}));
        let e = run("bash", &json!({"command": "sleep 5", "timeout_secs": 1}), c)
            .await
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    }

    async fn paths_outside_are_refused(c: &ToolContext<'_>) {
        for bad in [
            "../outside.txt",
            "link.txt",
            "up/outside.txt",
            "/etc/passwd",
            "src/../../outside.txt",
        ] {
            let e = run("read_file", &json!({"path": bad}), c)
                .await
                .unwrap_err();
            assert!(e.contains("outside") || e.contains("leaves"), "{bad}: {e}");
            let e = run("write_file", &json!({"path": bad, "content": "x"}), c)
                .await
                .unwrap_err();
            assert!(e.contains("outside") || e.contains("leaves"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn grep_says_when_it_searched_only_part_of_the_tree() {
        let root = std::env::temp_dir().join(format!("viber-grep-{}", crate::crypto::random_u64()));
        std::fs::create_dir_all(&root).unwrap();
        for i in 0..MAX_LIST + 20 {
            std::fs::write(root.join(format!("f{i:05}.txt")), "needle\n").unwrap();
        }
        let c = ctx(&root);
        let out = run("grep", &json!({"pattern": "needle"}), &c)
            .await
            .unwrap();
        let out = out.as_str().unwrap();
        assert!(
            out.contains(&format!("[stopped at {MAX_GREP} matches")),
            "{out}"
        );
        let out = run("grep", &json!({"pattern": "absent"}), &c)
            .await
            .unwrap();
        assert!(
            out.as_str().unwrap().contains("searched only the first"),
            "{out}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    /// Issue 12, items 1 and 2: a repository that ships symlinks out of the tree cannot get
    /// a read-only tool to show what they point to, nor a write to land outside.
    #[tokio::test]
    async fn symlinks_out_of_the_tree_leak_nothing_and_take_no_writes() {
        let dir = std::env::temp_dir().join(format!("viber-links-{}", crate::crypto::random_u64()));
        let root = dir.join("repo");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(dir.join("id_ed25519"), "PRIVATE KEY MATERIAL").unwrap();
        std::fs::create_dir_all(dir.join("home")).unwrap();
        std::fs::write(dir.join("home/notes"), "PRIVATE KEY MATERIAL too").unwrap();
        std::fs::write(root.join("src/ok.txt"), "nothing here").unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap()
        };
        link(&dir.join("id_ed25519"), "leak.txt");
        link(&dir.join("home"), "homedir");
        link(&dir.join("planted"), "dangling");
        link(Path::new("src/ok.txt"), "inside-link.txt");
        let c = ctx(&root);

        let hits = run("grep", &json!({"pattern": "PRIVATE"}), &c)
            .await
            .unwrap();
        assert_eq!(hits, json!(""), "grep followed a link out");
        let e = run(
            "grep",
            &json!({"pattern": "PRIVATE", "path": "leak.txt"}),
            &c,
        )
        .await
        .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let e = run(
            "grep",
            &json!({"pattern": "PRIVATE", "path": "homedir"}),
            &c,
        )
        .await
        .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let listing = run("list_files", &json!({}), &c).await.unwrap();
        let listing = listing.as_str().unwrap();
        assert!(
            !listing.contains("leak.txt") && !listing.contains("notes"),
            "{listing}"
        );
        assert!(listing.contains("inside-link.txt"), "{listing}");
        assert_eq!(
            run("read_file", &json!({"path": "inside-link.txt"}), &c)
                .await
                .unwrap(),
            json!("nothing here")
        );

        let e = run(
            "write_file",
            &json!({"path": "dangling", "content": "x"}),
            &c,
        )
        .await
        .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        assert!(!dir.join("planted").exists());
        let e = run(
            "write_file",
            &json!({"path": "homedir/new", "content": "x"}),
            &c,
        )
        .await
        .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        assert!(!dir.join("home/new").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Issue 12, item 6: a secret that straddles the output cap is redacted whole before the
    /// cut, so no first part of it survives.
    #[test]
    fn output_is_redacted_before_it_is_cut() {
        let secret = "sk-live-0123456789abcdef".to_string();
        let r = crate::secrets::Redactor::new(std::slice::from_ref(&secret));
        let text = format!("{}{secret} and more", "a".repeat(OUTPUT_CAP - 6));
        let head = |s: &str| r.clone().push(s);
        let out = finish(Ok(json!({"output": text})), |s| r.redact_str(s), head).unwrap();
        let out = out["output"].as_str().unwrap();
        assert!(
            !out.contains("sk-liv") && !out.contains("sk-"),
            "{}",
            &out[OUTPUT_CAP - 20..]
        );
        assert!(out.len() < OUTPUT_CAP + 100);
        let e = finish(Err(format!("failed: {secret}")), |s| r.redact_str(s), head).unwrap_err();
        assert!(!e.contains(&secret), "{e}");
        // Cut before redaction in the middle of a secret, with the redacted text then short
        // enough that the final cut does not reach it: no part of the secret survives.
        let many = format!("{secret}\n").repeat(RAW_CAP / (secret.len() + 1) + 1);
        let out = finish(Ok(json!(cap(many))), |s| r.redact_str(s), head).unwrap();
        let out = out.as_str().unwrap();
        assert!(out.len() < OUTPUT_CAP, "the final cut did not apply");
        assert!(!out.contains("sk-"), "{}", &out[out.len() - 80..]);
    }
}
