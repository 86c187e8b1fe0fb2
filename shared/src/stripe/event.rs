//! Stripe's events as they arrive: a borrowed envelope for the receivers' hot path, and the
//! owned event the processors work with. Both shapes Stripe delivers are read:
//!
//! * **snapshot** events (`object: "event"`, type `invoice.paid`) carry the object as it was,
//!   rendered at the API version of the endpoint that received them;
//! * **thin** events (`object: "v2.core.event"`, type `v1.invoice.paid`) carry only a reference
//!   to the object (`related_object`), which the processor reads at the pinned version.
//!
//! Thin events' `created` is an RFC 3339 string, snapshot events' a Unix second; both become
//! Unix seconds here, so the watermarks of the two kinds compare.

use std::borrow::Cow;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ids::BorrowedId;

/// The `object` value of a thin event.
pub const THIN_OBJECT: &str = "v2.core.event";
/// Thin event types are the snapshot type with this prefix (`v1.customer.subscription.updated`).
pub const THIN_TYPE_PREFIX: &str = "v1.";

/// Which of Stripe's two event shapes a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Snapshot,
    Thin,
}

/// Just what routing needs, parsed without copying strings out of the body and skipping the
/// rest of `data.object` unparsed.
#[derive(Debug, Deserialize)]
pub struct EventEnvelope<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub object: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    pub event_type: Cow<'a, str>,
    #[serde(deserialize_with = "unix_seconds")]
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    #[serde(borrow, default)]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub data: Option<EnvelopeData<'a>>,
    #[serde(borrow, default)]
    pub related_object: Option<EnvelopeRelated<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct EnvelopeData<'a> {
    #[serde(borrow)]
    pub object: EnvelopeObject<'a>,
}

/// The three fields routing reads. The rest of the object is checked as it is skipped: read
/// the way [`Event::parse`] reads it (into a `serde_json::Value`: numbers in range, strings
/// unescaped, the same nesting limit), so that what a receiver accepts a processor can read.
/// A derived reader would skip laxly: `cargo fuzz` found events with a number beyond `f64`'s
/// range that the receivers enqueued (answering Stripe 2xx) and the processor then dropped as
/// "not an event".
#[derive(Debug, Default)]
pub struct EnvelopeObject<'a> {
    pub id: Option<Cow<'a, str>>,
    pub object: Option<Cow<'a, str>>,
    pub customer: Option<BorrowedId<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for EnvelopeObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> de::Visitor<'de> for Fields<'a> {
            type Value = EnvelopeObject<'a>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a Stripe object")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut object = EnvelopeObject::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "id" => set(&mut object.id, map.next_value::<Borrowed<'a>>()?.0, "id")?,
                        "object" => set(&mut object.object, map.next_value::<Borrowed<'a>>()?.0, "object")?,
                        "customer" => set(&mut object.customer, map.next_value()?, "customer")?,
                        _ => {
                            map.next_value::<AnyJson>()?;
                        }
                    }
                }
                Ok(object)
            }
        }

        /// A field given twice is an error, as a derived reader makes it.
        fn set<T, E: de::Error>(slot: &mut Option<T>, value: Option<T>, name: &'static str) -> Result<(), E> {
            if slot.is_some() {
                return Err(E::duplicate_field(name));
            }
            *slot = value;
            Ok(())
        }

        /// An optional string borrowed from the body where it has no escapes.
        struct Borrowed<'a>(Option<Cow<'a, str>>);

        impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                struct Wrap<'a>(#[serde(borrow)] Option<Cow<'a, str>>);
                Wrap::deserialize(deserializer).map(|Wrap(value)| Borrowed(value))
            }
        }

        // A struct with its fields named, as a derived reader declares them (what reads a
        // struct's fields, such as the API-version check of what the models read, sees them).
        const FIELDS: &[&str] = &["id", "object", "customer"];
        deserializer.deserialize_struct("EnvelopeObject", FIELDS, Fields(std::marker::PhantomData))
    }
}

