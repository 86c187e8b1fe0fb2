//! What a handler reads: the event's own object when it is Stripe's at the pinned API version,
//! else the object as Stripe shows it now, read at the pinned version. A thin event carries no
//! object; a snapshot rendered for an endpoint on another version (a 2017 endpoint sends items
//! with a `plan` and no `price`) would fail the models, and retrying it would fail forever.

use serde_json::Value;

use super::ProcessError;
use crate::routing::EventKind;
use crate::stripe::{API_VERSION, Event, Shape, StripeClient};
use crate::telemetry;

pub(super) async fn at_pinned_version(
    stripe: &StripeClient,
    kind: EventKind,
    event: Event,
) -> Result<Event, ProcessError> {
    let resource = kind.handler().resource();
    let id = match (event.shape, event.related.as_ref()) {
        (Shape::Thin, Some(related)) => {
            if related.object_type != resource.object() {
                return Err(ProcessError::InvalidMessage(format!(
                    "{} names a {}, not a {}",
                    kind.name(),
                    related.object_type,
                    resource.object()
                )));
            }
            related.id.clone()
        }
        _ => {
            match event.api_version.as_deref().filter(|version| *version != API_VERSION) {
                Some(version) => {
                    telemetry::count_by("ApiVersionMismatch", "ApiVersion", version);
                    tracing::warn!(event_id = %event.id, api_version = version, pinned = API_VERSION,
                        "event rendered at another API version: its object is read again at the pinned one (set the endpoint's API version to the pin)");
                }
                None if resource.reads(&event.data.object) => return Ok(event),
                None => tracing::warn!(event_id = %event.id, event_type = %event.event_type,
                    "event payload does not read at the pinned API version: its object is read again"),
            }
            match event.data.object.get("id").and_then(Value::as_str) {
                Some(id) => id.to_owned(),
                None => {
                    return Err(ProcessError::InvalidMessage(format!(
                        "{} payload has no object id",
                        kind.name()
                    )));
                }
            }
        }
    };
    let object = stripe.retrieve_resource(resource, &id).await?;
    tracing::debug!(event_id = %event.id, object = resource.object(), "object read at the pinned API version");
    Ok(event.with_current(object))
}
