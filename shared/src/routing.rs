//! The closed catalogue of Stripe event types the system handles: type → handler → queue.
//! It is the single source of truth: the webhook routes with it, each processor takes the
//! types whose handler it owns, dispatch matches on [`Handler`], the reconciler filters its
//! listing with it and `billing event-types` prints it. Every mapping is an exhaustive
//! `match`, so a new type cannot be added without saying where it goes and who applies it.

use crate::queue::{EventQueue, OutboundMessage, QueueError, QueueName};
use crate::stripe::event::THIN_TYPE_PREFIX;
use crate::stripe::{EventEnvelope, Resource};

/// Every event type the system handles. Anything else is acknowledged and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    CheckoutSessionCompleted,
    CheckoutSessionAsyncPaymentSucceeded,
    CheckoutSessionAsyncPaymentFailed,
    CheckoutSessionExpired,
    SubscriptionCreated,
    SubscriptionUpdated,
    SubscriptionDeleted,
    SubscriptionPaused,
    SubscriptionResumed,
    SubscriptionTrialWillEnd,
    CustomerUpdated,
    CustomerDeleted,
    InvoicePaid,
    InvoicePaymentSucceeded,
    InvoiceVoided,
    InvoiceMarkedUncollectible,
    InvoicePaymentFailed,
    InvoicePaymentActionRequired,
    ChargeRefunded,
    ChargeDisputeClosed,
    /// Thin-only: Stripe sends it to event destinations, never as a snapshot event.
    MeterErrorReportTriggered,
}

/// Who applies an event: one module per handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handler {
    /// Links a customer to the user this system made the session for (`sync::checkout_session`).
    CheckoutSession,
    /// An open session ran out: nothing to link.
    CheckoutSessionExpired,
    /// The event carries the subscription (`sync::subscription`).
    Subscription,
    /// `sync::customer`: claims by metadata, unlinks on deletion.
    Customer,
    /// The invoice is settled — paid, voided or written off — and its dunning episode ends
    /// (`sync::invoice_settled`).
    InvoiceSettled,
    /// A failed or unauthenticated payment (`dunning`).
    Dunning,
    /// A refund of a charge: a one-time purchase refunded in full is taken back
    /// (`sync::purchase`).
    ChargeRefunded,
    /// A dispute decided: a purchase whose dispute was lost is taken back (`sync::purchase`).
    DisputeClosed,
    /// Stripe could not use some meter events: surfaced to the operator and the app
    /// (`sync::meter_error`).
    MeterErrorReport,
}

