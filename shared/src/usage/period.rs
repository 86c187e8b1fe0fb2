//! Which billing period a report counts in: Stripe bills a meter event in the period its
//! timestamp falls in, so the local counter does too.

use super::ledger::AccountUsage;
use crate::store::Access;

/// A billing period, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

/// The period of `timestamp` for the account: its running subscription's period (or the next
/// one, when a renewal has not been seen yet, or an earlier one already counted), else the
/// calendar month (UTC) of an account without a subscription.
pub fn period_of(usage: &AccountUsage, meter: &str, timestamp: i64) -> Period {
    let subscribed = usage
        .entitlement
        .as_ref()
        .filter(|entitlement| entitlement.access != Access::None)
        .and_then(|entitlement| Some((entitlement.current_period_start?, entitlement.current_period_end?)))
        .filter(|(start, end)| start < end);
    let Some((start, end)) = subscribed else {
        return calendar_month(timestamp);
    };
    let length = end - start;
    if (start..end).contains(&timestamp) {
        return Period { start, end };
    }
    if (end..end.saturating_add(length)).contains(&timestamp) {
        return Period {
            start: end,
            end: end.saturating_add(length),
        };
    }
    // An earlier period: the one already counted that holds it, if any.
    let earlier = usage
        .counters
        .iter()
        .filter(|counter| counter.meter == meter && counter.period_start <= timestamp && counter.period_start < start)
        .map(|counter| counter.period_start)
        .max();
    match earlier {
        Some(earlier) if timestamp < start => Period {
            start: earlier,
            end: start,
        },
        _ => calendar_month(timestamp),
    }
}

/// The UTC calendar month holding `timestamp`.
pub fn calendar_month(timestamp: i64) -> Period {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp(timestamp) else {
        return Period {
            start: timestamp,
            end: timestamp,
        };
    };
    let first = time::Date::from_calendar_date(at.year(), at.month(), 1).unwrap_or(at.date());
    let next = match at.month() {
        time::Month::December => time::Date::from_calendar_date(at.year() + 1, time::Month::January, 1),
        month => time::Date::from_calendar_date(at.year(), month.next(), 1),
    }
    .unwrap_or(first);
    let unix = |date: time::Date| date.midnight().assume_utc().unix_timestamp();
    Period {
        start: unix(first),
        end: unix(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AccountId;
    use crate::usage::ledger::UsageCounter;

    fn subscribed(start: i64, end: i64) -> AccountUsage {
        let mut entitlement = crate::entitlement::nothing(&AccountId::parse("a").unwrap());
        entitlement.access = Access::Active;
        entitlement.current_period_start = Some(start);
        entitlement.current_period_end = Some(end);
        AccountUsage {
            customer_id: None,
            entitlement: Some(entitlement),
            counters: Vec::new(),
        }
    }

    #[test]
    fn calendar_months_are_utc() {
        // 2026-12-04T20:00:00Z; December 2026 starts at 1796083200 and January 2027 at 1798761600
        // (`date -u -d 2026-12-01 +%s`, `date -u -d 2027-01-01 +%s`).
        assert_eq!(
            calendar_month(1_796_414_400),
            Period {
                start: 1_796_083_200,
                end: 1_798_761_600
            }
        );
        // The first second of a month is in it.
        assert_eq!(calendar_month(1_798_761_600).start, 1_798_761_600);
    }

    #[test]
    fn a_subscription_counts_by_its_period_and_the_next_before_the_renewal_is_seen() {
        let usage = subscribed(1_000, 2_000);
        assert_eq!(
            period_of(&usage, "m", 1_500),
            Period {
                start: 1_000,
                end: 2_000
            }
        );
        assert_eq!(
            period_of(&usage, "m", 2_000),
            Period {
                start: 2_000,
                end: 3_000
            }
        );
        // Before the period, with a counter of the earlier period: that one.
        let mut usage = usage;
        usage.counters.push(UsageCounter {
            meter: "m".into(),
            period_start: 100,
            used: 1.0,
            events: 1,
            pending: Default::default(),
        });
        assert_eq!(period_of(&usage, "m", 900), Period { start: 100, end: 1_000 });
        // Without one, and for an account without a subscription: the calendar month.
        assert_eq!(period_of(&usage, "other", 900), calendar_month(900));
        assert_eq!(period_of(&AccountUsage::default(), "m", 1_500), calendar_month(1_500));
    }
}
