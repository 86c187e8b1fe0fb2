//! Validates requests against Stripe's official OpenAPI spec (the subsets in
//! tests/fixtures/stripe/spec-subset.json), the way Stripe does: the form body
//! `a[b][0][c]=v` is decoded into nested values, strings are coerced to the schema's types,
//! and any parameter the schema does not define is an error.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Leaf(String),
    Map(BTreeMap<String, Node>),
}

pub struct Spec {
    paths: serde_json::Map<String, Value>,
}

impl Spec {
    /// The spec subset is compiled in; an unreadable one is a build defect, caught by every
    /// test that validates a request, so it yields an empty spec rather than a panic.
    pub fn load() -> Self {
        let spec: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/stripe/spec-subset.json")).unwrap_or_default();
        let paths = spec["paths"].as_object().cloned().unwrap_or_default();
        Self { paths }
    }

    /// Checks one request; the error lists every problem found.
    pub fn validate(&self, method: &str, path: &str, query: Option<&str>, body: &[u8]) -> Result<(), Vec<String>> {
        let method = method.to_ascii_lowercase();
        let operation = self
            .paths
            .iter()
            .find(|(template, ops)| path_matches(template, path) && ops.get(&method).is_some())
            .map(|(_, ops)| &ops[&method])
            .ok_or_else(|| vec![format!("{method} {path} is not an operation in the spec")])?;
        let mut errors = Vec::new();
        let query_params = decode(query.unwrap_or_default().as_bytes());
        let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
        for (name, node) in &query_params {
            match parameters
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == name.as_str())
            {
                Some(parameter) => check(&parameter["schema"], node, name, &mut errors),
                None => errors.push(format!("unknown query parameter {name}")),
            }
        }
        let form = decode(body);
        let schema = &operation["requestBody"];
        if !form.is_empty() || schema.get("required").is_some() {
            check(schema, &Node::Map(form), "", &mut errors);
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// A form body as nested JSON, the way Stripe reads it: `a[0][b]=v` → `{"a":[{"b":"v"}]}`.
pub fn decode_form(form: &[u8]) -> Value {
    fn to_value(node: &Node) -> Value {
        match node {
            Node::Leaf(text) => Value::String(text.clone()),
            Node::Map(map) if !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok()) => {
                let mut items: Vec<(usize, Value)> = map
                    .iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, to_value(v))))
                    .collect();
                items.sort_by_key(|(index, _)| *index);
                Value::Array(items.into_iter().map(|(_, v)| v).collect())
            }
            Node::Map(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()),
        }
    }
    to_value(&Node::Map(decode(form)))
}

fn path_matches(template: &str, path: &str) -> bool {
    let template: Vec<&str> = template.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    template.len() == path.len()
        && template
            .iter()
            .zip(&path)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// `a[b][0]=v` → {"a": {"b": {"0": "v"}}}.
fn decode(form: &[u8]) -> BTreeMap<String, Node> {
    let mut root = BTreeMap::new();
    for (key, value) in url::form_urlencoded::parse(form) {
        let mut parts = Vec::new();
        let (head, mut rest) = key.split_once('[').map_or((key.as_ref(), ""), |(h, r)| (h, r));
        parts.push(head.to_owned());
        while let Some((part, after)) = rest.split_once(']') {
            parts.push(part.to_owned());
            rest = after.strip_prefix('[').unwrap_or(after);
        }
        insert(&mut root, &parts, value.into_owned());
    }
    root
}

fn insert(map: &mut BTreeMap<String, Node>, parts: &[String], value: String) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    // `a[]=x&a[]=y` appends, as Stripe reads repeated list parameters (`types[]`).
    let first = &if first.is_empty() {
        map.len().to_string()
    } else {
        first.clone()
    };
    if rest.is_empty() {
        map.insert(first.clone(), Node::Leaf(value));
        return;
    }
    let entry = map.entry(first.clone()).or_insert_with(|| Node::Map(BTreeMap::new()));
    if let Node::Leaf(_) = entry {
        *entry = Node::Map(BTreeMap::new());
    }
    if let Node::Map(child) = entry {
        insert(child, rest, value);
    }
}