impl EventKind {
    pub const ALL: [EventKind; 21] = [
        EventKind::CheckoutSessionCompleted,
        EventKind::CheckoutSessionAsyncPaymentSucceeded,
        EventKind::CheckoutSessionAsyncPaymentFailed,
        EventKind::CheckoutSessionExpired,
        EventKind::SubscriptionCreated,
        EventKind::SubscriptionUpdated,
        EventKind::SubscriptionDeleted,
        EventKind::SubscriptionPaused,
        EventKind::SubscriptionResumed,
        EventKind::SubscriptionTrialWillEnd,
        EventKind::CustomerUpdated,
        EventKind::CustomerDeleted,
        EventKind::InvoicePaid,
        EventKind::InvoicePaymentSucceeded,
        EventKind::InvoiceVoided,
        EventKind::InvoiceMarkedUncollectible,
        EventKind::InvoicePaymentFailed,
        EventKind::InvoicePaymentActionRequired,
        EventKind::ChargeRefunded,
        EventKind::ChargeDisputeClosed,
        EventKind::MeterErrorReportTriggered,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::CheckoutSessionCompleted => "checkout.session.completed",
            EventKind::CheckoutSessionAsyncPaymentSucceeded => "checkout.session.async_payment_succeeded",
            EventKind::CheckoutSessionAsyncPaymentFailed => "checkout.session.async_payment_failed",
            EventKind::CheckoutSessionExpired => "checkout.session.expired",
            EventKind::SubscriptionCreated => "customer.subscription.created",
            EventKind::SubscriptionUpdated => "customer.subscription.updated",
            EventKind::SubscriptionDeleted => "customer.subscription.deleted",
            EventKind::SubscriptionPaused => "customer.subscription.paused",
            EventKind::SubscriptionResumed => "customer.subscription.resumed",
            EventKind::SubscriptionTrialWillEnd => "customer.subscription.trial_will_end",
            EventKind::CustomerUpdated => "customer.updated",
            EventKind::CustomerDeleted => "customer.deleted",
            EventKind::InvoicePaid => "invoice.paid",
            EventKind::InvoicePaymentSucceeded => "invoice.payment_succeeded",
            EventKind::InvoiceVoided => "invoice.voided",
            EventKind::InvoiceMarkedUncollectible => "invoice.marked_uncollectible",
            EventKind::InvoicePaymentFailed => "invoice.payment_failed",
            EventKind::InvoicePaymentActionRequired => "invoice.payment_action_required",
            EventKind::ChargeRefunded => "charge.refunded",
            EventKind::ChargeDisputeClosed => "charge.dispute.closed",
            EventKind::MeterErrorReportTriggered => "billing.meter.error_report_triggered",
        }
    }

    /// Types Stripe delivers only as thin events (to event destinations): a webhook endpoint
    /// cannot enable them and `GET /v1/events` does not list them.
    pub const fn thin_only(self) -> bool {
        matches!(self, EventKind::MeterErrorReportTriggered)
    }

    pub const fn handler(self) -> Handler {
        match self {
            EventKind::CheckoutSessionCompleted
            | EventKind::CheckoutSessionAsyncPaymentSucceeded
            | EventKind::CheckoutSessionAsyncPaymentFailed => Handler::CheckoutSession,
            EventKind::CheckoutSessionExpired => Handler::CheckoutSessionExpired,
            EventKind::SubscriptionCreated
            | EventKind::SubscriptionUpdated
            | EventKind::SubscriptionDeleted
            | EventKind::SubscriptionPaused
            | EventKind::SubscriptionResumed
            | EventKind::SubscriptionTrialWillEnd => Handler::Subscription,
            EventKind::CustomerUpdated | EventKind::CustomerDeleted => Handler::Customer,
            EventKind::InvoicePaid
            | EventKind::InvoicePaymentSucceeded
            | EventKind::InvoiceVoided
            | EventKind::InvoiceMarkedUncollectible => Handler::InvoiceSettled,
            EventKind::InvoicePaymentFailed | EventKind::InvoicePaymentActionRequired => Handler::Dunning,
            EventKind::ChargeRefunded => Handler::ChargeRefunded,
            EventKind::ChargeDisputeClosed => Handler::DisputeClosed,
            EventKind::MeterErrorReportTriggered => Handler::MeterErrorReport,
        }
    }

    pub const fn queue(self) -> QueueName {
        self.handler().queue()
    }

    pub fn parse(event_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == event_type)
    }
}

impl Handler {
    /// Failed payments have their own queue and consumer, so a burst of renewals failing
    /// cannot delay entitlement changes (and their email sending has its own concurrency).
    pub const fn queue(self) -> QueueName {
        match self {
            Handler::CheckoutSession
            | Handler::CheckoutSessionExpired
            | Handler::Subscription
            | Handler::Customer
            | Handler::InvoiceSettled
            | Handler::ChargeRefunded
            | Handler::DisputeClosed
            | Handler::MeterErrorReport => QueueName::Events,
            Handler::Dunning => QueueName::PaymentFailed,
        }
    }
}

impl Handler {
    /// The Stripe object its events are about, read from Stripe when the payload does not
    /// carry it usably (a thin event, another API version's shape).
    pub const fn resource(self) -> Resource {
        match self {
            Handler::CheckoutSession | Handler::CheckoutSessionExpired => Resource::CheckoutSession,
            Handler::Subscription => Resource::Subscription,
            Handler::Customer => Resource::Customer,
            Handler::InvoiceSettled | Handler::Dunning => Resource::Invoice,
            Handler::ChargeRefunded => Resource::Charge,
            Handler::DisputeClosed => Resource::Dispute,
            Handler::MeterErrorReport => Resource::Meter,
        }
    }
}

pub fn route(event_type: &str) -> Option<QueueName> {
    EventKind::parse(event_type).map(EventKind::queue)
}

/// The queue and message for an event, or `None` for types the system does not handle. The
/// webhook and the reconciler both enqueue through this, so their messages deduplicate.
pub fn message_for<'a>(envelope: &'a EventEnvelope<'a>, body: &'a str) -> Option<(QueueName, OutboundMessage<'a>)> {
    let queue = route(envelope.snapshot_type())?;
    let message = OutboundMessage {
        body,
        group_id: envelope.ordering_key(),
        dedup_id: &envelope.id,
        event_id: &envelope.id,
        event_type: &envelope.event_type,
        livemode: envelope.livemode,
    };
    Some((queue, message))
}

/// What [`enqueue`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    Enqueued,
    /// A type the system does not handle: acknowledged, dropped.
    Ignored,
}

