//! Stripe references that arrive either as an id string or, when expanded, as the object itself.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// An owned reference to a Stripe object: `"cus_123"` or `{"id":"cus_123",...}` both give `cus_123`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ObjectId(pub String);

impl ObjectId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = deserializer.deserialize_any(IdVisitor)?;
        Ok(ObjectId(id.into_owned()))
    }
}

/// The borrowed twin of [`ObjectId`], for the zero-copy envelope parse on the webhook path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BorrowedId<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedId<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IdVisitor).map(BorrowedId)
    }
}

struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Stripe id string or an expanded object with an id")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "id" && id.is_none() {
                id = Some(map.next_value::<Cow<'de, str>>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        id.ok_or_else(|| de::Error::missing_field("id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_and_expanded_objects() {
        let plain: ObjectId = serde_json::from_str(r#""cus_1""#).unwrap();
        let expanded: ObjectId = serde_json::from_str(r#"{"object":"customer","id":"cus_1","x":[1]}"#).unwrap();
        assert_eq!(plain, expanded);
        let borrowed: BorrowedId<'_> = serde_json::from_str(r#""sub_1""#).unwrap();
        assert!(matches!(borrowed.0, Cow::Borrowed("sub_1")));
        assert!(serde_json::from_str::<ObjectId>("{}").is_err());
        assert!(serde_json::from_str::<ObjectId>("12").is_err());
    }
}
