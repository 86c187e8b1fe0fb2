//! `invoice.payment_failed` and `invoice.payment_action_required` (3-D Secure / SCA).
//!
//! 1. Ask Stripe for the invoice first: if it is already paid, void or written off, this
//!    failure is stale (a late delivery after recovery): an open episode for the invoice is
//!    closed, access is recomputed, and nothing is sent.
//! 2. Record the episode per invoice and refresh the subscription, so access moves to grace
//!    until a stored deadline — no job ends it, readers compare it with their clock.
//! 3. Notify, recording each notification on the record as it succeeds: a retry after a
//!    failure resends only what did not go out, and a redelivery sends nothing. The "payment
//!    failed" and the "confirm your payment" notices are counted apart, as Stripe sends both
//!    events for one 3-D Secure attempt, in either order.

use crate::notify::{AppEvent, Notifier, PaymentFailedEvent};
use crate::processing::{Outcome, ProcessError};
use crate::routing::EventKind;
use crate::store::{BillingStore, DunningRecord, DunningStage, WriteOutcome};
use crate::stripe::{Event, Invoice, InvoiceStatus};
use crate::sync::object;

use super::{DunningProcessor, EmailContext, Notice, render_email};

pub(super) async fn apply<S: BillingStore, N: Notifier>(
    processor: &DunningProcessor<S, N>,
    kind: EventKind,
    event: &Event,
) -> Result<Outcome, ProcessError> {
    let syncer = &processor.syncer;
    let payload: Invoice = object(event)?;
    let Some(customer_id) = payload.customer.as_ref().map(|c| c.0.clone()) else {
        return Ok(Outcome::Ignored);
    };
    let invoice = syncer.stripe.retrieve_invoice_with_payments(&payload.id).await?;
    let existing = syncer.store.get_dunning(&customer_id, &invoice.id).await?;
    if matches!(
        invoice.status,
        Some(InvoiceStatus::Paid | InvoiceStatus::Void | InvoiceStatus::Uncollectible)
    ) {
        tracing::info!(event_id = %event.id, invoice_id = %invoice.id, status = ?invoice.status, "stale failure: invoice already settled");
        if let Some(mut record) = existing.filter(|record| record.stage != DunningStage::Closed) {
            record.stage = DunningStage::Closed;
            record.watermark = record.watermark.max(event.created);
            syncer.store.put_dunning(&record).await?;
            tracing::info!(event_id = %event.id, invoice_id = %invoice.id, "dunning closed: settled re-read");
            // The invoice settled, so the subscription's status has moved too (e.g. past_due
            // to active): store what Stripe says now before recomputing.
            if let Some(subscription_id) = &record.subscription_id {
                syncer.refetch_subscription(subscription_id, event.created).await?;
            }
            if let Some(entitlement) = syncer.refresh_entitlement(&customer_id, None).await? {
                syncer.announce(&entitlement, &processor.notifier).await?;
            }
        }
        return Ok(Outcome::Applied);
    }
    if existing
        .as_ref()
        .is_some_and(|record| record.stage == DunningStage::Closed)
    {
        tracing::info!(event_id = %event.id, invoice_id = %invoice.id, "stale failure: dunning already closed");
        return Ok(Outcome::Applied);
    }
    let action_required = kind == EventKind::InvoicePaymentActionRequired;
    let error = invoice.last_payment_error();
    let grace_days = i64::from(syncer.grace_days);
    let attempt_count = invoice
        .attempt_count
        .max(existing.as_ref().map_or(0, |r| r.attempt_count));
    let mut record = DunningRecord {
        invoice_id: invoice.id.clone(),
        customer_id: customer_id.clone(),
        subscription_id: invoice.subscription_id().map(str::to_owned),
        // The `payment_failed` of an attempt that needs authentication does not lift the need.
        stage: if action_required
            || existing
                .as_ref()
                .is_some_and(|r| r.stage == DunningStage::ActionRequired && r.attempt_count >= attempt_count)
        {
            DunningStage::ActionRequired
        } else {
            DunningStage::Retrying
        },
        attempt_count,
        next_payment_attempt: invoice.next_payment_attempt,
        failure_code: error
            .and_then(|e| e.code.clone())
            .or_else(|| existing.as_ref().and_then(|r| r.failure_code.clone())),
        decline_code: error
            .and_then(|e| e.decline_code.clone())
            .or_else(|| existing.as_ref().and_then(|r| r.decline_code.clone())),
        hosted_invoice_url: invoice.hosted_invoice_url.clone(),
        // The deadline counts from the first failure of the episode, not from each retry.
        grace_until: existing
            .as_ref()
            .and_then(|r| r.grace_until)
            .or(Some(event.created.saturating_add(grace_days.saturating_mul(86_400)))),
        watermark: existing
            .as_ref()
            .map_or(event.created, |r| r.watermark.max(event.created)),
        emailed_attempt: existing.as_ref().map_or(0, |r| r.emailed_attempt),
        published_attempt: existing.as_ref().map_or(0, |r| r.published_attempt),
        emailed_action_attempt: existing.as_ref().map_or(0, |r| r.emailed_action_attempt),
        published_action_attempt: existing.as_ref().map_or(0, |r| r.published_action_attempt),
    };
    // A closed record returned above: no record means this failure opens the episode.
    let opens = existing.is_none();
    if syncer.store.put_dunning(&record).await? == WriteOutcome::Stale {
        // Closed between our read of the invoice and this write: it was paid or voided.
        tracing::info!(event_id = %event.id, invoice_id = %invoice.id, "stale failure: dunning closed meanwhile");
        return Ok(Outcome::Applied);
    }
    if opens {
        crate::telemetry::count("DunningOpened");
    }
    if let Some(subscription_id) = &record.subscription_id {
        syncer.refetch_subscription(subscription_id, event.created).await?;
    }
    let entitlement = syncer.refresh_entitlement(&customer_id, None).await?;
    if let Some(entitlement) = &entitlement {
        syncer.announce(entitlement, &processor.notifier).await?;
    }
    tracing::info!(event_id = %event.id, invoice_id = %invoice.id, attempt = record.attempt_count,
        decline_code = record.decline_code.as_deref(), access = ?entitlement.as_ref().map(|e| e.access), "dunning recorded");

    let attempt = record.attempt_count.max(1);
    let notice = if action_required {
        Notice::ActionRequired
    } else if invoice.next_payment_attempt.is_none() {
        Notice::FinalAttempt
    } else {
        Notice::Retrying
    };
    let emailed = if action_required {
        record.emailed_action_attempt
    } else {
        record.emailed_attempt
    };
    if emailed < attempt && processor.policy.should_email(attempt, notice) {
        match invoice.customer_email.as_deref().filter(|to| !to.is_empty()) {
            Some(to) => {
                let context = EmailContext {
                    attempt,
                    notice,
                    grace_until: record.grace_until,
                    now: event.created,
                };
                let email = render_email(&invoice, to, &context);
                processor
                    .notifier
                    .send_email(&email)
                    .await
                    .map_err(|error| ProcessError::Notify(error.to_string()))?;
                if action_required {
                    record.emailed_action_attempt = attempt;
                } else {
                    record.emailed_attempt = attempt;
                }
                syncer.store.put_dunning(&record).await?;
                tracing::info!(event_id = %event.id, invoice_id = %invoice.id, attempt, notice = ?notice, "dunning email sent");
            }
            None => tracing::warn!(invoice_id = %invoice.id, "invoice has no customer email; dunning email skipped"),
        }
    }
    let published = if action_required {
        record.published_action_attempt
    } else {
        record.published_attempt
    };
    if published < attempt {
        let app_event = PaymentFailedEvent {
            event_type: PaymentFailedEvent::TYPE,
            stripe_event_id: event.id.clone(),
            account_id: entitlement.as_ref().map(|e| e.account_id.to_string()),
            customer_id,
            invoice_id: invoice.id.clone(),
            subscription_id: record.subscription_id.clone(),
            attempt,
            action_required,
            next_payment_attempt: record.next_payment_attempt,
            grace_until: record.grace_until,
            hosted_invoice_url: record.hosted_invoice_url.clone(),
        };
        processor
            .notifier
            .publish(&app_event)
            .await
            .map_err(|error| ProcessError::Notify(error.to_string()))?;
        if action_required {
            record.published_action_attempt = attempt;
        } else {
            record.published_attempt = attempt;
        }
        syncer.store.put_dunning(&record).await?;
    }
    Ok(Outcome::Applied)
}