/// Routes an event and sends it to its queue: the webhook and the EventBridge receiver both
/// take deliveries through this, so a Stripe event has one message whichever way it came.
pub async fn enqueue<Q: EventQueue>(queue: &Q, envelope: &EventEnvelope<'_>, body: &str) -> Result<Routed, QueueError> {
    let (event_id, event_type) = (envelope.id.as_ref(), envelope.event_type.as_ref());
    let Some((name, message)) = message_for(envelope, body) else {
        tracing::info!(
            event_id,
            event_type,
            ignored = 1,
            "event type not handled; acknowledged"
        );
        return Ok(Routed::Ignored);
    };
    match queue.send(name, &message).await {
        Ok(()) => {
            tracing::info!(
                event_id,
                event_type,
                queue = name.as_str(),
                enqueued = 1,
                "event enqueued"
            );
            Ok(Routed::Enqueued)
        }
        Err(error) => {
            tracing::error!(event_id, event_type, %error, "could not enqueue; the sender will retry");
            Err(error)
        }
    }
}

/// The snapshot event types handled: what a webhook endpoint enables and the reconciler lists.
pub fn handled_event_types() -> impl Iterator<Item = &'static str> {
    EventKind::ALL
        .into_iter()
        .filter(|kind| !kind.thin_only())
        .map(EventKind::name)
}

/// Every type handled as a thin event type (`v1.invoice.paid`), for a thin-payload destination:
/// the snapshot ones and the thin-only ones.
pub fn handled_thin_event_types() -> impl Iterator<Item = String> {
    EventKind::ALL
        .into_iter()
        .map(|kind| format!("{THIN_TYPE_PREFIX}{}", kind.name()))
}

/// The thin types the reconciler lists (`GET /v2/core/events` takes up to 20): those whose
/// missed delivery leaves state wrong. A missed meter error report loses a notice, not a
/// count (`billing usage reconcile` finds what Stripe did not bill).
pub fn reconciled_thin_event_types() -> impl Iterator<Item = String> {
    EventKind::ALL
        .into_iter()
        .filter(|kind| !kind.thin_only())
        .map(|kind| format!("{THIN_TYPE_PREFIX}{}", kind.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_failures_go_to_their_own_queue() {
        assert_eq!(route("invoice.payment_failed"), Some(QueueName::PaymentFailed));
        assert_eq!(route("invoice.payment_action_required"), Some(QueueName::PaymentFailed));
        assert_eq!(route("invoice.paid"), Some(QueueName::Events));
        assert_eq!(route("invoice.voided"), Some(QueueName::Events));
        assert_eq!(route("customer.subscription.updated"), Some(QueueName::Events));
        assert_eq!(route("charge.succeeded"), None);
        assert_eq!(route("charge.refunded"), Some(QueueName::Events));
        assert_eq!(route(""), None);
    }

    #[test]
    fn every_type_appears_once_and_parses_back() {
        let mut types: Vec<&str> = EventKind::ALL.into_iter().map(EventKind::name).collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), EventKind::ALL.len());
        // The reconciler lists the snapshot ones in one `GET /v1/events?types[]=…`, which takes
        // "an array of up to 20 strings" (Stripe's API reference): a 21st needs a second listing.
        assert!(handled_event_types().count() <= 20);
        assert_eq!(handled_thin_event_types().count(), EventKind::ALL.len());
        // `GET /v2/core/events` takes "up to 20" `types` too (stripe-python's
        // `params/v2/core/_event_list_params.py`).
        assert!(reconciled_thin_event_types().count() <= 20);
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.name()), Some(kind));
        }
    }

    /// A thin event's object is the object its snapshot twin carries: checked against the
    /// `related_object.type` of Stripe's own thin events in `thin_events.txt` (from
    /// stripe-python 16.1's `stripe/events/_v1_*_event.py`).
    #[test]
    fn thin_types_are_stripes_and_name_the_object_their_handler_reads() {
        let listed = include_str!("../../tests/fixtures/stripe/thin_events.txt");
        let known: Vec<(&str, &str)> = listed.lines().filter_map(|line| line.split_once(' ')).collect();
        for (kind, thin) in EventKind::ALL.into_iter().zip(handled_thin_event_types()) {
            let object = known.iter().find(|(name, _)| *name == thin).map(|(_, object)| *object);
            assert_eq!(object, Some(kind.handler().resource().object()), "{thin}");
        }
    }

    /// The names are Stripe's: each one appears in Stripe's list of event types (the 2023 spec
    /// copied into the repo lists them as the webhook endpoint's `enabled_events` values).
    #[test]
    fn every_type_is_a_stripe_event_type() {
        let spec = include_str!("../../tests/fixtures/stripe/enabled_events.txt");
        let known: Vec<&str> = spec.lines().map(str::trim).collect();
        for name in handled_event_types() {
            assert!(known.contains(&name), "{name} is not a Stripe event type");
        }
    }
}
