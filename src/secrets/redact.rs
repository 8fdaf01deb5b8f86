//! A streaming redactor: replaces every occurrence of a secret, and of its common encodings,
//! in output that arrives in arbitrary pieces.
//!
//! Each secret contributes several patterns: the value itself, its JSON-escaped form, its
//! URL-encoded form, and its base64 forms (standard and URL-safe alphabets, at each of the
//! three alignments it can have inside a longer base64 string, as in an HTTP Basic header).
//! Values shorter than [`MIN_SECRET_LEN`] are not redacted: masking every `a1` in a build log
//! hides everything and protects nothing. Such secrets are reported at configuration time.
//!
//! Streaming: [`Redactor::push`] emits everything that can no longer become part of a match
//! and holds back the shortest tail that still could (a proper prefix of some pattern). The
//! output is therefore the same however the input is split, and no complete secret is ever
//! emitted. [`Redactor::finish`] flushes the tail at the end of a stream.

use std::collections::HashSet;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

/// What a redacted secret is replaced with.
pub const MASK: &str = "[REDACTED]";
/// Secrets shorter than this are not redacted (see the module docs).
pub const MIN_SECRET_LEN: usize = 4;
/// Encoded forms shorter than this are not used as patterns (too likely by chance).
const MIN_PATTERN_LEN: usize = 6;

/// A streaming redactor. Cloning it is cheap (the patterns are shared), so one template
/// serves every part of a task's output.
#[derive(Clone)]
pub struct Redactor {
    ac: Option<Arc<AhoCorasick>>,
    /// The patterns' prefixes, to know what to hold back.
    prefixes: Arc<Prefixes>,
    held: Vec<u8>,
    /// The prefix automaton's state after `held`.
    state: u32,
}

const ROOT: u32 = 0;
const NONE: u32 = u32::MAX;

/// The patterns' prefixes as a trie with failure links (Aho-Corasick's goto and fail), so
/// "the longest tail of the output that could still become a match" is one automaton state.
/// Memory is linear in the patterns' total length; the set of every prefix it replaces was
/// quadratic (about a gigabyte for the patterns of one 32 KiB secret).
#[derive(Default)]
struct Prefixes {
    /// Per node: its first edge, its failure link, its depth.
    nodes: Vec<(u32, u32, u32)>,
    /// Edges: (byte, child, next edge of the same node).
    edges: Vec<(u8, u32, u32)>,
}

impl Prefixes {
    fn new(patterns: &[String]) -> Prefixes {
        let mut t = Prefixes {
            nodes: vec![(NONE, ROOT, 0)],
            edges: Vec::new(),
        };
        for p in patterns {
            let mut node = ROOT;
            for &b in p.as_bytes() {
                node = match t.child(node, b) {
                    Some(c) => c,
                    None => t.add_child(node, b),
                };
            }
        }
        t.link();
        t
    }

    fn child(&self, node: u32, b: u8) -> Option<u32> {
        let mut e = self.nodes[node as usize].0;
        while e != NONE {
            let (byte, child, next) = self.edges[e as usize];
            if byte == b {
                return Some(child);
            }
            e = next;
        }
        None
    }

    fn add_child(&mut self, node: u32, b: u8) -> u32 {
        let child = self.nodes.len() as u32;
        let depth = self.nodes[node as usize].2 + 1;
        self.nodes.push((NONE, ROOT, depth));
        let first = self.nodes[node as usize].0;
        self.edges.push((b, child, first));
        self.nodes[node as usize].0 = (self.edges.len() - 1) as u32;
        child
    }

    /// Failure links, breadth first: a node's link is the longest proper suffix of its
    /// string that is also a prefix.
    fn link(&mut self) {
        let mut queue = std::collections::VecDeque::from([ROOT]);
        while let Some(node) = queue.pop_front() {
            let mut e = self.nodes[node as usize].0;
            while e != NONE {
                let (b, child, next) = self.edges[e as usize];
                // The longest proper suffix of the child's string that is a prefix: where
                // the node's own failure link goes on `b` (the root's children fail to it).
                let fail = if node == ROOT {
                    ROOT
                } else {
                    self.step(self.nodes[node as usize].1, b)
                };
                self.nodes[child as usize].1 = fail;
                queue.push_back(child);
                e = next;
            }
        }
    }

