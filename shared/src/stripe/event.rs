//! Stripe's Event object: a borrowed envelope for the webhook's hot path, and the owned event
//! the processors work with.

use std::borrow::Cow;

use serde::Deserialize;

use super::ids::BorrowedId;

/// Just what routing needs, parsed without copying strings out of the body and skipping the
/// rest of `data.object` unparsed.
#[derive(Debug, Deserialize)]
pub struct EventEnvelope<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    pub event_type: Cow<'a, str>,
    pub created: i64,
    pub livemode: bool,
    #[serde(borrow, default)]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub data: EnvelopeData<'a>,
}

#[derive(Debug, Deserialize)]
pub struct EnvelopeData<'a> {
    #[serde(borrow)]
    pub object: EnvelopeObject<'a>,
}

#[derive(Debug, Deserialize)]
pub struct EnvelopeObject<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub customer: Option<BorrowedId<'a>>,
}

impl<'a> EventEnvelope<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The Stripe customer the event is about. A customer event's object *is* the customer.
    pub fn customer_id(&self) -> Option<&str> {
        let object = &self.data.object;
        match (&object.customer, object.object.as_deref(), object.id.as_deref()) {
            (Some(customer), _, _) => Some(customer.0.as_ref()),
            (None, Some("customer"), Some(id)) => Some(id),
            _ => None,
        }
    }

    /// The FIFO ordering key: all events of one customer are applied one at a time, in order.
    pub fn ordering_key(&self) -> &str {
        self.customer_id()
            .or(self.data.object.id.as_deref())
            .unwrap_or(self.id.as_ref())
    }
}

/// An event with its object kept as JSON, typed by the handler that knows what it holds.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_borrows_and_finds_the_customer() {
        let body = br#"{"id":"evt_1","object":"event","type":"invoice.paid","created":1700000000,"livemode":false,
            "api_version":"2026-10-28.endive","data":{"object":{"id":"in_1","object":"invoice","customer":"cus_9","lines":{"data":[]}}}}"#;
        let envelope = EventEnvelope::parse(body).unwrap();
        assert!(matches!(envelope.id, Cow::Borrowed("evt_1")));
        assert_eq!(envelope.event_type, "invoice.paid");
        assert_eq!(envelope.customer_id(), Some("cus_9"));
        assert_eq!(envelope.ordering_key(), "cus_9");
    }

    #[test]
    fn customer_events_group_by_the_customer_itself() {
        let body = br#"{"id":"evt_2","type":"customer.updated","created":1,"livemode":true,"data":{"object":{"id":"cus_7","object":"customer"}}}"#;
        let envelope = EventEnvelope::parse(body).unwrap();
        assert_eq!(envelope.ordering_key(), "cus_7");
        assert_eq!(envelope.api_version, None);
    }

    #[test]
    fn objects_without_customer_group_by_object_id() {
        let body = br#"{"id":"evt_3","type":"price.created","created":1,"livemode":true,"data":{"object":{"id":"price_1","object":"price","customer":null}}}"#;
        assert_eq!(EventEnvelope::parse(body).unwrap().ordering_key(), "price_1");
    }

    #[test]
    fn rejects_non_events() {
        for body in [&b"[]"[..], b"{}", b"not json", br#"{"id":1}"#, b""] {
            assert!(EventEnvelope::parse(body).is_err());
        }
    }
}
