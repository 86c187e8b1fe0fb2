//! The dunning email: what failed, how much is still owed, which attempt, whether and when
//! Stripe retries, until when access lasts, and the link to pay or update the card (or, for
//! 3-D Secure, to authenticate). It only says what is true: no "we will try again" after the
//! last automatic attempt, no "your access continues" without a deadline still ahead, no
//! "subscription" for a one-off invoice.

use std::time::{Duration, UNIX_EPOCH};

use crate::notify::DunningEmail;
use crate::stripe::Invoice;

use super::Notice;

/// Currencies Stripe counts in whole units: the API amount is the amount (Stripe's list of
/// zero-decimal currencies, <https://docs.stripe.com/currencies#zero-decimal>).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
];

/// Currencies Stripe counts in thousandths (Stripe's list of three-decimal currencies,
/// <https://docs.stripe.com/currencies#three-decimal>). Every other currency has two decimals
/// in the API, including ISK, HUF and TWD, which Stripe's page lists as special cases that are
/// still sent in hundredths.
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

fn decimals(currency: &str) -> u32 {
    let currency = currency.to_ascii_lowercase();
    if ZERO_DECIMAL.contains(&currency.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&currency.as_str()) {
        3
    } else {
        2
    }
}

/// An API amount (minor units) as the customer reads it: `12345` KWD is "12.345 KWD".
fn amount(minor: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    let places = decimals(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    if places == 0 {
        return format!("{sign}{magnitude} {code}");
    }
    let scale = 10_u64.pow(places);
    let width = places as usize;
    format!("{sign}{}.{:0width$} {code}", magnitude / scale, magnitude % scale)
}

/// The last second HTTP dates can show (31 Dec 9999): `httpdate` refuses later ones.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

fn date(unix: i64) -> String {
    let secs = u64::try_from(unix).unwrap_or_default().min(LAST_HTTP_DATE);
    let when = UNIX_EPOCH + Duration::from_secs(secs);
    httpdate::fmt_http_date(when)
}

/// What the rendering needs beyond the invoice: the attempt, which notice, the episode's grace
/// deadline (the dunning record's `grace_until`) and the time to compare it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmailContext {
    pub attempt: u32,
    pub notice: Notice,
    pub grace_until: Option<i64>,
    pub now: i64,
}

