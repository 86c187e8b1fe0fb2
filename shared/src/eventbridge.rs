//! The Amazon EventBridge receiver: Stripe delivers to a partner event source associated with
//! an event bus in the stack's account, and a rule invokes this with the envelope
//! `{version, id, detail-type, source, account, time, region, resources, detail}`, where
//! `detail` is the Stripe event (snapshot or thin). There is no signature: trust comes from the
//! partner source, which only Stripe can publish to, and from IAM, which lets only the rule
//! invoke the function. So the envelope is checked against the configured account and source,
//! and then the event goes the way a webhook delivery goes — the same routing, the same FIFO
//! queues, deduplicated on the *Stripe* event id (`detail.id`), never the envelope's: an event
//! delivered both by a webhook endpoint and by EventBridge is one message and one ledger entry.
//!
//! Its own binary (`functions/eventbridge`) rather than a second shape in `webhook`: it holds
//! no secret at all, has another trigger and another failure path (an error here makes Lambda
//! retry the asynchronous invocation, then hands it to the on-failure queue), and the public
//! receiver's permissions stay as small as they are.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::EventBridgeSettings;
use crate::queue::{EventQueue, QueueError};
use crate::routing::{self, Routed};
use crate::stripe::EventEnvelope;
use crate::telemetry;

/// Every Stripe partner event source is named `aws.partner/stripe.com/<destination id>`.
pub const STRIPE_SOURCE_PREFIX: &str = "aws.partner/stripe.com/";

/// The envelope as EventBridge hands it to a Lambda target, borrowed from the payload; the
/// Stripe event stays unparsed until the source is trusted.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    #[serde(borrow)]
    pub account: Cow<'a, str>,
    #[serde(borrow)]
    pub detail: &'a RawValue,
}

/// What became of one envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Enqueued,
    /// A Stripe event of a type the system does not handle.
    Ignored,
    /// Not from the configured Stripe source and account, or not a Stripe event: nothing is
    /// enqueued and no retry could change that, so it is counted (`EventBridgeRefused`,
    /// alarmed) and acknowledged.
    Refused(&'static str),
}

pub struct EventBridgeReceiver<Q> {
    settings: EventBridgeSettings,
    queue: Q,
}

impl<Q: EventQueue> EventBridgeReceiver<Q> {
    pub fn new(settings: EventBridgeSettings, queue: Q) -> Self {
        Self { settings, queue }
    }

    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Routes one envelope. Only an SQS failure is an error: the invocation then fails and
    /// Lambda retries it, so no event from a trusted source is dropped.
    #[tracing::instrument(name = "eventbridge", skip_all)]
    pub async fn receive(&self, payload: &str) -> Result<Verdict, QueueError> {
        let verdict = self.route(payload).await?;
        if let Verdict::Refused(reason) = verdict {
            telemetry::count("EventBridgeRefused");
            tracing::warn!(reason, "EventBridge envelope refused; nothing enqueued");
        }
        Ok(verdict)
    }

    async fn route(&self, payload: &str) -> Result<Verdict, QueueError> {
        let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(payload) else {
            return Ok(Verdict::Refused("not an EventBridge event"));
        };
        let source_ok = match &self.settings.source {
            Some(source) => envelope.source == source.as_str(),
            None => envelope.source.starts_with(STRIPE_SOURCE_PREFIX),
        };
        if !source_ok {
            return Ok(Verdict::Refused("not the configured Stripe partner event source"));
        }
        if envelope.account != self.settings.account.as_str() {
            return Ok(Verdict::Refused("not the configured AWS account"));
        }
        let body = envelope.detail.get();
        let event = match EventEnvelope::parse(body.as_bytes()) {
            Ok(event) => event,
            Err(reason) => {
                tracing::warn!(%reason, envelope_id = %envelope.id, "EventBridge detail is not a Stripe event");
                return Ok(Verdict::Refused("detail is not a Stripe event"));
            }
        };
        Ok(match routing::enqueue(&self.queue, &event, body).await? {
            Routed::Enqueued => Verdict::Enqueued,
            Routed::Ignored => Verdict::Ignored,
        })
    }
}
