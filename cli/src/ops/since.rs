//! `--since`: when a backfill starts.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant (RFC 3339, a date meaning UTC midnight, or Unix seconds) or a span back from now
/// (`90m`, `36h`, `7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    At(i64),
    Ago(i64),
}

impl Since {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if let Some(span) = parse_span(raw) {
            return span.map(Since::Ago);
        }
        if let Ok(seconds) = raw.parse::<i64>() {
            return Ok(Since::At(seconds));
        }
        let timestamp = if raw.len() == 10 {
            format!("{raw}T00:00:00Z")
        } else {
            raw.to_owned()
        };
        OffsetDateTime::parse(&timestamp, &Rfc3339)
            .map(|at| Since::At(at.unix_timestamp()))
            .map_err(|_| {
                format!("{raw:?} is not a date (2026-11-01), an RFC 3339 time (2026-11-01T08:00:00Z), Unix seconds or a span (90m, 36h, 7d)")
            })
    }

    /// The start of the window in Unix seconds; it must not lie in the future.
    pub fn resolve(self, now: i64) -> Result<i64, String> {
        let start = match self {
            Since::At(at) => at,
            Since::Ago(span) => now.saturating_sub(span),
        };
        if start > now {
            return Err("--since lies in the future".into());
        }
        Ok(start)
    }
}

/// `None` when `raw` is not shaped like a span at all, so other forms get their turn.
fn parse_span(raw: &str) -> Option<Result<i64, String>> {
    let unit = raw.chars().last().filter(|c| c.is_ascii_alphabetic())?;
    let digits = &raw[..raw.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Some(Err(format!("unknown unit {unit:?} in {raw:?}: use s, m, h, d or w"))),
    };
    Some(
        digits
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(|| format!("{raw:?} is too long a span")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000;

    #[test]
    fn spans_count_back_from_now() {
        assert_eq!(Since::parse("90m"), Ok(Since::Ago(5400)));
        assert_eq!(Since::parse("36h"), Ok(Since::Ago(129_600)));
        assert_eq!(Since::parse("7d").unwrap().resolve(NOW), Ok(NOW - 604_800));
        assert_eq!(Since::parse("2w"), Ok(Since::Ago(1_209_600)));
    }

    #[test]
    fn instants_are_dates_times_or_unix_seconds() {
        assert_eq!(Since::parse("2026-11-01"), Ok(Since::At(1_793_491_200)));
        assert_eq!(Since::parse("2026-11-01T08:00:00Z"), Ok(Since::At(1_793_520_000)));
        assert_eq!(Since::parse("2026-11-01T09:00:00+01:00"), Ok(Since::At(1_793_520_000)));
        assert_eq!(Since::parse("1793491200"), Ok(Since::At(1_793_491_200)));
    }

    #[test]
    fn nonsense_and_the_future_are_refused() {
        for bad in ["", "yesterday", "5y", "d", "2026-13-01", "99999999999999999999d"] {
            assert!(Since::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Since::At(NOW + 1).resolve(NOW).is_err());
    }
}