/// Every field [`RelatedObject`] reads, read the same way, though routing needs only two: a
/// field the envelope skipped could be given twice or with the wrong type, and the processor
/// would then refuse what the receiver had accepted (`cargo fuzz` found a doubled `url`).
#[derive(Debug, Deserialize)]
pub struct EnvelopeRelated<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    pub object_type: Cow<'a, str>,
    #[serde(borrow, default)]
    pub url: Option<Cow<'a, str>>,
}

/// Why a payload is not a Stripe event at all: retrying it cannot help. Only positions and
/// type names are kept, never the payload's text (it may hold personal data).
#[derive(Debug, thiserror::Error)]
pub enum NotAnEvent {
    #[error("not the JSON of an event (line {line}, column {column})")]
    Malformed { line: usize, column: usize },
    #[error("an event with neither data.object (snapshot) nor related_object (thin)")]
    NoObject,
    #[error("an object of type {0:?}, not an event")]
    WrongObject(String),
}

impl From<serde_json::Error> for NotAnEvent {
    fn from(error: serde_json::Error) -> Self {
        NotAnEvent::Malformed {
            line: error.line(),
            column: error.column(),
        }
    }
}

impl<'a> EventEnvelope<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, NotAnEvent> {
        let envelope: Self = serde_json::from_slice(body)?;
        envelope.shape()?;
        Ok(envelope)
    }

    pub fn shape(&self) -> Result<Shape, NotAnEvent> {
        shape_of(
            self.object.as_deref(),
            self.data.is_some(),
            self.related_object.is_some(),
        )
    }

    /// The type as a snapshot event names it: a thin `v1.invoice.paid` is `invoice.paid`.
    pub fn snapshot_type(&self) -> &str {
        snapshot_type(self.object.as_deref(), &self.event_type)
    }

    /// The Stripe customer the event is about. A customer event's object *is* the customer.
    /// Thin events name only their object, so they have none.
    pub fn customer_id(&self) -> Option<&str> {
        let object = &self.data.as_ref()?.object;
        match (&object.customer, object.object.as_deref(), object.id.as_deref()) {
            (Some(customer), _, _) => Some(customer.0.as_ref()),
            (None, Some("customer"), Some(id)) => Some(id),
            _ => None,
        }
    }

    /// The FIFO ordering key: all events of one customer are applied one at a time, in order;
    /// a thin event, which names only its object, is ordered with that object's events.
    pub fn ordering_key(&self) -> &str {
        self.customer_id()
            .or(self.data.as_ref().and_then(|data| data.object.id.as_deref()))
            .or(self.related_object.as_ref().map(|related| related.id.as_ref()))
            .unwrap_or(self.id.as_ref())
    }
}

fn shape_of(object: Option<&str>, has_data: bool, has_related: bool) -> Result<Shape, NotAnEvent> {
    match (object, has_data, has_related) {
        (Some(THIN_OBJECT), _, true) => Ok(Shape::Thin),
        (Some("event") | None, true, _) => Ok(Shape::Snapshot),
        (Some(THIN_OBJECT | "event") | None, _, _) => Err(NotAnEvent::NoObject),
        (Some(other), _, _) => Err(NotAnEvent::WrongObject(other.chars().take(64).collect())),
    }
}

fn snapshot_type<'t>(object: Option<&str>, event_type: &'t str) -> &'t str {
    match object {
        Some(THIN_OBJECT) => event_type.strip_prefix(THIN_TYPE_PREFIX).unwrap_or(event_type),
        _ => event_type,
    }
}

/// Any JSON value, read the way `serde_json::Value` reads one (numbers in range, strings
/// unescaped, the same nesting limit) and then dropped.
struct AnyJson;

impl<'de> Deserialize<'de> for AnyJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyJson)
    }
}

impl<'de> de::Visitor<'de> for AnyJson {
    type Value = AnyJson;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(AnyJson)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(AnyJson)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(AnyJson)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(AnyJson)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(AnyJson)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(AnyJson)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        while map.next_key::<AnyJson>()?.is_some() {
            map.next_value::<AnyJson>()?;
        }
        Ok(AnyJson)
    }
}

