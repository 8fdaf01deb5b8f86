//! Fuzzes the streaming redactor: for any secrets and any output split at any points, the
//! result equals redacting the whole output at once, and no secret long enough to be
//! redacted survives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use viber::secrets::redact::{Redactor, MIN_SECRET_LEN};

fuzz_target!(|data: &[u8]| {
    // Layout: [n_secrets][len, bytes]... [cut positions as bytes...] 0xFF [output]
    let Some((&n, mut rest)) = data.split_first() else { return };
    let mut secrets = Vec::new();
    for _ in 0..(n % 4) {
        let Some((&len, r)) = rest.split_first() else { return };
        let len = (len as usize % 12).min(r.len());
        secrets.push(String::from_utf8_lossy(&r[..len]).into_owned());
        rest = &r[len..];
    }
    let Some(sep) = rest.iter().position(|&b| b == 0xFF) else { return };
    let cuts: Vec<usize> = rest[..sep].iter().map(|&b| b as usize).collect();
    let output = String::from_utf8_lossy(&rest[sep + 1..]).into_owned();

    let template = Redactor::new(&secrets);
    let mut whole = template.clone();
    let expected = whole.push(&output) + &whole.finish();

    let mut points: Vec<usize> = cuts
        .into_iter()
        .map(|c| c % (output.len() + 1))
        .filter(|&c| output.is_char_boundary(c))
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut r = template.clone();
    let mut got = String::new();
    let mut last = 0;
    for p in points {
        got.push_str(&r.push(&output[last..p]));
        last = p;
    }
    got.push_str(&r.push(&output[last..]));
    got.push_str(&r.finish());
    assert_eq!(got, expected);
    // A secret made of mask characters can reappear where masks meet the text around
    // them without having been in the output; every other secret must be gone.
    let mask_chars = |s: &str| s.chars().any(|c| "[REDACT]".contains(c));
    for s in secrets.iter().filter(|s| s.len() >= MIN_SECRET_LEN && !mask_chars(s)) {
        assert!(!expected.contains(s.as_str()), "secret survived");
    }
});