pub fn render_email(invoice: &Invoice, to: &str, context: &EmailContext) -> DunningEmail {
    let currency = invoice.currency.as_deref().unwrap_or("usd");
    let due = amount(invoice.amount_remaining, currency);
    let link = invoice
        .hosted_invoice_url
        .as_deref()
        .unwrap_or("your account's billing page");
    // A one-off invoice is not a subscription, and access does not hang on it.
    let subscription = invoice.subscription_id().is_some();
    let what = if subscription { "subscription" } else { "invoice" };
    let grace_ahead = context.grace_until.filter(|until| subscription && *until > context.now);
    let attempt = context.attempt;

    let mut lines = Vec::new();
    let subject = match context.notice {
        Notice::ActionRequired => {
            lines.push(format!(
                "Your bank needs you to confirm the payment of {due} for your {what}."
            ));
            lines.push(format!("Confirm the payment here: {link}"));
            "Action required: confirm your payment"
        }
        Notice::Retrying | Notice::FinalAttempt => {
            lines.push(format!(
                "We could not collect the payment of {due} for your {what} (attempt {attempt})."
            ));
            "Your payment failed"
        }
    };
    if invoice.amount_paid > 0 {
        lines.push(format!(
            "Of the {} total, {} has been paid; {due} remains.",
            amount(invoice.amount_due, currency),
            amount(invoice.amount_paid, currency),
        ));
    }
    match context.notice {
        Notice::ActionRequired => {
            if let Some(until) = grace_ahead {
                lines.push(format!("Your access continues in the meantime, until {}.", date(until)));
            }
        }
        Notice::Retrying => {
            if let Some(next) = invoice.next_payment_attempt {
                lines.push(format!("We will try again on {}.", date(next)));
            }
            lines.push(format!("To pay now or update your card: {link}"));
            if let Some(until) = grace_ahead {
                lines.push(format!("Your access continues in the meantime, until {}.", date(until)));
            }
        }
        Notice::FinalAttempt => {
            lines.push("This was the last automatic attempt: we will not try again.".to_owned());
            match grace_ahead {
                Some(until) => lines.push(format!(
                    "Your access ends on {} unless you pay here before then: {link}",
                    date(until)
                )),
                None => lines.push(format!("To pay now or update your card: {link}")),
            }
        }
    }
    DunningEmail {
        to: to.to_owned(),
        subject: subject.to_owned(),
        body: lines.join("\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stripe's zero-decimal list, as on https://docs.stripe.com/currencies#zero-decimal.
    const STRIPE_ZERO_DECIMAL: [&str; 16] = [
        "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
    ];
    /// Stripe's three-decimal list, as on https://docs.stripe.com/currencies#three-decimal.
    const STRIPE_THREE_DECIMAL: [&str; 5] = ["BHD", "JOD", "KWD", "OMR", "TND"];

    const NOW: i64 = 1_763_900_000; // Sun, 23 Nov 2025 12:13:20 GMT
    const NEXT: i64 = NOW + 3 * 86_400; // Wed, 26 Nov 2025 12:13:20 GMT
    const GRACE: i64 = NOW + 7 * 86_400; // Sun, 30 Nov 2025 12:13:20 GMT
    const LINK: &str = "https://invoice.stripe.com/i/in_1";

    fn invoice(patch: serde_json::Value) -> Invoice {
        let mut value = serde_json::json!({
            "id": "in_1", "customer": "cus_1", "status": "open", "subscription": "sub_1",
            "amount_due": 2000, "amount_paid": 0, "amount_remaining": 2000, "currency": "usd",
            "attempt_count": 1, "next_payment_attempt": NEXT, "hosted_invoice_url": LINK,
        });
        if let (Some(base), Some(patch)) = (value.as_object_mut(), patch.as_object()) {
            base.extend(patch.clone());
        }
        serde_json::from_value(value).unwrap()
    }

    fn context(attempt: u32, notice: Notice, grace_until: Option<i64>) -> EmailContext {
        EmailContext {
            attempt,
            notice,
            grace_until,
            now: NOW,
        }
    }

    #[test]
    fn amounts_follow_stripe_currency_decimals() {
        assert_eq!(amount(2000, "usd"), "20.00 USD");
        assert_eq!(amount(1999, "eur"), "19.99 EUR");
        assert_eq!(amount(5, "gbp"), "0.05 GBP");
        assert_eq!(amount(-250, "usd"), "-2.50 USD");
        assert_eq!(amount(500, "jpy"), "500 JPY");
        assert_eq!(amount(12345, "kwd"), "12.345 KWD");
        assert_eq!(amount(5, "bhd"), "0.005 BHD");
        assert_eq!(
            amount(10000, "huf"),
            "100.00 HUF",
            "a special case, still in hundredths"
        );
        for code in STRIPE_ZERO_DECIMAL {
            assert_eq!(amount(1234, &code.to_ascii_lowercase()), format!("1234 {code}"));
        }
        for code in STRIPE_THREE_DECIMAL {
            assert_eq!(amount(1234, &code.to_ascii_lowercase()), format!("1.234 {code}"));
        }
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn a_retried_failure_says_when_stripe_retries_and_until_when_access_lasts() {
        let email = render_email(
            &invoice(serde_json::json!({})),
            "a@example.com",
            &context(2, Notice::Retrying, Some(GRACE)),
        );
        assert_eq!(email.subject, "Your payment failed");
        assert_eq!(
            email.body,
            "We could not collect the payment of 20.00 USD for your subscription (attempt 2).\n\n\
             We will try again on Wed, 26 Nov 2025 12:13:20 GMT.\n\n\
             To pay now or update your card: https://invoice.stripe.com/i/in_1\n\n\
             Your access continues in the meantime, until Sun, 30 Nov 2025 12:13:20 GMT."
        );
    }

    #[test]
    fn the_final_attempt_says_stripe_stops_and_access_ends_at_the_deadline() {
        let email = render_email(
            &invoice(serde_json::json!({"attempt_count": 4, "next_payment_attempt": null})),
            "a@example.com",
            &context(4, Notice::FinalAttempt, Some(GRACE)),
        );
        assert_eq!(
            email.body,
            "We could not collect the payment of 20.00 USD for your subscription (attempt 4).\n\n\
             This was the last automatic attempt: we will not try again.\n\n\
             Your access ends on Sun, 30 Nov 2025 12:13:20 GMT unless you pay here before then: \
             https://invoice.stripe.com/i/in_1"
        );
        assert!(!email.body.contains("try again on") && !email.body.contains("continues"));
    }

    #[test]
    fn access_continues_only_with_a_deadline_still_ahead() {
        let failed = invoice(serde_json::json!({}));
        for grace in [None, Some(NOW), Some(NOW - 1)] {
            for notice in [Notice::Retrying, Notice::ActionRequired, Notice::FinalAttempt] {
                let body = render_email(&failed, "a@example.com", &context(1, notice, grace)).body;
                assert!(
                    !body.contains("access continues") && !body.contains("access ends"),
                    "{body}"
                );
            }
        }
        let final_without_grace = render_email(&failed, "a@example.com", &context(3, Notice::FinalAttempt, None)).body;
        assert!(
            final_without_grace.ends_with("To pay now or update your card: https://invoice.stripe.com/i/in_1"),
            "{final_without_grace}"
        );
    }

    #[test]
    fn a_one_off_invoice_is_not_called_a_subscription() {
        let one_off = invoice(serde_json::json!({"subscription": null}));
        for notice in [Notice::Retrying, Notice::ActionRequired, Notice::FinalAttempt] {
            let body = render_email(&one_off, "a@example.com", &context(1, notice, Some(GRACE))).body;
            assert!(
                body.contains("for your invoice") && !body.contains("subscription"),
                "{body}"
            );
            assert!(
                !body.contains("access"),
                "access does not hang on a one-off invoice: {body}"
            );
        }
    }

    #[test]
    fn a_partially_paid_invoice_asks_for_what_remains() {
        let partial = invoice(serde_json::json!({"amount_due": 5000, "amount_paid": 2000, "amount_remaining": 3000}));
        let body = render_email(&partial, "a@example.com", &context(1, Notice::Retrying, Some(GRACE))).body;
        assert!(
            body.starts_with(
                "We could not collect the payment of 30.00 USD for your subscription (attempt 1).\n\n\
                 Of the 50.00 USD total, 20.00 USD has been paid; 30.00 USD remains.\n\n"
            ),
            "{body}"
        );
        let kwd = invoice(serde_json::json!({"currency": "kwd", "amount_due": 12345, "amount_remaining": 12345}));
        let body = render_email(&kwd, "a@example.com", &context(1, Notice::Retrying, None)).body;
        assert!(
            body.contains("the payment of 12.345 KWD") && !body.contains("has been paid"),
            "{body}"
        );
    }

    #[test]
    fn an_authentication_request_carries_the_hosted_invoice_link() {
        let email = render_email(
            &invoice(serde_json::json!({})),
            "a@example.com",
            &context(1, Notice::ActionRequired, Some(GRACE)),
        );
        assert_eq!(email.subject, "Action required: confirm your payment");
        assert_eq!(
            email.body,
            "Your bank needs you to confirm the payment of 20.00 USD for your subscription.\n\n\
             Confirm the payment here: https://invoice.stripe.com/i/in_1\n\n\
             Your access continues in the meantime, until Sun, 30 Nov 2025 12:13:20 GMT."
        );
    }
}
