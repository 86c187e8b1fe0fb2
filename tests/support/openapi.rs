//! The billing API's OpenAPI document (`functions/checkout/openapi.yaml`) as an oracle: answers
//! are validated against its component schemas by the `jsonschema` package (OpenAPI 3.1
//! schemas are JSON Schema 2020-12), so the document and the code cannot drift apart.

use serde_json::{Value, json};

use crate::oracle::python;

const DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../functions/checkout/openapi.yaml");

const VALIDATE: &str = r##"
import json, sys, yaml, jsonschema
document = yaml.safe_load(open(sys.argv[1]))
errors = []
for case in json.load(sys.stdin):
    schema = {"$ref": "#/components/schemas/" + case["schema"], "components": document["components"]}
    for error in jsonschema.Draft202012Validator(schema).iter_errors(case["value"]):
        errors.append(f'{case["schema"]}: {error.json_path}: {error.message}')
print(json.dumps(errors))
"##;

/// Every `(schema, value)` validated; the differences found, empty when all match.
pub fn differences(cases: &[(&str, &Value)]) -> Vec<String> {
    let input: Vec<Value> = cases
        .iter()
        .map(|(schema, value)| json!({"schema": schema, "value": value}))
        .collect();
    let printed = python(&["-c", VALIDATE, DOCUMENT], &Value::from(input).to_string());
    serde_json::from_slice(&printed).expect("the validator prints a JSON list")
}

/// Panics with the differences unless `value` matches the document's schema `schema`.
pub fn assert_matches(schema: &str, value: &Value) {
    let found = differences(&[(schema, value)]);
    assert!(
        found.is_empty(),
        "{value} does not match the OpenAPI document:\n{}",
        found.join("\n")
    );
}

const EXAMPLES: &str = r##"
import json, sys, yaml, jsonschema
document = yaml.safe_load(open(sys.argv[1]))
errors, checked = [], 0
def walk(node, where):
    global checked
    if isinstance(node, dict):
        if "schema" in node and ("example" in node or "examples" in node):
            schema = dict(node["schema"], components=document["components"])
            values = [("example", node["example"])] if "example" in node else [
                (name, example["value"]) for name, example in node["examples"].items() if "value" in example]
            for name, value in values:
                checked += 1
                for error in jsonschema.Draft202012Validator(schema).iter_errors(value):
                    errors.append(f"{where} {name}: {error.json_path}: {error.message}")
        for key, child in node.items():
            walk(child, f"{where}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            walk(child, f"{where}/{index}")
walk(document.get("paths", {}), "paths")
walk(document["components"].get("responses", {}), "responses")
walk(document["components"].get("requestBodies", {}), "requestBodies")
assert checked >= 20, f"only {checked} examples found"
print(json.dumps(errors))
"##;

/// Every example the document gives for a request or response body, validated against the
/// schema beside it; the differences found.
pub fn example_differences() -> Vec<String> {
    let printed = python(&["-c", EXAMPLES, DOCUMENT], "");
    serde_json::from_slice(&printed).expect("the validator prints a JSON list")
}