/// `created` as Unix seconds: a number (snapshot events) or an RFC 3339 string (thin events).
fn unix_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Created<'a> {
        Seconds(i64),
        Text(#[serde(borrow)] Cow<'a, str>),
    }
    match Created::deserialize(deserializer)? {
        Created::Seconds(seconds) => Ok(seconds),
        Created::Text(text) => OffsetDateTime::parse(&text, &Rfc3339)
            .map(OffsetDateTime::unix_timestamp)
            .map_err(|_| de::Error::custom("created is neither Unix seconds nor an RFC 3339 time")),
    }
}

/// The object a thin event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedObject {
    pub id: String,
    #[serde(rename = "type")]
    pub object_type: String,
    #[serde(default)]
    pub url: Option<String>,
}

/// An event as a processor handles it. A snapshot event holds its object as JSON, typed by the
/// handler that knows what it holds; a thin one holds only `related`, until the processor has
/// read the object ([`Event::with_current`]).
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    /// The snapshot type (`invoice.paid`), whichever shape delivered it.
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    pub api_version: Option<String>,
    pub shape: Shape,
    pub data: EventData,
    pub related: Option<RelatedObject>,
    /// The object was read from Stripe just now, at the pinned version, rather than taken
    /// from the payload: it is Stripe's current state, at least as new as the event.
    pub read_now: bool,
    /// A thin event's own `data` (a meter error report's `reason`), when the payload carries
    /// it: events read from `GET /v2/core/events` do, notifications do not.
    pub details: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// An event as delivered, in either shape: what [`Event::parse`] reads.
#[derive(Deserialize)]
pub struct WireEvent {
    id: String,
    #[serde(default)]
    object: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(deserialize_with = "unix_seconds")]
    created: i64,
    #[serde(default)]
    livemode: bool,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    data: Option<WireData>,
    #[serde(default)]
    related_object: Option<RelatedObject>,
}

#[derive(Deserialize)]
pub struct WireData {
    /// Absent from a thin event's `data`, which holds the event's own details instead.
    #[serde(default)]
    object: serde_json::Value,
}

