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

use aho_corasick::{AhoCorasick, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

/// What a redacted secret is replaced with.
pub const MASK: &str = "[REDACTED]";
/// Secrets shorter than this are not redacted (see the module docs).
pub const MIN_SECRET_LEN: usize = 4;
/// Encoded forms shorter than this are not used as patterns (too likely by chance).
const MIN_PATTERN_LEN: usize = 6;

#[derive(Clone)]
pub struct Redactor {
    ac: Option<AhoCorasick>,
    /// Every proper, non-empty prefix of every pattern.
    prefixes: HashSet<Vec<u8>>,
    max_len: usize,
    held: Vec<u8>,
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
    let bytes = secret.as_bytes();
    for engine in [&STANDARD, &URL_SAFE] {
        out.push(engine.encode(bytes));
    }
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
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut prefixes = HashSet::new();
        for p in &patterns {
            for k in 1..p.len() {
                prefixes.insert(p.as_bytes()[..k].to_vec());
            }
        }
        let ac = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .expect("patterns build")
        });
        Redactor {
            ac,
            prefixes,
            max_len,
            held: Vec::new(),
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
        let hold_from = self.hold_from();
        let out = self.redact_prefix(hold_from);
        String::from_utf8(out).expect("cuts fall on character boundaries")
    }

    /// Flushes what was held back at the end of the stream.
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
        let len = self.held.len();
        let start = len.saturating_sub(self.max_len.saturating_sub(1));
        (start..len)
            .find(|&p| self.prefixes.contains(&self.held[p..]))
            .unwrap_or(len)
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
        // What remains could still hold a match at its start only if it is a prefix;
        // anything before such a prefix was emitted above.
        if !self.held.is_empty() && !self.prefixes.contains(&self.held[..]) {
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
}
