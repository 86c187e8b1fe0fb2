//! Stripe's request encoding: `application/x-www-form-urlencoded` with nested keys,
//! `a[b]=v` for objects and `a[0][b]=v` for arrays. `null` leaves a parameter out.

use serde_json::Value;
use url::form_urlencoded::Serializer;

pub fn encode(params: &Value) -> String {
    let mut serializer = Serializer::new(String::new());
    if let Value::Object(map) = params {
        for (key, value) in map {
            push(&mut serializer, key, value);
        }
    }
    serializer.finish()
}

fn push(serializer: &mut Serializer<'_, String>, key: &str, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bool(flag) => {
            serializer.append_pair(key, if *flag { "true" } else { "false" });
        }
        Value::Number(number) => {
            serializer.append_pair(key, &number.to_string());
        }
        Value::String(text) => {
            serializer.append_pair(key, text);
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                push(serializer, &format!("{key}[{index}]"), item);
            }
        }
        Value::Object(map) => {
            for (child, item) in map {
                push(serializer, &format!("{key}[{child}]"), item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_nested_objects_and_arrays() {
        let params = json!({
            "mode": "subscription",
            "line_items": [{"price": "price_1", "quantity": 2}],
            "subscription_data": {"metadata": {"user_id": "u 1&2"}, "trial_period_days": 14},
            "allow_promotion_codes": true,
            "customer_email": null,
        });
        let encoded = encode(&params);
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(encoded.as_bytes()).into_owned().collect();
        assert_eq!(
            pairs,
            vec![
                ("allow_promotion_codes".into(), "true".into()),
                ("line_items[0][price]".into(), "price_1".into()),
                ("line_items[0][quantity]".into(), "2".into()),
                ("mode".into(), "subscription".into()),
                ("subscription_data[metadata][user_id]".into(), "u 1&2".into()),
                ("subscription_data[trial_period_days]".into(), "14".into()),
            ]
        );
        assert!(encoded.contains("subscription_data%5Bmetadata%5D%5Buser_id%5D=u+1%262"));
    }

    #[test]
    fn non_objects_encode_to_nothing() {
        assert_eq!(encode(&json!(null)), "");
        assert_eq!(encode(&json!([1, 2])), "");
    }
}
