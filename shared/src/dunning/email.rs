//! The dunning email: what failed, how much, which attempt, when Stripe retries, and the link
//! to pay or update the card (or, for 3-D Secure, to authenticate).

use std::time::{Duration, UNIX_EPOCH};

use crate::notify::DunningEmail;
use crate::stripe::Invoice;

/// Currencies Stripe counts in whole units (no cents).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
];

fn amount(minor: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) {
        return format!("{minor} {code}");
    }
    format!("{}.{:02} {code}", minor / 100, (minor % 100).abs())
}

fn date(unix: i64) -> String {
    let when = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or_default());
    httpdate::fmt_http_date(when)
}

pub fn render_email(invoice: &Invoice, to: &str, attempt: u32, action_required: bool) -> DunningEmail {
    let due = amount(
        invoice.amount_remaining.max(invoice.amount_due),
        invoice.currency.as_deref().unwrap_or("usd"),
    );
    let link = invoice
        .hosted_invoice_url
        .as_deref()
        .unwrap_or("your account's billing page");
    let mut lines = Vec::new();
    let subject = if action_required {
        lines.push(format!(
            "Your bank needs you to confirm the payment of {due} for your subscription."
        ));
        lines.push(format!("Confirm the payment here: {link}"));
        "Action required: confirm your payment".to_owned()
    } else {
        lines.push(format!(
            "We could not collect the payment of {due} for your subscription (attempt {attempt})."
        ));
        if let Some(next) = invoice.next_payment_attempt {
            lines.push(format!("We will try again on {}.", date(next)));
        }
        lines.push(format!("To pay now or update your card: {link}"));
        "Your payment failed".to_owned()
    };
    lines.push("Your access continues in the meantime.".to_owned());
    DunningEmail {
        to: to.to_owned(),
        subject,
        body: lines.join("\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_respect_zero_decimal_currencies() {
        assert_eq!(amount(2000, "usd"), "20.00 USD");
        assert_eq!(amount(1999, "eur"), "19.99 EUR");
        assert_eq!(amount(500, "jpy"), "500 JPY");
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
