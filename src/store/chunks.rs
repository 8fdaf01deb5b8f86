//! A task's stored output: its chunks kept as runs (one row holds a run of consecutive
//! chunks of one task as a JSON array), written by the batch writer's transaction and read
//! back chunk by chunk (replay, approvals, a thread's text); and reading a chunk's fields as
//! JSON reads them.

use std::borrow::Cow;
use std::sync::Arc;

use rusqlite::params;

use super::tasks::BatchChunk;
use super::{Cached, Store};

impl Store {
    /// How much output a task stored: (chunks, bytes).
    pub async fn task_output_size(&self, task_id: String) -> anyhow::Result<(u64, u64)> {
        self.read(move |c| {
            c.row(
                // A run's text is its chunks, a comma between each two, in brackets.
                "SELECT coalesce(sum(last_seq - first_seq + 1), 0),
                        coalesce(sum(length(CAST(chunks AS BLOB)) - (last_seq - first_seq + 1) - 1), 0)
                 FROM task_chunk_runs WHERE task_id = ?1",
                [task_id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
        })
        .await
    }

    /// Chunks of a task with `seq > after`, in order, at most `limit`.
    pub async fn chunks_after(
        &self,
        task_id: String,
        after: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<(u64, String)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.fold_chunks_after(task_id, after, Vec::new(), move |out, seq, chunk| {
            out.push((seq, chunk.to_string()));
            out.len() < limit as usize
        })
        .await
    }

    /// Hands the chunks of a task with `seq > after` to `each` in order, on the reading
    /// thread, with `acc`, until it returns false; returns `acc`. A reader that makes
    /// something of the chunks (a stream's events) reads them without a copy of each.
    pub async fn fold_chunks_after<B, F>(
        &self,
        task_id: String,
        after: i64,
        mut acc: B,
        mut each: F,
    ) -> anyhow::Result<B>
    where
        B: Send + 'static,
        F: FnMut(&mut B, u64, &str) -> bool + Send + 'static,
    {
        self.read(move |c| {
            each_chunk(c, &task_id, after, |seq, chunk| each(&mut acc, seq, chunk))?;
            Ok(acc)
        })
        .await
    }

    /// The approval-related chunks of a task (see [`APPROVAL_CHUNK_TYPES`]) as (seq, chunk),
    /// in order (to derive what awaits an answer).
    pub async fn approval_chunks(&self, task_id: String) -> anyhow::Result<Vec<(u64, String)>> {
        self.read(move |c| {
            let mut out = Vec::new();
            each_chunk(c, &task_id, -1, |seq, chunk| {
                // Parsed only when one of the types appears in it at all.
                if APPROVAL_CHUNK_TYPES.iter().any(|t| chunk.contains(t))
                    && chunk_type(chunk).is_some_and(|t| APPROVAL_CHUNK_TYPES.contains(&&*t))
                {
                    out.push((seq, chunk.to_string()));
                }
                true
            })?;
            Ok(out)
        })
        .await
    }

    /// The text a task produced (its text deltas, in order), at most `limit` bytes from the
    /// end. `unstored` are chunks accepted but not yet stored, as (seq, chunk) in order, read
    /// before this call (`TaskHub::unstored`): those past the stored ones are added, so a
    /// running task's text is as new as its stream.
    pub async fn task_text(
        &self,
        task_id: String,
        limit: usize,
        unstored: Vec<(u64, Arc<str>)>,
    ) -> anyhow::Result<String> {
        self.read(move |c| {
            let mut out = String::new();
            let mut add = |chunk: &str| {
                if chunk.contains("text-delta") {
                    if let Some([Some(kind), Some(delta)]) = string_fields(chunk, ["type", "delta"])
                    {
                        if kind == "text-delta" {
                            out.push_str(&delta);
                        }
                    }
                }
            };
            let mut last = -1;
            each_chunk(c, &task_id, -1, |seq, chunk| {
                add(chunk);
                last = seq as i64;
                true
            })?;
            for (_, chunk) in unstored.iter().filter(|(seq, _)| *seq as i64 > last) {
                add(chunk);
            }
            if out.len() > limit {
                let mut cut = out.len() - limit;
                while !out.is_char_boundary(cut) {
                    cut += 1;
                }
                out = out[cut..].to_string();
            }
            Ok(out)
        })
        .await
    }
}

/// A chunk's `type`: borrowed from `chunk` unless it is spelled with escapes. Of a `type`
/// given twice the last counts, as for every other reader of a chunk (a `Value`, a
/// browser's `JSON.parse`); None when the chunk is not an object with a string `type`.
pub fn chunk_type(chunk: &str) -> Option<Cow<'_, str>> {
    let [kind] = string_fields(chunk, ["type"])?;
    kind
}

/// The string fields `keys` of a JSON object, in one pass, each borrowed unless spelled
/// with escapes, the last of a repeated key. None when `chunk` is not an object or one of
/// the fields is not a string.
pub(super) fn string_fields<'a, const N: usize>(
    chunk: &'a str,
    keys: [&'static str; N],
) -> Option<[Option<Cow<'a, str>>; N]> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    struct Fields<const N: usize>([&'static str; N]);
    impl<'de, const N: usize> Visitor<'de> for Fields<N> {
        type Value = [Option<Cow<'de, str>>; N];
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a chunk object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = [const { None }; N];
            while let Some(key) = map.next_key::<Str<'de>>()? {
                match self.0.iter().position(|k| *k == key.0) {
                    Some(i) => out[i] = Some(map.next_value::<Str<'de>>()?.0),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(chunk);
    de.deserialize_map(Fields(keys)).ok()
}

/// A JSON string, borrowed from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Str<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The chunk types [`Store::approval_chunks`] reads: a tool call, the request to approve it,
/// the answer.
pub const APPROVAL_CHUNK_TYPES: [&str; 3] = [
    "tool-input-available",
    "tool-approval-request",
    "tool-approval-response",
];

/// Most chunks in one stored run, and most bytes of their JSON (a run may pass it by its
/// last chunk): large enough that a run costs a fraction of what as many rows did, small
/// enough that a reader after one chunk parses little it does not want.
const RUN_CHUNKS: usize = 512;
pub(super) const RUN_BYTES: usize = 256 * 1024;

/// Stores chunks as runs: each run of consecutive chunks of one task is one row, its chunks
/// a JSON array. Chunks at or below what a task has stored already (a resend) are skipped,
/// so the first text of a chunk is the one kept.
pub(super) fn insert_runs(
    tx: &rusqlite::Transaction<'_>,
    chunks: &[BatchChunk],
) -> rusqlite::Result<()> {
    let mut stored = tx.prepare_cached(
        "SELECT coalesce(max(last_seq), -1) FROM task_chunk_runs WHERE task_id = ?1",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO task_chunk_runs (task_id, first_seq, last_seq, chunks)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    let grouped = by_task(chunks);
    let mut rest = &grouped[..];
    while let Some((task, _, _)) = rest.first().copied() {
        let last: i64 = stored.query_row([&**task], |r| r.get(0))?;
        // This task's consecutive chunks from here; the next task (or a gap) starts a run
        // of its own.
        let n = 1 + rest
            .windows(2)
            .take_while(|w| w[1].0 == w[0].0 && w[1].1 == w[0].1 + 1)
            .count();
        let (same, after) = rest.split_at(n);
        rest = after;
        let new = same.iter().skip_while(|c| c.1 as i64 <= last);
        let mut run = String::new();
        let (mut from, mut count) = (0, 0);
        for (_, seq, chunk) in new {
            if count == 0 {
                from = *seq;
                run.push('[');
            } else {
                run.push(',');
            }
            run.push_str(chunk);
            count += 1;
            if count == RUN_CHUNKS || run.len() >= RUN_BYTES {
                run.push(']');
                insert.execute(params![task, from as i64, *seq as i64, run])?;
                run.clear();
                count = 0;
            }
        }
        if count > 0 {
            run.push(']');
            let to = from + count as u64 - 1;
            insert.execute(params![task, from as i64, to as i64, run])?;
        }
    }
    Ok(())
}

/// A batch's chunks with each task's together, in the order they came (a batch holds the
/// frames of many tasks as they arrived, each task's in seq order).
fn by_task(chunks: &[BatchChunk]) -> Vec<&BatchChunk> {
    let Some(first) = chunks.first() else {
        return Vec::new();
    };
    if chunks
        .iter()
        .all(|c| Arc::ptr_eq(&c.0, &first.0) || c.0 == first.0)
    {
        return chunks.iter().collect();
    }
    let mut index: std::collections::HashMap<&str, usize> = Default::default();
    let mut groups: Vec<Vec<&BatchChunk>> = Vec::new();
    for c in chunks {
        let i = *index.entry(&c.0).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(c);
    }
    groups.concat()
}

/// Calls `each` with the stored chunks of `task_id` after `after`, in order, until it
/// returns false.
fn each_chunk(
    c: &rusqlite::Connection,
    task_id: &str,
    after: i64,
    mut each: impl FnMut(u64, &str) -> bool,
) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached(
        "SELECT first_seq, chunks FROM task_chunk_runs WHERE task_id = ?1 AND last_seq > ?2
         ORDER BY last_seq",
    )?;
    let mut rows = st.query(params![task_id, after])?;
    let mut bounds = Vec::new();
    while let Some(row) = rows.next()? {
        let first = row.get::<_, i64>(0)? as u64;
        let text = row.get_ref(1)?.as_str()?;
        if !split_run(text, &mut bounds) {
            // Not as insert_runs writes a run: the parser says what is wrong with it.
            let e = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text)
                .err()
                .map_or_else(
                    || "a run of chunks that does not split".into(),
                    |e| e.into(),
                );
            return Err(rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                e,
            ));
        }
        for (seq, &(from, to)) in (first..).zip(&bounds) {
            if seq as i64 > after && !each(seq, &text[from..to]) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Splits a stored run (`[c1,c2,...]`) into its chunks, as byte ranges of `text` put in
/// `bounds`, without parsing them again: they were parsed when they came, and
/// [`insert_runs`] joined them. Strings are skipped whole (a `\` escapes the byte after
/// it), brackets and braces matched, and the run split at the commas outside all of them;
/// what lies between is not checked again. False when the text is not shaped so (cut
/// short, unbalanced, nested deeper than serde_json reads). About three times cheaper
/// than a parse, which was most of the cost of replaying a stream.
fn split_run(text: &str, bounds: &mut Vec<(usize, usize)>) -> bool {
    bounds.clear();
    let b = text.as_bytes();
    let trimmed = |mut from: usize, mut to: usize| {
        while from < to && is_json_space(b[from]) {
            from += 1;
        }
        while to > from && is_json_space(b[to - 1]) {
            to -= 1;
        }
        (from < to).then_some((from, to))
    };
    // insert_runs writes a run with nothing around its brackets.
    if b.len() < 2 || b[0] != b'[' || b[b.len() - 1] != b']' {
        return false;
    }
    let end = b.len() - 1;
    let (mut i, mut start) = (1, 1);
    // What is open, the innermost in the lowest bit (set for a brace), and how many.
    let (mut open, mut depth) = (0u128, 0u32);
    while i < end {
        match b[i] {
            b'"' => loop {
                // `i` is at the opening quote or an escape's second byte: on to the next
                // quote or backslash.
                match memchr::memchr2(b'"', b'\\', &b[i + 1..end]) {
                    None => return false,
                    Some(k) if b[i + 1 + k] == b'"' => {
                        i += 1 + k;
                        break;
                    }
                    Some(k) => {
                        i += 2 + k;
                        if i >= end {
                            return false;
                        }
                    }
                }
            },
            c @ (b'[' | b'{') => {
                if depth == u128::BITS {
                    return false;
                }
                open = open << 1 | u128::from(c == b'{');
                depth += 1;
            }
            c @ (b']' | b'}') => {
                if depth == 0 || (open & 1 == 1) != (c == b'}') {
                    return false;
                }
                open >>= 1;
                depth -= 1;
            }
            b',' if depth == 0 => {
                let Some(chunk) = trimmed(start, i) else {
                    return false;
                };
                bounds.push(chunk);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return false;
    }
    match trimmed(start, end) {
        Some(chunk) => bounds.push(chunk),
        // A comma with nothing after it.
        None if !bounds.is_empty() => return false,
        // `[]`.
        None => {}
    }
    true
}

/// JSON's whitespace.
fn is_json_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::value::RawValue;
    use serde_json::Value;

    use super::split_run;

    fn split(text: &str) -> Option<Vec<&str>> {
        let mut bounds = Vec::new();
        split_run(text, &mut bounds).then(|| bounds.iter().map(|&(a, b)| &text[a..b]).collect())
    }

    fn parsed(text: &str) -> Option<Vec<&str>> {
        let run: Vec<&RawValue> = serde_json::from_str(text).ok()?;
        Some(run.iter().map(|c| c.get()).collect())
    }

    #[test]
    fn runs_split_where_the_parser_splits_them() {
        for text in [
            "[]",
            "[1]",
            r#"[{"type":"text-delta","delta":"a,b]}["},[1,[2,{}]],"\\\"",null,-1.5e3]"#,
            r#"[{"a" : [ ] } ,	"é,ü" ,
                true]"#,
            r#"[{"k\"":"\\"},"\u005d,"]"#,
            &format!("[{}1{},2]", "[".repeat(127), "]".repeat(127)),
        ] {
            assert_eq!(split(text), parsed(text), "{text}");
        }
    }

    #[test]
    fn runs_not_shaped_as_written_do_not_split() {
        for text in [
            "",
            "[",
            "]",
            "x",
            " [1]",
            "[1] ",
            "[1,]",
            "[,1]",
            "[1,,2]",
            "[ , ]",
            r#"["a]"#,
            r#"["a\"]"#,
            r#"["\"#,
            "[{]",
            "[1}]",
            "[[1]",
            "[1]]",
            "{}",
            r#"["\]"#,
            "[[}]",
            "[{]}]",
            &format!("[{}1{}]", "[".repeat(129), "]".repeat(129)),
        ] {
            assert_eq!(split(text), None, "{text:?}");
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let text = prop_oneof![any::<String>(), "[a-z,\\[\\]{}\"\\\\: é]*"];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text.clone().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((text.clone(), inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Chunks written compact or pretty (whitespace inside them), joined as insert_runs
        /// joins them, split back into the same texts.
        #[test]
        fn any_run_splits_into_its_chunks(chunks in prop::collection::vec((json(), any::<bool>()), 0..8)) {
            let texts: Vec<String> = chunks
                .iter()
                .map(|(v, pretty)| if *pretty { serde_json::to_string_pretty(v) } else { serde_json::to_string(v) }.unwrap())
                .collect();
            let run = format!("[{}]", texts.join(","));
            let want: Vec<&str> = texts.iter().map(String::as_str).collect();
            prop_assert_eq!(split(&run), Some(want));
            prop_assert_eq!(split(&run), parsed(&run));
        }
    }
}