    /// The state after `b`: the longest suffix so far that is a prefix of a pattern.
    fn step(&self, mut state: u32, b: u8) -> u32 {
        loop {
            if let Some(c) = self.child(state, b) {
                return c;
            }
            if state == ROOT {
                return ROOT;
            }
            state = self.nodes[state as usize].1;
        }
    }

    fn feed(&self, bytes: &[u8]) -> u32 {
        bytes.iter().fold(ROOT, |s, &b| self.step(s, b))
    }

    /// Whether the node stands for a proper prefix (something can follow it).
    fn open(&self, node: u32) -> bool {
        self.nodes[node as usize].0 != NONE
    }

    /// The length of the longest tail, ending in `state`, that is a proper prefix.
    fn proper_tail(&self, mut state: u32) -> usize {
        while state != ROOT && !self.open(state) {
            state = self.nodes[state as usize].1;
        }
        self.nodes[state as usize].2 as usize
    }

    /// Whether `bytes` as a whole is a proper prefix of a pattern.
    fn is_proper_prefix(&self, bytes: &[u8]) -> bool {
        let mut node = ROOT;
        for &b in bytes {
            match self.child(node, b) {
                Some(c) => node = c,
                None => return false,
            }
        }
        node != ROOT && self.open(node)
    }
}

/// The patterns that stand for `secret` in output.
pub fn patterns_for(secret: &str) -> Vec<String> {
    if secret.len() < MIN_SECRET_LEN {
        return Vec::new();
    }
    let mut out = vec![secret.to_string()];
    let json = serde_json::to_string(secret).unwrap_or_default();
    out.push(json[1..json.len() - 1].to_string());
    out.push(url_encode(secret));
    out.push(url_encode(secret).to_lowercase_escapes());
    let bytes = secret.as_bytes();
    for engine in [&STANDARD, &URL_SAFE] {
        out.push(engine.encode(bytes));
    }
    // What `base64` prints for the value: wrapped at 76 columns.
    out.push(wrap(&STANDARD.encode(bytes), 76));
    // Hex, as `xxd -p` prints it (wrapped at 60 columns) and unwrapped, both cases.
    let hex = crate::crypto::hex(bytes);
    out.push(wrap(&hex, 60));
    out.push(hex.to_uppercase());
    out.push(hex);
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        out.extend(base64_cores(engine, bytes));
    }
    let mut seen = HashSet::new();
    out.retain(|p| p.len() >= MIN_PATTERN_LEN.min(secret.len()) && seen.insert(p.clone()));
    out
}

/// The base64 characters determined by `secret` alone when it starts at each of the three
/// byte offsets (mod 3) inside a longer encoded string.
fn base64_cores(engine: &impl Engine, secret: &[u8]) -> Vec<String> {
    (0..3)
        .filter_map(|offset| {
            let mut buf = vec![0u8; offset];
            buf.extend_from_slice(secret);
            let enc = engine.encode(&buf);
            let first = (8 * offset).div_ceil(6);
            let last = 8 * (offset + secret.len()) / 6; // exclusive
            (last > first + MIN_PATTERN_LEN).then(|| enc[first..last].to_string())
        })
        .collect()
}

/// `s` with a newline after every `width` characters (the last line unterminated).
fn wrap(s: &str, width: usize) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / width);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && i % width == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    out
}

trait LowercaseEscapes {
    /// `%2F` as `%2f`: the same URL encoding with lowercase hex digits.
    fn to_lowercase_escapes(&self) -> String;
}

