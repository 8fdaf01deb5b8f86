//! Reliable task frames on their way to the gateway.
//!
//! Every frame that must not be lost (`task:started`, `task:stream-chunk`, `task:completed`,
//! `task:error`) gets the next per-task sequence number, is appended to the task's session
//! log (`<data>/agents/<node>/sessions/<task>.jsonl`) and is kept until the gateway
//! acknowledges it (`task:ack` is cumulative).
//!
//! No file I/O happens under the outbox's lock: [`Outbox::push`] only appends the log line to
//! the task's pending bytes; the runtime's log writer takes them in batches
//! ([`Outbox::take_log_writes`]), writes them on its own thread and reports them written
//! ([`Outbox::logs_written`]). A frame is sent only once its line is in the log, so the log
//! is always ahead of what the gateway has seen. Spilled frames are read back from the log by
//! the caller of [`Outbox::unsent`], off the reactor ([`SpillRead::read`]). A new connection starts with a fresh
//! [`SendCursor`], so everything unacknowledged is sent again; the gateway drops duplicates
//! by (task, seq).
//!
//! Memory is bounded: past [`MEMORY_CAP`] frames held in memory, a task's newer frames stay
//! only in its session log and are read back from there when they are sent.
//!
//! Must not touch: what a frame says (the runtime's emitter builds them) or the connection
//! (the runtime hands out [`Outbox::unsent`] frames and passes acknowledgements in).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::protocol::Frame;

/// Frames kept in memory across all tasks before new ones spill to disk.
pub const MEMORY_CAP: usize = 50_000;
/// Frames read back from a session log per call.
const SPILL_BATCH: usize = 2_000;

/// One line of a session log. Its frame is read with [`Frame::decode`] (a chunk's raw JSON
/// cannot come through serde's tagged enums).
#[derive(Deserialize)]
struct LogLine<'a> {
    seq: u64,
    #[serde(borrow)]
    frame: &'a serde_json::value::RawValue,
}

#[derive(Serialize)]
struct LogLineRef<'a> {
    seq: u64,
    frame: &'a Frame,
}

/// Frames of one task that are not yet acknowledged.
struct TaskQueue {
    next_seq: u64,
    acked: Option<u64>,
    /// In-memory frames, oldest first; all older than any spilled frame.
    mem: VecDeque<(u64, Frame)>,
    /// Frames that live only in the log: from (seq, byte offset) to `last`.
    spill: Option<Spill>,
    log: Arc<File>,
    log_path: PathBuf,
    /// Bytes of the log, written or pending.
    log_len: u64,
    /// Log bytes not yet written.
    pending: Vec<u8>,
    /// Frames with a lower seq are written to the log (and may be sent).
    written_seq: u64,
    /// The final frame was pushed; the queue is dropped once it is acknowledged.
    finished: bool,
}

#[derive(Clone, Copy)]
struct Spill {
    first_offset: u64,
    last_seq: u64,
}

/// What has been sent on the current connection, per task: (highest seq sent, log offset to
/// continue reading spilled frames from).
#[derive(Default)]
pub struct SendCursor {
    sent: HashMap<String, (u64, u64)>,
    /// The connection has been told the state of every binding.
    pub synced: bool,
}

pub struct Outbox {
    tasks: HashMap<String, TaskQueue>,
    /// Task ids in the order they were opened, so resends go oldest task first.
    order: Vec<String>,
    in_memory: usize,
    cap: usize,
}

impl Outbox {
    pub fn new(cap: usize) -> Outbox {
        Outbox {
            tasks: HashMap::new(),
            order: Vec::new(),
            in_memory: 0,
            cap,
        }
    }

    /// Starts the queue (and session log) of a task.
    pub fn open(&mut self, task_id: &str, log_path: &Path) -> std::io::Result<()> {
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(log_path)?;
        let log_len = log.metadata()?.len();
        // A log left by an earlier process of this node: continue its numbering.
        let next_seq = if log_len > 0 {
            read_spilled(log_path, 0, 0, u64::MAX, usize::MAX)?
                .0
                .last()
                .map(|(s, _)| s + 1)
                .unwrap_or(0)
        } else {
            0
        };
        self.tasks.insert(
            task_id.to_string(),
            TaskQueue {
                next_seq,
                acked: None,
                mem: VecDeque::new(),
                spill: None,
                log: Arc::new(log),
                log_path: log_path.to_path_buf(),
                log_len,
                pending: Vec::new(),
                written_seq: next_seq,
                finished: false,
            },
        );
        self.order.push(task_id.to_string());
        Ok(())
    }

    pub fn contains(&self, task_id: &str) -> bool {
        self.tasks.contains_key(task_id)
    }

