//! Server-Sent Events parsing (our task streams, and LLM providers' streams).

/// One parsed Server-Sent Event.
#[derive(Debug, Default, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Most bytes one event may hold (its lines together). A stream that sends more without
/// ending the event is refused instead of buffered without bound.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// A stream sent an event larger than [`MAX_EVENT_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTooLarge;

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the stream sent an event larger than {} MiB",
            MAX_EVENT_BYTES >> 20
        )
    }
}

impl std::error::Error for EventTooLarge {}

/// Incremental SSE parser (handles events split across reads, CRLF, comments). It buffers
/// bytes and decodes whole lines, so a UTF-8 character split between two network reads
/// stays whole. Memory is bounded by [`MAX_EVENT_BYTES`].
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    cur: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, text: &str) -> Result<Vec<SseEvent>, EventTooLarge> {
        self.push_bytes(text.as_bytes())
    }

    /// Feeds the bytes of one network read; returns the events it completed.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, EventTooLarge> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(i) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
            let nl = self.scanned + i;
            let line = String::from_utf8_lossy(&self.buf[start..nl]).into_owned();
            start = nl + 1;
            self.scanned = start;
            if let Some(ev) = self.line(line.trim_end_matches('\r')) {
                out.push(ev);
            }
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() + self.cur.data.len() > MAX_EVENT_BYTES {
            *self = SseParser::default();
            return Err(EventTooLarge);
        }
        Ok(out)
    }

    /// Applies one line; returns the event it completed, if any.
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let done = self.has_data.then(|| std::mem::take(&mut self.cur));
            self.cur = SseEvent::default();
            self.has_data = false;
            return done;
        }
        if line.starts_with(':') {
            return None;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "id" => self.cur.id = Some(value.to_string()),
            "event" => self.cur.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.cur.data.push('\n');
                }
                self.cur.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_events_and_comments() {
        let mut p = SseParser::default();
        let mut all = p.push("id: 1\ndata: {\"a\"").unwrap();
        all.extend(
            p.push(":1}\n\n: keepalive\n\nid: 2\r\ndata: x\r\n\r\ndata: [DONE]\n\n")
                .unwrap(),
        );
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].id.as_deref(), Some("1"));
        assert_eq!(all[0].data, "{\"a\":1}");
        assert_eq!(all[1].data, "x");
        assert_eq!(all[2].data, "[DONE]");
    }

    #[test]
    fn a_character_split_between_reads_stays_whole() {
        let text = "data: a😀b\n\n".as_bytes();
        let cut = text.iter().position(|b| *b >= 0xf0).unwrap() + 2;
        let mut p = SseParser::default();
        assert!(p.push_bytes(&text[..cut]).unwrap().is_empty());
        let events = p.push_bytes(&text[cut..]).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a😀b");
    }

    #[test]
    fn an_event_that_never_ends_is_refused_not_buffered() {
        let mut p = SseParser::default();
        let piece = vec![b'x'; 1 << 20];
        assert!(p.push(":comment\ndata: ").unwrap().is_empty());
        let mut refused = false;
        for _ in 0..=MAX_EVENT_BYTES >> 20 {
            if p.push_bytes(&piece).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
        // Many data lines of one event count together.
        let mut p = SseParser::default();
        let line = format!("data: {}\n", "y".repeat(1 << 20));
        let refused = (0..=MAX_EVENT_BYTES >> 20).any(|_| p.push(&line).is_err());
        assert!(refused);
        // After a refusal the parser starts over cleanly.
        assert_eq!(p.push("data: ok\n\n").unwrap()[0].data, "ok");
    }
}
