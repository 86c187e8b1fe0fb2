"""A consumer of `billing.entitlement_changed`: keeps each account's entitlement in a local
cache, so the app checks access without calling GET /billing/me on every request.

Subscribe an SQS queue to the stack's app-events topic (RawMessageDelivery = true, and a
filter policy {"type": ["billing.entitlement_changed"]} if the queue wants nothing else).
Messages arrive at least once and in any order: keep the highest `version` per account and
ignore the rest. The view is as of the message's `at`: apply `access_until` at your own clock.

    python3 examples/entitlement_cache.py <queue-url>     # drains the queue, prints the cache
"""
import json
import sys
import time

import boto3


def apply(cache, body):
    """Takes one message into the cache; False if it was not news (older, repeated, other type)."""
    event = json.loads(body)
    if event.get("type") != "billing.entitlement_changed":
        return False
    held = cache.get(event["account_id"])
    if held is not None and held["version"] >= event["version"]:
        return False
    cache[event["account_id"]] = {"version": event["version"], "entitlement": event["entitlement"]}
    return True


def may_use(cache, account_id, feature, now=None):
    """What the app asks before letting a member use `feature`."""
    held = cache.get(account_id)
    if held is None:
        return False  # never told: ask GET /billing/me once, or treat as no access
    view = held["entitlement"]
    until = view["access_until"]
    running = view["access"] != "none" and (until is None or (now or time.time()) < until)
    return running and feature in view["features"]


def drain(queue_url, cache):
    sqs = boto3.client("sqs")
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = answer.get("Messages", [])
        if not messages:
            return cache
        for message in messages:
            apply(cache, message["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


if __name__ == "__main__":
    print(json.dumps(drain(sys.argv[1], {})))
