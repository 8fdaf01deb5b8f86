//! Server-Sent Events parsing (our task streams, and LLM providers' streams).

/// One parsed Server-Sent Event.
#[derive(Debug, Default, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser (handles events split across reads, CRLF, comments).
#[derive(Default)]
pub struct SseParser {
    buf: String,
    cur: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, text: &str) -> Vec<SseEvent> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=nl).collect();
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
}
