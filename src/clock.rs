//! Wall-clock helpers: milliseconds since the Unix epoch and RFC 3339 rendering.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Renders epoch milliseconds as `2026-11-21T18:39:17.123Z` (UTC).
pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses epoch milliseconds, `YYYY-MM-DD`, or RFC 3339 in UTC (`...Z`) or with an offset.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if s.get(4..5) != Some("-")
        || s.get(7..8) != Some("-")
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
    {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    if s.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(s.get(10..11), Some("T") | Some(" ")) {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        millis = format!("{:0<3}", &digits[..digits.len().min(3)])
            .parse()
            .ok()?;
        rest = &frac[digits.len()..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            // `get`, not slicing: a multi-byte character must not panic the parser.
            let part = |r: std::ops::Range<usize>| o.get(r).and_then(|x| x.parse::<i64>().ok());
            sign * (part(1..3)? * 60 + part(4..6)?)
        }
        _ => return None,
    };
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60) * 1000 + millis)
}

/// (year, month, day) to days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A periodic job's wait: true at its next tick (the first one at once), false once `stop`
/// is cancelled.
pub async fn next_tick(
    tick: &mut tokio::time::Interval,
    stop: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        _ = tick.tick() => true,
        _ = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_known_instants() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            super::iso8601(1_795_286_357_123),
            "2026-11-21T18:39:17.123Z"
        );
    }

    #[test]
    fn parses_what_it_renders_and_common_forms() {
        for ms in [0, 951_782_400_000, 1_795_286_357_123] {
            assert_eq!(super::parse_time(&super::iso8601(ms)), Some(ms));
        }
        assert_eq!(super::parse_time("2026-11-21"), Some(1_795_219_200_000));
        assert_eq!(
            super::parse_time("2026-11-21T20:39:17+02:00"),
            Some(1_795_286_357_000)
        );
        assert_eq!(super::parse_time("1795286357123"), Some(1_795_286_357_123));
        assert_eq!(super::parse_time("yesterday"), None);
        assert_eq!(super::parse_time("2026-13-01"), None);
        // Multi-byte characters where digits belong are refused, not a panic (issue 12, 15).
        for bad in [
            "2026-11-21T20:39:17+0é:0",
            "2026-11-21T20:39:17+00:é",
            "2026-11-21T20:39:1é",
            "2026-1é-21",
            "2026-11-21T20:39:17.5é",
            "éééééééééééééééééééé",
        ] {
            assert_eq!(super::parse_time(bad), None, "{bad}");
        }
    }
}