    /// Task ids with unacknowledged frames or still open.
    pub fn task_ids(&self) -> Vec<String> {
        self.order.clone()
    }

    /// Appends a reliable frame built from the next sequence number. `last` marks the task's
    /// final frame.
    pub fn push(
        &mut self,
        task_id: &str,
        last: bool,
        build: impl FnOnce(u64) -> Frame,
    ) -> std::io::Result<u64> {
        let in_memory = self.in_memory;
        let cap = self.cap;
        let Some(q) = self.tasks.get_mut(task_id) else {
            return Err(std::io::Error::other(format!(
                "task {task_id} has no outbox"
            )));
        };
        let seq = q.next_seq;
        q.next_seq += 1;
        let frame = build(seq);
        let mut line = serde_json::to_vec(&LogLineRef { seq, frame: &frame })
            .map_err(std::io::Error::other)?;
        line.push(b'\n');
        let offset = q.log_len;
        q.log_len += line.len() as u64;
        q.pending.extend_from_slice(&line);
        q.finished |= last;
        match &mut q.spill {
            Some(s) => s.last_seq = seq,
            None if in_memory < cap => {
                q.mem.push_back((seq, frame));
                self.in_memory += 1;
            }
            None => {
                q.spill = Some(Spill {
                    first_offset: offset,
                    last_seq: seq,
                });
            }
        }
        Ok(seq)
    }

    /// Appends a non-frame record (an agent conversation message) to a task's session log.
    pub fn note(&mut self, task_id: &str, record: &serde_json::Value) -> std::io::Result<()> {
        let Some(q) = self.tasks.get_mut(task_id) else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(&serde_json::json!({ "conversation": record }))
            .map_err(std::io::Error::other)?;
        line.push(b'\n');
        q.log_len += line.len() as u64;
        q.pending.extend_from_slice(&line);
        Ok(())
    }

    /// Takes every task's pending log bytes, to be written in order by one writer.
    pub fn take_log_writes(&mut self) -> Vec<LogWrite> {
        self.tasks
            .iter_mut()
            .filter(|(_, q)| !q.pending.is_empty())
            .map(|(id, q)| LogWrite {
                task_id: id.clone(),
                file: q.log.clone(),
                bytes: std::mem::take(&mut q.pending),
                upto_seq: q.next_seq,
            })
            .collect()
    }

    /// A log write failed after `written` of its bytes: the rest goes back in front of the
    /// task's pending bytes, to be tried again; its frames are not sent until then (spilled
    /// ones exist nowhere else).
    pub fn log_write_failed(&mut self, w: LogWrite, written: usize) {
        if let Some(q) = self.tasks.get_mut(&w.task_id) {
            let mut rest = w.bytes;
            rest.drain(..written);
            rest.extend_from_slice(&q.pending);
            q.pending = rest;
        }
    }

    /// The log writes up to `upto_seq` of a task are on disk: those frames may be sent.
    pub fn logs_written(&mut self, task_id: &str, upto_seq: u64) {
        if let Some(q) = self.tasks.get_mut(task_id) {
            q.written_seq = q.written_seq.max(upto_seq);
        }
    }

    /// The gateway stored everything of `task_id` up to `seq`.
    pub fn ack(&mut self, task_id: &str, seq: u64) {
        let Some(q) = self.tasks.get_mut(task_id) else {
            return;
        };
        q.acked = Some(q.acked.map_or(seq, |a| a.max(seq)));
        while q.mem.front().is_some_and(|(s, _)| *s <= seq) {
            q.mem.pop_front();
            self.in_memory -= 1;
        }
        if q.spill.is_some_and(|s| s.last_seq <= seq) {
            q.spill = None;
        }
        if q.finished && q.next_seq > 0 && seq + 1 >= q.next_seq {
            self.tasks.remove(task_id);
            self.order.retain(|t| t != task_id);
        }
    }

    /// Frames not yet sent on the connection `cursor` belongs to, oldest task first, and the
    /// spilled frames to read back from the logs after them (each task's spilled frames
    /// come after its in-memory ones). Only frames already written to the log are given.
    pub fn unsent(&mut self, cursor: &mut SendCursor) -> (Vec<Frame>, Vec<SpillRead>) {
        let mut out = Vec::new();
        let mut reads = Vec::new();
        for task_id in &self.order {
            let Some(q) = self.tasks.get_mut(task_id) else {
                continue;
            };
            let floor = q.acked.map(|a| a + 1).unwrap_or(0);
            let entry = cursor.sent.entry(task_id.clone()).or_insert((u64::MAX, 0));
            let next = if entry.0 == u64::MAX {
                floor
            } else {
                (entry.0 + 1).max(floor)
            };
            for (seq, frame) in q
                .mem
                .iter()
                .filter(|(s, _)| *s >= next && *s < q.written_seq)
            {
                out.push(frame.clone());
                entry.0 = *seq;
            }
            if let Some(spill) = q.spill {
                let last_seq = spill.last_seq.min(q.written_seq.saturating_sub(1));
                if next <= last_seq && q.written_seq > 0 {
                    reads.push(SpillRead {
                        task_id: task_id.clone(),
                        path: q.log_path.clone(),
                        offset: entry.1.max(spill.first_offset),
                        min_seq: next,
                        last_seq,
                    });
                }
            }
        }
        (out, reads)
    }