impl Event {
    pub fn parse(body: &str) -> Result<Self, NotAnEvent> {
        let raw: WireEvent = serde_json::from_str(body)?;
        let shape = shape_of(raw.object.as_deref(), raw.data.is_some(), raw.related_object.is_some())?;
        let event_type = snapshot_type(raw.object.as_deref(), &raw.event_type).to_owned();
        // A thin event's own `data` is read again as it is (it is small, and rare in payloads).
        let details = match (&raw.data, shape) {
            (Some(_), Shape::Thin) => serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|mut event| event.get_mut("data").map(serde_json::Value::take)),
            _ => None,
        };
        let object = raw.data.map(|data| data.object).unwrap_or_default();
        Ok(Self {
            id: raw.id,
            event_type,
            created: raw.created,
            livemode: raw.livemode,
            api_version: raw.api_version,
            shape,
            data: EventData { object },
            related: raw.related_object.filter(|_| shape == Shape::Thin),
            read_now: false,
            details,
        })
    }

    /// The event with `object` — read from Stripe just now — in place of its payload.
    pub fn with_current(mut self, object: serde_json::Value) -> Self {
        self.data.object = object;
        self.read_now = true;
        self
    }
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
        for body in [
            &b"[]"[..],
            b"{}",
            b"not json",
            br#"{"id":1}"#,
            b"",
            br#"{"id":"evt_1","type":"invoice.paid","created":1}"#,
            br#"{"id":"cus_1","object":"customer","type":"x","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","object":"v2.core.event","type":"v1.invoice.paid","created":"yesterday","related_object":{"id":"in_1","type":"invoice"}}"#,
        ] {
            assert!(EventEnvelope::parse(body).is_err());
            assert!(Event::parse(std::str::from_utf8(body).unwrap()).is_err());
        }
    }

    /// Found by `cargo fuzz` (event_envelope, eventbridge): what `Event::parse` cannot read —
    /// a number beyond `f64`'s range, nesting past serde_json's limit, a lone surrogate —
    /// anywhere in `data.object` is refused by the envelope too, not enqueued and then dropped.
    #[test]
    fn the_envelope_refuses_what_the_processor_cannot_read() {
        let event = |object: &str| {
            format!(
                r#"{{"id":"evt_1","object":"event","type":"customer.subscription.updated","created":1,"data":{{"object":{object}}}}}"#
            )
        };
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for object in [
            r#"{"id":"sub_1","object":"subscription","created":123777770077777777000E634567890}"#.to_owned(),
            r#"{"id":"sub_1","items":[1e400]}"#.to_owned(),
            format!(r#"{{"id":"sub_1","x":{deep}}}"#),
            r#"{"id":"sub_1","name":"\ud800"}"#.to_owned(),
        ] {
            let body = event(&object);
            assert!(Event::parse(&body).is_err(), "{body}");
            assert!(EventEnvelope::parse(body.as_bytes()).is_err(), "{body}");
        }
        // The same holds for a thin event's related object (its url doubled, or not a string).
        for related in [
            r#"{"id":"in_1","type":"invoice","url":"/v1/invoices/in_1","url":"/v1/invoices/in_2"}"#,
            r#"{"id":"in_1","type":"invoice","url":7}"#,
        ] {
            let body = format!(
                r#"{{"id":"evt_1","object":"v2.core.event","type":"v1.invoice.paid","created":"2026-11-23T12:13:20.000Z","related_object":{related}}}"#
            );
            assert!(Event::parse(&body).is_err(), "{body}");
            assert!(EventEnvelope::parse(body.as_bytes()).is_err(), "{body}");
        }
        // What the processor reads, the envelope still accepts.
        let body =
            event(r#"{"id":"sub_1","n":[1.5e300,-0,18446744073709551616],"s":"\u00e9\ud83d\ude00","deep":[[[{}]]]}"#);
        assert!(Event::parse(&body).is_ok());
        assert!(EventEnvelope::parse(body.as_bytes()).is_ok());
    }

    /// A thin event as Stripe's docs show one (`/v2/core/events`, "event notification"):
    /// its `created` is an RFC 3339 time; 2026-11-30T12:00:00Z is Unix 1796040000.
    const THIN: &str = r#"{"id":"evt_test_65RM8sQ5","object":"v2.core.event","type":"v1.customer.subscription.updated",
        "livemode":false,"created":"2026-11-30T12:00:00.000Z","context":null,
        "related_object":{"id":"sub_1","type":"subscription","url":"/v1/subscriptions/sub_1"}}"#;

    #[test]
    fn thin_events_route_by_their_snapshot_type_and_group_by_their_object() {
        let envelope = EventEnvelope::parse(THIN.as_bytes()).unwrap();
        assert_eq!(envelope.shape().unwrap(), Shape::Thin);
        assert_eq!(envelope.snapshot_type(), "customer.subscription.updated");
        assert_eq!(envelope.created, 1_796_040_000);
        assert_eq!(envelope.ordering_key(), "sub_1");
        assert_eq!(envelope.customer_id(), None);

        let event = Event::parse(THIN).unwrap();
        assert_eq!(event.shape, Shape::Thin);
        assert_eq!(event.event_type, "customer.subscription.updated");
        assert_eq!(event.created, 1_796_040_000);
        assert_eq!(event.related.as_ref().map(|r| r.id.as_str()), Some("sub_1"));
        assert!(event.data.object.is_null() && !event.read_now);
    }

    #[test]
    fn snapshot_events_keep_their_type_and_object() {
        let body = r#"{"id":"evt_1","object":"event","type":"invoice.paid","created":1700000000,"livemode":true,
            "api_version":"2017-08-15","data":{"object":{"id":"in_1","object":"invoice"}}}"#;
        let event = Event::parse(body).unwrap();
        assert_eq!(
            (event.shape, event.event_type.as_str()),
            (Shape::Snapshot, "invoice.paid")
        );
        assert_eq!(event.api_version.as_deref(), Some("2017-08-15"));
        assert_eq!(event.data.object["id"], "in_1");
        let fresh = event.with_current(serde_json::json!({"id": "in_1", "status": "paid"}));
        assert!(fresh.read_now);
        assert_eq!(fresh.data.object["status"], "paid");
    }
}
