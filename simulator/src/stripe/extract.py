"""Copies the Stripe data the simulator needs beyond tests/fixtures/stripe (which the rest of the
repo shares) out of the kit beside the repo (../shared/stripe).

Origin: Stripe's official stripe/openapi repository —
  fixtures3.json        (example objects, API version 2026-07-29)
  spec3.2023-09-12.json (OpenAPI spec, API version 2023-08-16)
Parameters newer than the 2023 spec are added from the official stripe-python SDK 16.1.0
(stripe/params/**/_*_params.py); each addition is listed in ADDITIONS.
Run from the repo root: python3 simulator/src/stripe/extract.py ../shared/stripe
"""
import json
import sys
from pathlib import Path

kit = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/stripe")
out = Path(__file__).parent

fixtures = json.loads((kit / "fixtures3.json").read_text())["resources"]
for name in ["refund", "charge", "payment_intent", "invoice_payment"]:
    (out / f"{name}.json").write_text(json.dumps(fixtures[name], indent=1, sort_keys=True) + "\n")

spec = json.loads((kit / "spec3.2023-09-12.json").read_text())
OPERATIONS = {
    "/v1/customers/{customer}": ["delete"],
    "/v1/checkout/sessions": ["get"],
    "/v1/checkout/sessions/{session}": ["get"],
    "/v1/checkout/sessions/{session}/expire": ["post"],
    "/v1/invoices": ["get"],
    "/v1/invoices/{invoice}/void": ["post"],
    "/v1/invoices/{invoice}/mark_uncollectible": ["post"],
    "/v1/payment_intents/{intent}": ["get"],
    "/v1/charges/{charge}": ["get"],
    "/v1/refunds": ["get", "post"],
    "/v1/refunds/{refund}": ["get"],
}
# stripe-python 16.1.0, stripe/params/checkout/_session_list_params.py: `status`.
ADDITIONS = {
    ("/v1/checkout/sessions", "get"): [
        {"name": "status", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["complete", "expired", "open"]}},
    ],
}


def resolve(node, depth=0):
    """Inlines $refs so the subset stands alone (request schemas are shallow)."""
    if depth > 12:
        return {}
    if isinstance(node, dict):
        if "$ref" in node:
            target = spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return resolve(target, depth + 1)
        return {k: resolve(v, depth) for k, v in node.items() if k not in ("description", "x-expandableFields")}
    if isinstance(node, list):
        return [resolve(v, depth) for v in node]
    return node


subset = {"origin": "stripe/openapi spec3.json, API version 2023-08-16, request parts only; "
          "plus parameters from stripe-python 16.1.0 (see extract.py)", "paths": {}}
for path, methods in OPERATIONS.items():
    subset["paths"][path] = {}
    for method in methods:
        op = spec["paths"][path][method]
        subset["paths"][path][method] = {
            "parameters": [
                {"name": p["name"], "in": p["in"], "required": p.get("required", False), "schema": resolve(p.get("schema", {}))}
                for p in op.get("parameters", [])
            ] + ADDITIONS.get((path, method), []),
            "requestBody": resolve(op.get("requestBody", {}).get("content", {}).get("application/x-www-form-urlencoded", {}).get("schema", {})),
        }
(out / "spec-extra.json").write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")
print("wrote", sorted(p.name for p in out.iterdir()))