    #[cfg(test)]
    pub fn frames_in_memory(&self) -> usize {
        self.in_memory
    }
}

/// Pending log bytes of one task, taken by the log writer.
pub struct LogWrite {
    pub task_id: String,
    file: Arc<File>,
    bytes: Vec<u8>,
    /// Frames below this seq are in `bytes` or already written.
    pub upto_seq: u64,
}

impl LogWrite {
    /// Appends the bytes to the log (blocking). On an error, returns how many were written
    /// with it: the rest goes back to the task with [`Outbox::log_write_failed`].
    pub fn write(&self) -> Result<(), (usize, std::io::Error)> {
        let mut done = 0;
        while done < self.bytes.len() {
            match (&*self.file).write(&self.bytes[done..]) {
                Ok(0) => return Err((done, std::io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err((done, e)),
            }
        }
        Ok(())
    }
}

/// Spilled frames of one task to read back from its log.
pub struct SpillRead {
    task_id: String,
    path: PathBuf,
    offset: u64,
    min_seq: u64,
    /// The last spilled frame written to the log.
    last_seq: u64,
}

impl SpillRead {
    /// Reads the next batch (blocking); returns the frames and whether more remain. The
    /// cursor remembers where to continue.
    pub fn read(&self, cursor: &mut SendCursor) -> std::io::Result<(Vec<Frame>, bool)> {
        // Stops before the first frame past `last_seq`: the log writer may have written more
        // since, and the cursor must not move past frames it did not hand out.
        let (frames, end) = read_spilled(
            &self.path,
            self.offset,
            self.min_seq,
            self.last_seq,
            SPILL_BATCH,
        )?;
        let entry = cursor
            .sent
            .entry(self.task_id.clone())
            .or_insert((u64::MAX, 0));
        let progressed = !frames.is_empty() || end > self.offset;
        let mut out = Vec::with_capacity(frames.len());
        for (seq, frame) in frames {
            out.push(frame);
            entry.0 = seq;
        }
        entry.1 = end;
        // More only when this read got somewhere: otherwise the next log write says so.
        let behind = entry.0 == u64::MAX || entry.0 < self.last_seq;
        Ok((out, progressed && behind))
    }
}

/// Reads up to `limit` frames with `min_seq <= seq <= max_seq` from a session log starting at
/// `offset`; returns them and the offset to continue from (the start of the first line not
/// read).
fn read_spilled(
    path: &Path,
    offset: u64,
    min_seq: u64,
    max_seq: u64,
    limit: usize,
) -> std::io::Result<(Vec<(u64, Frame)>, u64)> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(f);
    let mut pos = offset;
    let mut out = Vec::new();
    // Bytes, not text: a line cut in the middle of a character (a full disk, a crash) must
    // end the read, not fail it.
    let mut line = Vec::new();
    while out.len() < limit {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        // Other lines (the agent's conversation, a line left broken by a crash) are not
        // frames.
        let Some((seq, frame)) = serde_json::from_slice::<LogLine>(&line)
            .ok()
            .and_then(|l| Some((l.seq, Frame::decode(l.frame.get()).ok()?)))
        else {
            pos += n as u64;
            continue;
        };
        if seq > max_seq {
            break;
        }
        pos += n as u64;
        if seq >= min_seq {
            out.push((seq, frame));
        }
    }
    Ok((out, pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(task: &str, seq: u64) -> Frame {
        Frame::chunk(
            task,
            seq,
            &json!({"type": "text-delta", "id": "o", "delta": format!("{seq}\n")}),
        )
    }

    fn seqs(frames: &[Frame]) -> Vec<u64> {
        frames
            .iter()
            .map(|f| match f {
                Frame::TaskStreamChunk { seq, .. } => *seq,
                Frame::TaskCompleted { seq, .. } => *seq,
                _ => panic!(),
            })
            .collect()
    }

    /// What the log writer does: writes the pending bytes and reports them written.
    fn write_logs(ob: &mut Outbox) {
        for w in ob.take_log_writes() {
            w.write().map_err(|(_, e)| e).unwrap();
            ob.logs_written(&w.task_id, w.upto_seq);
        }
    }

    fn drain(ob: &mut Outbox, cur: &mut SendCursor) -> Vec<u64> {
        let mut all = Vec::new();
        loop {
            let (frames, reads) = ob.unsent(cur);
            all.extend(seqs(&frames));
            let mut more = false;
            for r in reads {
                let (frames, m) = r.read(cur).unwrap();
                all.extend(seqs(&frames));
                more |= m;
            }
            if !more {
                return all;
            }
        }
    }

    #[test]
    fn resends_unacked_and_spills_past_the_cap() {
        let dir =
            std::env::temp_dir().join(format!("viber-outbox-{}", crate::crypto::random_u64()));
        let mut ob = Outbox::new(10);
        ob.open("t", &dir.join("t.jsonl")).unwrap();
        for _ in 0..5000 {
            ob.push("t", false, |s| chunk("t", s)).unwrap();
        }
        assert_eq!(ob.frames_in_memory(), 10);
        let mut cur = SendCursor::default();
        // Nothing is sent before it is in the log.
        assert!(drain(&mut ob, &mut cur).is_empty());
        write_logs(&mut ob);
        assert_eq!(drain(&mut ob, &mut cur), (0..5000).collect::<Vec<_>>());
        // Nothing new on the same connection.
        assert!(drain(&mut ob, &mut cur).is_empty());
        ob.push("t", false, |s| chunk("t", s)).unwrap();
        assert!(drain(&mut ob, &mut cur).is_empty());
        write_logs(&mut ob);
        assert_eq!(drain(&mut ob, &mut cur), vec![5000]);

        // A partial ack, then a reconnect: everything after the ack again, in order.
        ob.ack("t", 2999);
        let mut cur = SendCursor::default();
        assert_eq!(drain(&mut ob, &mut cur), (3000..5001).collect::<Vec<_>>());

        // The final frame; once acked, the task is gone.
        ob.push("t", true, |seq| Frame::TaskCompleted {
            task_id: "t".into(),
            seq,
            exit_code: Some(0),
            result: None,
        })
        .unwrap();
        write_logs(&mut ob);
        ob.ack("t", 5000);
        assert!(ob.contains("t"));
        ob.ack("t", 5001);
        assert!(!ob.contains("t"));
        assert_eq!(ob.frames_in_memory(), 0);
        let lines = std::fs::read_to_string(dir.join("t.jsonl"))
            .unwrap()
            .lines()
            .count();
        assert_eq!(lines, 5002);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A spilled read must not move past frames written to the log after `unsent()` took
    /// its snapshot (the log writer runs meanwhile): they are sent on the next round.
    #[test]
    fn a_spilled_read_never_skips_frames_written_meanwhile() {
        let dir =
            std::env::temp_dir().join(format!("viber-outbox-{}", crate::crypto::random_u64()));
        let mut ob = Outbox::new(10);
        ob.open("t", &dir.join("t.jsonl")).unwrap();
        for _ in 0..50 {
            ob.push("t", false, |s| chunk("t", s)).unwrap();
        }
        write_logs(&mut ob);
        let mut cur = SendCursor::default();
        let (mut got, reads) = ob.unsent(&mut cur);
        // The writer puts 20 more lines on disk before the read, not yet reported written.
        for _ in 0..20 {
            ob.push("t", false, |s| chunk("t", s)).unwrap();
        }
        let pending = ob.take_log_writes();
        for w in &pending {
            w.write().map_err(|(_, e)| e).unwrap();
        }
        for r in reads {
            got.extend(r.read(&mut cur).unwrap().0);
        }
        assert_eq!(seqs(&got), (0..50).collect::<Vec<_>>());
        for w in &pending {
            ob.logs_written(&w.task_id, w.upto_seq);
        }
        assert_eq!(drain(&mut ob, &mut cur), (50..70).collect::<Vec<_>>());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A log ending in half a character (a full disk, a crash) is read up to that line.
    #[test]
    fn a_log_cut_inside_a_character_reads_up_to_the_cut() {
        let dir =
            std::env::temp_dir().join(format!("viber-outbox-{}", crate::crypto::random_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl");
        let line = serde_json::to_vec(&LogLineRef {
            seq: 0,
            frame: &chunk("t", 0),
        })
        .unwrap();
        let mut bytes = line.clone();
        bytes.push(b'\n');
        bytes.extend_from_slice(b"{\"seq\":1,\"frame\":\"\xe2\x82");
        std::fs::write(&path, &bytes).unwrap();
        let (frames, end) = read_spilled(&path, 0, 0, u64::MAX, 10).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(end, line.len() as u64 + 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
