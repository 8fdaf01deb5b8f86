//! A terminal's scrollback: the last [`RING_BYTES`](crate::protocol::terminal::RING_BYTES)
//! of its output, addressed by absolute offsets in the whole stream.
//!
//! Must not touch: who reads it (attachments keep their own cursors) or what the bytes are.

use std::collections::VecDeque;

/// What one read from a cursor gives.
#[derive(Debug, PartialEq, Eq)]
pub struct Read {
    /// Where `data` starts (the cursor, or the ring's start when the cursor fell behind).
    pub offset: u64,
    pub data: Vec<u8>,
    /// The cursor, when the bytes from there to `offset` are gone (or the cursor was past
    /// the end: the stream restarted).
    pub skipped_from: Option<u64>,
}

pub struct Ring {
    buf: VecDeque<u8>,
    /// The offset of `buf[0]`.
    start: u64,
    cap: usize,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            buf: VecDeque::new(),
            start: 0,
            cap,
        }
    }

    /// The offset after the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let bytes = if bytes.len() > self.cap {
            self.start += (self.buf.len() + bytes.len() - self.cap) as u64;
            self.buf.clear();
            &bytes[bytes.len() - self.cap..]
        } else {
            let over = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
            self.buf.drain(..over);
            self.start += over as u64;
            bytes
        };
        self.buf.extend(bytes);
    }

    /// Up to `max` bytes from `cursor`; None when there is nothing new.
    pub fn read(&self, cursor: u64, max: usize) -> Option<Read> {
        let (offset, skipped_from) = if cursor < self.start || cursor > self.end() {
            (self.start, Some(cursor))
        } else {
            (cursor, None)
        };
        let from = (offset - self.start) as usize;
        let n = (self.buf.len() - from).min(max);
        if n == 0 && skipped_from.is_none() {
            return None;
        }
        let data = self.buf.range(from..from + n).copied().collect();
        Some(Read {
            offset,
            data,
            skipped_from,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_what_they_have_not_seen_and_skip_what_is_gone() {
        let mut r = Ring::new(8);
        r.push(b"hello");
        assert_eq!(r.read(0, 3).unwrap().data, b"hel");
        assert_eq!(r.read(3, 100).unwrap().data, b"lo");
        assert_eq!(r.read(5, 100), None);
        r.push(b"world!");
        assert_eq!(r.end(), 11);
        // 3 bytes fell out: a cursor at 0 skips to 3.
        let read = r.read(0, 100).unwrap();
        assert_eq!((read.offset, read.skipped_from), (3, Some(0)));
        assert_eq!(read.data, b"loworld!");
        // A cursor past the end (the stream restarted) starts again at the ring's start.
        let read = r.read(50, 2).unwrap();
        assert_eq!((read.offset, read.skipped_from), (3, Some(50)));
        // A push larger than the ring keeps its tail.
        r.push(b"0123456789");
        assert_eq!(r.end(), 21);
        assert_eq!(r.read(13, 100).unwrap().data, b"23456789");
    }
}