impl LowercaseEscapes for String {
    fn to_lowercase_escapes(&self) -> String {
        let mut out = String::with_capacity(self.len());
        let mut escape = 0;
        for c in self.chars() {
            if c == '%' {
                escape = 2;
                out.push(c);
            } else if escape > 0 {
                escape -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Redactor {
    /// A redactor for these secret values (short or empty ones are ignored).
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Redactor {
        let mut patterns: Vec<String> = secrets
            .iter()
            .flat_map(|s| patterns_for(s.as_ref()))
            .collect();
        patterns.sort();
        patterns.dedup();
        let ac = (!patterns.is_empty()).then(|| {
            Arc::new(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    // Not a DFA: its build is far from linear for long patterns (seconds
                    // for one 2 KiB secret), and an NFA scans output fast enough.
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(&patterns)
                    .expect("patterns build"),
            )
        });
        Redactor {
            ac,
            prefixes: Arc::new(Prefixes::new(&patterns)),
            held: Vec::new(),
            state: ROOT,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    /// Feeds output; returns what is safe to emit now.
    pub fn push(&mut self, input: &str) -> String {
        if self.ac.is_none() {
            return input.to_string();
        }
        self.held.extend_from_slice(input.as_bytes());
        self.state = input
            .bytes()
            .fold(self.state, |st, b| self.prefixes.step(st, b));
        let hold_from = self.hold_from();
        let out = self.redact_prefix(hold_from);
        String::from_utf8(out).expect("cuts fall on character boundaries")
    }

    /// Whether some output is held back (it may be the start of a secret).
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Flushes what was held back at the end of the stream (or after a pause in it: the
    /// redactor goes on afterwards as if the stream started again).
    pub fn finish(&mut self) -> String {
        if self.ac.is_none() {
            return String::from_utf8(std::mem::take(&mut self.held)).unwrap_or_default();
        }
        let len = self.held.len();
        let out = self.redact_prefix(len);
        String::from_utf8(out).expect("cuts fall on character boundaries")
    }

    /// Redacts one complete string.
    pub fn redact_str(&self, s: &str) -> String {
        match &self.ac {
            None => s.to_string(),
            Some(ac) => ac.replace_all(s, &vec![MASK; ac.patterns_len()]),
        }
    }

    /// The smallest position from which the held bytes are a proper prefix of a pattern
    /// (and so may still become a match); `held.len()` when there is none.
    fn hold_from(&self) -> usize {
        self.held.len() - self.prefixes.proper_tail(self.state)
    }

    /// Emits `held[..upto]` with matches that start before `upto` replaced, and keeps the
    /// rest. A match that starts before `upto` is final: a longer one from the same start
    /// would make that start a held-back prefix.
    fn redact_prefix(&mut self, upto: usize) -> Vec<u8> {
        let ac = self.ac.as_ref().expect("checked");
        let mut out = Vec::with_capacity(upto + MASK.len());
        let mut last = 0;
        for m in ac.find_iter(&self.held[..]) {
            if m.start() >= upto {
                break;
            }
            out.extend_from_slice(&self.held[last..m.start()]);
            out.extend_from_slice(MASK.as_bytes());
            last = m.end();
        }
        let cut = upto.max(last);
        out.extend_from_slice(&self.held[last..cut]);
        self.held.drain(..cut);
        // The automaton again from what is left (at most a pattern's length).
        self.state = self.prefixes.feed(&self.held);
        // What remains could still hold a match at its start only if it is a prefix;
        // anything before such a prefix was emitted above.
        if !self.held.is_empty() && !self.prefixes.is_proper_prefix(&self.held) {
            let again = self.hold_from();
            let more = self.redact_prefix(again);
            out.extend(more);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(secrets: &[&str], input: &str) -> String {
        pieces(&Redactor::new(secrets), &[input])
    }

    fn pieces(template: &Redactor, parts: &[&str]) -> String {
        let mut r = template.clone();
        let mut out = String::new();
        for p in parts {
            out.push_str(&r.push(p));
        }
        out.push_str(&r.finish());
        out
    }

    fn char_cuts(s: &str) -> Vec<usize> {
        (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect()
    }

    #[test]
    fn replaces_the_value_and_its_encodings() {
        let s = "s3cr3t/val+ue=é";
        let json = serde_json::to_string(s).unwrap();
        let b64 = STANDARD.encode(s);
        let basic = STANDARD.encode(format!("user:{s}"));
        let input = format!(
            "a {s} b {json} c {} d {b64} e Basic {basic} f",
            url_encode(s)
        );
        let out = whole(&[s], &input);
        assert!(!out.contains(s), "{out}");
        assert!(!out.contains(&b64), "{out}");
        assert!(!out.contains(&url_encode(s)), "{out}");
        assert!(
            out.starts_with("a [REDACTED] b \"[REDACTED]\" c [REDACTED] d [REDACTED] e Basic "),
            "{out}"
        );
        assert!(!out.contains(&basic[4..basic.len() - 4]), "{out}");
    }

    #[test]
    fn short_secrets_are_left_alone() {
        assert_eq!(whole(&["ab", ""], "abc ab"), "abc ab");
        assert!(Redactor::new(&["abc"]).is_empty());
    }

    /// The property: for every way of splitting the output in two (and many in three), the
    /// result equals the unsplit result, and no secret survives.
    #[test]
    fn splitting_anywhere_changes_nothing() {
        let secrets = ["abcd", "abcdef", "xyzzy-42", "pässwörd", "aaaa"];
        let template = Redactor::new(&secrets);
        let mut cases = vec![
            "abcdef".to_string(),
            "abcdabcdef abcde abc".to_string(),
            "aaaaaaaaa xyzzy-4 xyzzy-42!".to_string(),
            "pässwör pässwörd pässwördpässwörd".to_string(),
            format!(
                "{} and {}",
                STANDARD.encode("xyzzy-42"),
                serde_json::to_string("pässwörd").unwrap()
            ),
        ];
        // Random mixtures of secret fragments and noise.
        let alphabet = [
            "ab", "cd", "ef", "a", "b", "xyz", "zy-", "42", "pä", "ss", "wö", "rd", " ", "\n", "é",
        ];
        for _ in 0..120 {
            let n = (crate::crypto::random_u64() % 12 + 1) as usize;
            let s: String = (0..n)
                .map(|_| alphabet[(crate::crypto::random_u64() % alphabet.len() as u64) as usize])
                .collect();
            cases.push(s);
        }
        for input in &cases {
            let expected = pieces(&template, &[input]);
            for s in &secrets {
                assert!(!expected.contains(s), "{s:?} survives in {expected:?}");
            }
            let cuts = char_cuts(input);
            for &i in &cuts {
                assert_eq!(
                    pieces(&template, &[&input[..i], &input[i..]]),
                    expected,
                    "{input:?} at {i}"
                );
            }
            if input.len() <= 20 {
                for &i in &cuts {
                    for &j in cuts.iter().filter(|&&j| j >= i) {
                        let got = pieces(&template, &[&input[..i], &input[i..j], &input[j..]]);
                        assert_eq!(got, expected, "{input:?} at {i},{j}");
                    }
                }
            }
            // Byte-by-byte (character by character) as well.
            let chars: Vec<String> = input.chars().map(|c| c.to_string()).collect();
            let refs: Vec<&str> = chars.iter().map(|s| s.as_str()).collect();
            assert_eq!(pieces(&template, &refs), expected, "{input:?} char by char");
        }
    }

    #[test]
    fn holds_back_only_a_possible_prefix() {
        let mut r = Redactor::new(&["topsecret"]);
        assert_eq!(r.push("line 1\n"), "line 1\n");
        assert_eq!(r.push("value: top"), "value: ");
        assert_eq!(r.push("secret!\n"), "[REDACTED]!\n");
        assert_eq!(r.push("tops"), "");
        assert_eq!(r.finish(), "tops");
    }

    /// Issue 12, item 8: the encodings a shell makes of a secret without trying.
    #[test]
    fn lowercase_url_wrapped_base64_and_hex_forms_are_caught() {
        let secret = "p@ss/w0rd+with spaces and more than fifty-seven bytes of secret";
        let lower_url = url_encode(secret).to_lowercase_escapes();
        assert_ne!(lower_url, url_encode(secret));
        let wrapped = wrap(&STANDARD.encode(secret), 76);
        assert!(wrapped.contains('\n'));
        let hex = crate::crypto::hex(secret.as_bytes());
        let xxd = wrap(&hex, 60);
        for form in [lower_url, wrapped, hex.clone(), hex.to_uppercase(), xxd] {
            let out = whole(&[secret], &format!("before\n{form}\nafter"));
            assert_eq!(out, "before\n[REDACTED]\nafter", "{form:?}");
        }
    }

    /// Issue 12, item 9: a 32 KiB secret builds in linear memory and redacts a stream.
    #[test]
    fn a_large_secret_is_handled_in_linear_memory() {
        let secret: String = (0..32 * 1024)
            .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
            .collect();
        let r = Redactor::new(&[&secret]);
        let total: usize = patterns_for(&secret).iter().map(|p| p.len()).sum();
        assert!(r.prefixes.nodes.len() <= total + 1);
        let input = format!("head {secret} tail");
        let parts: Vec<&str> = input
            .as_bytes()
            .chunks(1000)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        assert_eq!(pieces(&r, &parts), "head [REDACTED] tail");
    }
}
