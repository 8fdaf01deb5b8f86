//! Server-Sent Events parsing (our task streams, and LLM providers' streams).

/// One parsed Server-Sent Event.
#[derive(Debug, Default, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser (handles events split across reads, CRLF, comments). It buffers
/// bytes and decodes whole lines, so a UTF-8 character split between two network reads
/// stays whole.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    cur: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, text: &str) -> Vec<SseEvent> {
        self.push_bytes(text.as_bytes())
    }

    /// Feeds the bytes of one network read; returns the events it completed.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    out.push(std::mem::take(&mut self.cur));
                }
                self.cur = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
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
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_events_and_comments() {
        let mut p = SseParser::default();
        let mut all = p.push("id: 1\ndata: {\"a\"");
        all.extend(p.push(":1}\n\n: keepalive\n\nid: 2\r\ndata: x\r\n\r\ndata: [DONE]\n\n"));
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
        assert!(p.push_bytes(&text[..cut]).is_empty());
        let events = p.push_bytes(&text[cut..]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a😀b");
    }
}