fn check(schema: &Value, node: &Node, at: &str, errors: &mut Vec<String>) {
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        let passes = branches.iter().any(|branch| {
            let mut scratch = Vec::new();
            check(branch, node, at, &mut scratch);
            scratch.is_empty()
        });
        if !passes {
            errors.push(format!("{at}: matches none of the allowed shapes"));
        }
        return;
    }
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or("");
    match (kind, node) {
        ("object", Node::Map(map)) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, child) in map {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}[{key}]")
                };
                match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                    (Some(child_schema), _) => check(child_schema, child, &path, errors),
                    (None, Some(Value::Object(extra))) => check(&Value::Object(extra.clone()), child, &path, errors),
                    (None, Some(Value::Bool(true))) => {}
                    _ => errors.push(format!("unknown parameter {path}")),
                }
            }
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = required.as_str() {
                    if !map.contains_key(name) {
                        errors.push(format!("{at}: missing required parameter {name}"));
                    }
                }
            }
        }
        ("array", Node::Map(items)) => {
            for (index, item) in items {
                if index.parse::<usize>().is_err() && !index.is_empty() {
                    errors.push(format!("{at}[{index}]: array index expected"));
                }
                check(&schema["items"], item, &format!("{at}[{index}]"), errors);
            }
        }
        ("string", Node::Leaf(value)) => {
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                if !allowed.iter().any(|a| a.as_str() == Some(value)) {
                    errors.push(format!("{at}: {value:?} is not one of {allowed:?}"));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if value.chars().count() as u64 > max {
                    errors.push(format!("{at}: longer than {max}"));
                }
            }
        }
        ("integer", Node::Leaf(value)) => {
            if value.parse::<i64>().is_err() {
                errors.push(format!("{at}: {value:?} is not an integer"));
            }
        }
        ("number", Node::Leaf(value)) => {
            if value.parse::<f64>().is_err() {
                errors.push(format!("{at}: {value:?} is not a number"));
            }
        }
        ("boolean", Node::Leaf(value)) => {
            if value != "true" && value != "false" {
                errors.push(format!("{at}: {value:?} is not a boolean"));
            }
        }
        ("", _) => {}
        (kind, _) => errors.push(format!("{at}: expected {kind}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_and_rejects_unknown_or_mistyped_parameters() {
        let spec = Spec::load();
        let ok = b"mode=subscription&line_items[0][price]=price_1&line_items[0][quantity]=2&success_url=https://a/s&subscription_data[metadata][user_id]=u1&subscription_data[trial_period_days]=14";
        assert_eq!(spec.validate("POST", "/v1/checkout/sessions", None, ok), Ok(()));
        let unknown = b"mode=subscription&price=price_1";
        assert!(
            spec.validate("POST", "/v1/checkout/sessions", None, unknown)
                .unwrap_err()[0]
                .contains("unknown parameter price")
        );
        let nested_unknown = b"mode=subscription&subscription_data[colour]=red";
        assert!(
            spec.validate("POST", "/v1/checkout/sessions", None, nested_unknown)
                .is_err()
        );
        let wrong_type = b"mode=subscription&line_items[0][quantity]=two";
        assert!(
            spec.validate("POST", "/v1/checkout/sessions", None, wrong_type)
                .is_err()
        );
        let bad_enum = b"mode=rental";
        assert!(spec.validate("POST", "/v1/checkout/sessions", None, bad_enum).is_err());
        assert!(
            spec.validate(
                "GET",
                "/v1/subscriptions",
                Some("customer=cus_1&status=all&limit=100"),
                b""
            )
            .is_ok()
        );
        assert!(
            spec.validate("GET", "/v1/subscriptions", Some("colour=red"), b"")
                .is_err()
        );
        assert!(spec.validate("POST", "/v1/charges", None, b"").is_err());
    }

    #[test]
    fn repeated_empty_indexes_form_a_list() {
        assert_eq!(
            decode_form(b"types%5B%5D=invoice.paid&types%5B%5D=invoice.payment_failed&limit=100"),
            serde_json::json!({"types": ["invoice.paid", "invoice.payment_failed"], "limit": "100"})
        );
        assert!(
            Spec::load()
                .validate(
                    "GET",
                    "/v1/events",
                    Some("types[]=invoice.paid&types[]=invoice.paid"),
                    b""
                )
                .is_ok()
        );
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn webhook_endpoint_create() {
        let spec = Spec::load();
        let body = shared::stripe::form::encode(&serde_json::json!({
            "url": "http://127.0.0.1:1/webhooks/stripe",
            "enabled_events": ["invoice.paid", "customer.deleted"],
            "description": "x",
            "metadata": {"billing_stack": "s"},
            "api_version": "2026-10-28.endive",
        }));
        assert_eq!(
            spec.validate("POST", "/v1/webhook_endpoints", None, body.as_bytes()),
            Ok(())
        );
    }
}
