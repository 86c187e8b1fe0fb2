//! Which queue each Stripe event type goes to. This table is the single source of truth: the
//! webhook routes with it, the reconciler filters with it, and the README's list of event types
//! to enable in the Stripe dashboard is printed from it.

use crate::queue::{OutboundMessage, QueueName};
use crate::stripe::EventEnvelope;

/// Event types the system handles, with their queue. Anything else is acknowledged and dropped.
pub const ROUTES: &[(&str, QueueName)] = &[
    ("checkout.session.completed", QueueName::Events),
    ("customer.subscription.created", QueueName::Events),
    ("customer.subscription.updated", QueueName::Events),
    ("customer.subscription.deleted", QueueName::Events),
    ("customer.subscription.paused", QueueName::Events),
    ("customer.subscription.resumed", QueueName::Events),
    ("customer.subscription.trial_will_end", QueueName::Events),
    ("customer.updated", QueueName::Events),
    ("customer.deleted", QueueName::Events),
    ("invoice.paid", QueueName::Events),
    ("invoice.payment_succeeded", QueueName::Events),
    ("invoice.payment_failed", QueueName::PaymentFailed),
    ("invoice.payment_action_required", QueueName::PaymentFailed),
];

pub fn route(event_type: &str) -> Option<QueueName> {
    ROUTES
        .iter()
        .find(|(known, _)| *known == event_type)
        .map(|(_, queue)| *queue)
}

/// The queue and message for an event, or `None` for types the system does not handle. The
/// webhook and the reconciler both enqueue through this, so their messages deduplicate.
pub fn message_for<'a>(envelope: &'a EventEnvelope<'a>, body: &'a str) -> Option<(QueueName, OutboundMessage<'a>)> {
    let queue = route(&envelope.event_type)?;
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

pub fn handled_event_types() -> impl Iterator<Item = &'static str> {
    ROUTES.iter().map(|(event_type, _)| *event_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_failures_go_to_their_own_queue() {
        assert_eq!(route("invoice.payment_failed"), Some(QueueName::PaymentFailed));
        assert_eq!(route("invoice.payment_action_required"), Some(QueueName::PaymentFailed));
        assert_eq!(route("invoice.paid"), Some(QueueName::Events));
        assert_eq!(route("customer.subscription.updated"), Some(QueueName::Events));
        assert_eq!(route("charge.succeeded"), None);
        assert_eq!(route(""), None);
    }

    #[test]
    fn every_type_appears_once() {
        let mut types: Vec<&str> = handled_event_types().collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), ROUTES.len());
    }
}
