//! `invoice.paid`, `invoice.payment_succeeded`, `invoice.voided`, `invoice.marked_uncollectible`:
//! the invoice is settled one way or another, so its dunning episode is over. The
//! subscription's status may move (e.g. `past_due` → `active`), so it is read from Stripe.

use crate::notify::Publisher;
use crate::processing::{Outcome, ProcessError};
use crate::routing::EventKind;
use crate::store::{BillingStore, DunningStage};
use crate::stripe::{Event, Invoice};

use super::{Syncer, object};

pub(super) async fn apply<S: BillingStore, P: Publisher>(
    syncer: &Syncer<S, P>,
    kind: EventKind,
    event: &Event,
) -> Result<Outcome, ProcessError> {
    let invoice: Invoice = object(event)?;
    let Some(customer) = &invoice.customer else {
        return Ok(Outcome::Ignored);
    };
    let customer_id = customer.as_str();
    if let Some(subscription_id) = invoice.subscription_id() {
        syncer.refetch_subscription(subscription_id, event.created).await?;
    }
    if let Some(mut dunning) = syncer.store.get_dunning(customer_id, &invoice.id).await? {
        if dunning.stage != DunningStage::Closed {
            dunning.stage = DunningStage::Closed;
            dunning.watermark = dunning.watermark.max(event.created);
            syncer.store.put_dunning(&dunning).await?;
            match kind {
                EventKind::InvoicePaid | EventKind::InvoicePaymentSucceeded => {
                    crate::telemetry::count("DunningRecovered");
                }
                _ => crate::telemetry::count("DunningAbandoned"),
            }
            tracing::info!(event_id = %event.id, invoice_id = %invoice.id, settled_by = kind.name(), "dunning closed");
        }
    }
    syncer.refresh_entitlement(customer_id, None).await?;
    Ok(Outcome::Applied)
}
