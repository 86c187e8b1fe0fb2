#!/usr/bin/env python3
"""Project rules for the SAM template that cfn-lint does not know about.

Usage:
    python3 infra/check_template.py infra/template.yaml   # self-test, then check the template
    python3 infra/check_template.py --self-test           # self-test only

Every run first feeds the checker deliberately broken in-memory templates and makes sure each
one is caught (and that a correct one is not), so the checker cannot silently pass everything.
Besides the template it reads functions/ (one function per crate), README.md (the event-types
block, which the EventBridge rule must filter on) and shared/src/stripe/client.rs (the pinned
API version, which the StripeApiVersion output must state). What each function may read of the
Stripe secrets (STRIPE_SECRET_ACCESS) and do to the billing table (DYNAMODB_ACCESS) is stated in
this file, from the Rust code, and the template must grant exactly that.
Exit status: 0 when all rules hold, 1 on any violation or unreadable input, 2 when the
self-test itself fails.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNTIME = "provided.al2023"
ARCHITECTURE = "arm64"
BUILD_METHOD = "rust-cargolambda"
WEBHOOK_PATH = "/webhooks/stripe"
MIN_MAX_RECEIVE_COUNT = 10
VISIBILITY_FACTOR = 6
LAMBDA_DEFAULT_TIMEOUT = 3
SQS_DEFAULT_VISIBILITY = 30
README = REPO_ROOT / "README.md"
EVENT_TYPES_BEGIN = "<!-- event-types -->"
EVENT_TYPES_END = "<!-- /event-types -->"
STRIPE_CLIENT = REPO_ROOT / "shared" / "src" / "stripe" / "client.rs"
# The billing API's routes, as its OpenAPI document lists them: API Gateway must route each.
OPENAPI = REPO_ROOT / "functions" / "checkout" / "openapi.yaml"
API_VERSION_PATTERN = re.compile(r'^pub const API_VERSION: &str = "([^"]+)";$', re.MULTILINE)
API_VERSION_OUTPUT = "StripeApiVersion"
# Thin events name the same types with this prefix (v1.invoice.paid for invoice.paid).
THIN_EVENT_PREFIX = "v1."
STRIPE_PARTNER_SOURCE_PREFIX = "aws.partner/stripe.com/"
EVENTS_PRINCIPAL = "events.amazonaws.com"
# Standard (not FIFO) queues that a function consumes: usage reports, whose order does not
# matter (sums commute) and whose repeats the identifier records make free, so they take
# SQS's standard throughput and Lambda's batches of up to 10,000; and their dead-letter queue,
# which SQS requires to be of the same type.
STANDARD_QUEUES = frozenset({"UsageQueue", "UsageDeadLetterQueue"})
# The queues a Stripe event receiver sends to, by the environment variable that names them.
RECEIVER_QUEUE_VARIABLES = ("EVENTS_QUEUE_URL", "PAYMENT_FAILED_QUEUE_URL")


@dataclass(frozen=True)
class SecretSpec:
    """One Stripe secret: the variable that tells a function its ARN (shared/src/config/secrets.rs),
    the parameter naming an existing secret (default "": the stack creates `resource`), and the
    output stating the one in use (named like the parameter)."""

    variable: str
    parameter: str
    resource: str


API_KEY = "API key secret"
WEBHOOK_SECRET = "webhook signing secret"
STRIPE_SECRETS: dict[str, SecretSpec] = {
    # {"STRIPE_SECRET_KEY":"rk_..."}
    API_KEY: SecretSpec("STRIPE_API_KEY_SECRET_ARN", "StripeApiKeySecretArn", "StripeApiKeySecret"),
    # {"STRIPE_WEBHOOK_SECRET":"whsec_new,whsec_old"}
    WEBHOOK_SECRET: SecretSpec("STRIPE_WEBHOOK_SECRET_ARN", "StripeWebhookSecretArn", "StripeWebhookSecret"),
}
# The single combined secret of earlier versions: no function may be told it any more.
RETIRED_SECRET_VARIABLES = ("STRIPE_SECRETS_ARN",)
# Per function (logical id): the Stripe secrets it reads. It must be told each one's ARN and be
# able to read exactly those (GetSecretValue on that ARN and no other, no wildcard), and be told
# and allowed nothing else. A new function must be added here, which forces the question.
STRIPE_SECRET_ACCESS: dict[str, frozenset[str]] = {
    # Verifies signatures and enqueues: never calls Stripe, so never holds the API key.
    "WebhookFunction": frozenset({WEBHOOK_SECRET}),
    # The partner event source and IAM authenticate; it calls nothing at Stripe.
    "EventBridgeFunction": frozenset(),
    # bootstrap::stripe_client (api_key) through bootstrap::syncer, or directly (reconcile).
    "CheckoutFunction": frozenset({API_KEY}),
    "EventsFunction": frozenset({API_KEY}),
    "PaymentFailedFunction": frozenset({API_KEY}),
    "ReconcileFunction": frozenset({API_KEY}),
    # stripe/meter_events.rs: the meter event session is created with the API key.
    "UsageFunction": frozenset({API_KEY}),
}


@dataclass(frozen=True)
class TableAccess:
    """DynamoDB actions (without the dynamodb: prefix) on the billing table and on its index."""

    table: frozenset[str] = frozenset()
    index: frozenset[str] = frozenset()


# Per function (logical id): the DynamoDB actions it may have on the billing table, exactly. The
# template must grant these in inline statements on the table's ARN (!GetAtt Table.Arn) and on
# the index's (!Sub ${Table.Arn}/index/gsi1), no more and no fewer; no DynamoDB policy template
# (DynamoDBCrudPolicy grants Scan, DeleteItem, BatchWriteItem, ...), no wildcard action.
#
# What each action is for, from shared/src/store/dynamodb.rs (store method -> DynamoDB call):
#   GetItem    customer_of_user, user_of_customer, checkout_session_user, get_subscription,
#              get_entitlement, get_dunning, event_state, get_cursor, claim_event (re-read
#              when a failed condition returned no item)
#   PutItem    put_checkout_session, put_entitlement, put_dunning, claim_event, set_cursor,
#              link_customer (TransactWriteItems of two conditional Puts), user_of_customer
#              (a legacy link found through the index gets its reverse item: conditional Put)
#   UpdateItem put_subscription, complete_event, count_request (ADD to a rate-limit counter)
#   DeleteItem release_event, unlink_customer (TransactWriteItems of two Deletes)
#   Query      subscriptions_of_customer, dunning_of_customer (table); user_of_customer's legacy
#              lookup on gsi1 (index)
#   Scan       sample_subscriptions (the drift check: one bounded page of a random segment)
# TransactWriteItems is no IAM action of its own: each part needs its action, and no
# transaction has a ConditionCheck part, so no function needs ConditionCheckItem. Every path
# that calls user_of_customer may take the legacy lookup, hence index Query and PutItem there.
DYNAMODB_ACCESS: dict[str, TableAccess] = {
    # Verifies and enqueues; no BILLING_TABLE.
    "WebhookFunction": TableAccess(),
    "EventBridgeFunction": TableAccess(),
    # functions/checkout/src: auth.rs count_request (UpdateItem, every user route);
    # routes/checkout.rs put_checkout_session, get_entitlement, customer_of_user, link_customer
    # (whose conflict path reads user_of_customer: GetItem, index Query, PutItem);
    # routes/mod.rs customer_of_user, subscriptions_of_customer, get_entitlement;
    # routes/subscription.rs put_subscription + Syncer::refresh_entitlement (get_entitlement,
    # customer_of_user, subscriptions_of_customer, dunning_of_customer, put_entitlement);
    # routes/billing.rs Syncer::sync_customer (put_subscription, refresh_entitlement).
    # Never unlinks, releases a lease or lists the table: no DeleteItem, no Scan.
    "CheckoutFunction": TableAccess(
        table=frozenset({"GetItem", "PutItem", "UpdateItem", "Query"}),
        index=frozenset({"Query"}),
    ),
    # processing/ledger.rs claim_event (PutItem, GetItem), complete_event (UpdateItem),
    # release_event (DeleteItem) around every event; sync/: checkout_session.rs
    # checkout_session_user + link_customer; customer.rs user_of_customer, link_customer,
    # unlink_customer (DeleteItem); subscription.rs put_subscription, get_subscription;
    # invoice_settled.rs get_dunning, put_dunning; purchase.rs put_purchase (UpdateItem);
    # mod.rs refresh_entitlement (above, plus purchases_of_customer: Query) and announce
    # (mark_announced: UpdateItem).
    "EventsFunction": TableAccess(
        table=frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"}),
        index=frozenset({"Query"}),
    ),
    # processing/ledger.rs as above (DeleteItem: release_event only); dunning/
    # invoice_payment_failed.rs get_dunning, put_dunning, Syncer::refetch_subscription
    # (put_subscription), Syncer::refresh_entitlement(customer, None) (user_of_customer, ...),
    # Syncer::announce (mark_announced: UpdateItem).
    "PaymentFailedFunction": TableAccess(
        table=frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"}),
        index=frozenset({"Query"}),
    ),
    # reconcile/mod.rs get_cursor, event_state (GetItem), set_cursor (PutItem); reconcile/
    # drift.rs sample_subscriptions (Scan), put_subscription (UpdateItem), refresh_entitlement
    # (user_of_customer with its legacy lookup, get_entitlement, customer_of_user, Query of
    # subscriptions and dunning, put_entitlement). The only function with Scan; no DeleteItem.
    "ReconcileFunction": TableAccess(
        table=frozenset({"GetItem", "PutItem", "UpdateItem", "Query", "Scan"}),
        index=frozenset({"Query"}),
    ),
    # usage/ledger.rs through store/dynamodb.rs: recorded (BatchGetItem of identifier records),
    # account_usage (Query of the account's partition), commit (TransactWriteItems of
    # conditional Puts and the counter's Update), confirm (UpdateItem). No index, no Delete.
    "UsageFunction": TableAccess(
        table=frozenset({"BatchGetItem", "PutItem", "UpdateItem", "Query"}),
    ),
}
GSI_NAME = "gsi1"
INDEX_ARN_PATTERN = re.compile(r"^\$\{([A-Za-z0-9]+)\.Arn\}/index/(.+)$")
# The values CloudWatch Logs accepts for a log group's RetentionInDays.
LOG_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)
LAMBDA_LOG_GROUP_PREFIX = "/aws/lambda/"
# The least MaximumConcurrency an SQS event source accepts.
MIN_MAXIMUM_CONCURRENCY = 2
SECRET_PATTERNS = [
    re.compile(r"sk_(live|test)_[A-Za-z0-9]+"),
    re.compile(r"rk_(live|test)_[A-Za-z0-9]+"),
    re.compile(r"whsec_[A-Za-z0-9]{8,}"),
]


# ------------------------------------------------------------------ parsing


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short-form intrinsic tags."""


def _intrinsic(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def parse(text: str) -> dict[str, Any]:
    document = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict):
        raise ValueError("the template is not a YAML mapping")
    return document


def star_resource_lines(text: str) -> list[int]:
    """0-based lines of `Resource:` keys of IAM statements whose value is '*' or holds '*'."""
    lines: list[int] = []

    def is_star(node: yaml.Node) -> bool:
        if isinstance(node, yaml.ScalarNode):
            return node.value == "*"
        if isinstance(node, yaml.SequenceNode):
            return any(isinstance(item, yaml.ScalarNode) and item.value == "*" for item in node.value)
        return False

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            keys = {key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)}
            statement = bool(keys & {"Effect", "Action", "NotAction"})
            for key, value in node.value:
                if statement and isinstance(key, yaml.ScalarNode) and key.value == "Resource" and is_star(value):
                    lines.append(key.start_mark.line)
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    root = yaml.compose(text, Loader=CfnLoader)
    if root is not None:
        walk(root)
    return lines


# ------------------------------------------------------------------ helpers


def logical_id(value: Any) -> str | None:
    """The resource a Ref / GetAtt points to, if it is one."""
    if isinstance(value, dict) and len(value) == 1:
        if "Ref" in value and isinstance(value["Ref"], str):
            return value["Ref"]
        getatt = value.get("Fn::GetAtt")
        if isinstance(getatt, list) and getatt and isinstance(getatt[0], str):
            return getatt[0]
    return None


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement.get("Action")
    if isinstance(action, str):
        return [action]
    return [item for item in action if isinstance(item, str)] if isinstance(action, list) else []


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def principal_services(statement: dict[str, Any]) -> list[Any]:
    principal = statement.get("Principal")
    return as_list(principal.get("Service")) if isinstance(principal, dict) else []


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def references(value: Any) -> tuple[set[str], list[str]]:
    """The names a value refers to (Ref, GetAtt, ${...} in Sub) and its literal text, if any
    (the condition names of Fn::If and the local variables of a Sub excluded)."""
    names: set[str] = set()
    literals: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict) and len(node) == 1:
            (key, inner), = node.items()
            if key == "Ref" and isinstance(inner, str):
                names.add(inner)
                return
            if key == "Fn::GetAtt":
                target = inner[0] if isinstance(inner, list) and inner else inner
                names.add(str(target).split(".", 1)[0])
                return
            if key == "Fn::If" and isinstance(inner, list) and len(inner) == 3:
                walk(inner[1])
                walk(inner[2])
                return
            if key == "Fn::Sub":
                text, variables = (inner[0], inner[1]) if isinstance(inner, list) and len(inner) == 2 else (inner, {})
                variables = variables if isinstance(variables, dict) else {}
                for value in variables.values():
                    walk(value)
                if isinstance(text, str):
                    for match in re.finditer(r"\$\{([^}!]+)\}", text):
                        reference = match.group(1).split(".", 1)[0]
                        if reference not in variables:
                            names.add(reference)
                    if re.sub(r"\$\{[^}!]+\}", "", text):
                        literals.append(text)
                return
        if isinstance(node, dict):
            for inner in node.values():
                walk(inner)
        elif isinstance(node, list):
            for inner in node:
                walk(inner)
        elif node is not None:
            literals.append(str(node))

    walk(value)
    return names, literals


def sub_text(value: Any) -> str | None:
    """A plain string, or the text of a one-argument Fn::Sub, for comparing names."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and list(value) == ["Fn::Sub"] and isinstance(value["Fn::Sub"], str):
        return value["Fn::Sub"]
    return None


def asserts_different(rule: Any, parameters: set[str]) -> bool:
    """Whether a Rules entry asserts Not Equals of exactly these two parameters somewhere."""
    found = False

    def walk(node: Any) -> None:
        nonlocal found
        if isinstance(node, dict):
            inner = node.get("Fn::Not")
            if isinstance(inner, list) and len(inner) == 1 and isinstance(inner[0], dict):
                equals = inner[0].get("Fn::Equals")
                if isinstance(equals, list) and {logical_id(item) for item in equals} == parameters:
                    found = True
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    if isinstance(rule, dict):
        walk(rule.get("Assertions"))
    return found


@dataclass(frozen=True)
class Project:
    """What the template is checked against besides itself."""

    function_dirs: set[str]
    event_types: tuple[str, ...]
    api_version: str
    secret_access: dict[str, frozenset[str]]
    dynamodb_access: dict[str, TableAccess]
    # The CloudWatch metrics the Rust code counts (`telemetry::count("Name")`, `count_by`).
    metrics: tuple[str, ...] = ()
    # The billing API's (METHOD, path) pairs from its OpenAPI document.
    api_routes: frozenset[tuple[str, str]] = frozenset()


class Checker:
    def __init__(self, text: str, project: Project) -> None:
        self.text = text
        self.project = project
        self.function_dirs = project.function_dirs
        self.checked = 0
        self.violations: list[str] = []
        self.template: dict[str, Any] = {}

    def expect(self, condition: bool, message: str) -> bool:
        self.checked += 1
        if not condition:
            self.violations.append(message)
        return condition

    # -- template access

    def resources(self, type_name: str) -> dict[str, dict[str, Any]]:
        resources = self.template.get("Resources") or {}
        return {
            name: resource
            for name, resource in resources.items()
            if isinstance(resource, dict) and resource.get("Type") == type_name
        }

    def props(self, resource: dict[str, Any]) -> dict[str, Any]:
        properties = resource.get("Properties")
        return properties if isinstance(properties, dict) else {}

    def function_setting(self, resource: dict[str, Any], key: str) -> Any:
        value = self.props(resource).get(key)
        if value is None:
            globals_ = (self.template.get("Globals") or {}).get("Function") or {}
            value = globals_.get(key)
        return value

    def number(self, value: Any) -> int | None:
        """A literal number, or the default of the parameter a Ref names."""
        name = logical_id(value)
        if name is not None and "Ref" in value:
            value = ((self.template.get("Parameters") or {}).get(name) or {}).get("Default")
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    # -- rules

    def run(self) -> None:
        # Raw text first: a secret must be caught even in a template that does not parse.
        self.check_secrets()
        try:
            self.template = parse(self.text)
            star_lines = star_resource_lines(self.text)
        except (yaml.YAMLError, ValueError) as error:
            self.expect(False, f"template does not parse: {error}")
            return
        self.check_star_resources(star_lines)
        self.check_functions()
        self.check_stripe_secrets()
        self.check_secret_access()
        self.check_dynamodb_access()
        self.check_log_groups()
        self.check_concurrency()
        self.check_queues()
        self.check_tables()
        self.check_http_api()
        self.check_eventbridge()
        self.check_api_version()
        self.check_metrics()

    def check_secrets(self) -> None:
        for pattern in SECRET_PATTERNS:
            for match in pattern.finditer(self.text):
                line = self.text.count("\n", 0, match.start()) + 1
                self.expect(False, f"line {line}: secret-looking literal matching {pattern.pattern}")
            self.checked += 1

    def check_star_resources(self, star_lines: list[int]) -> None:
        raw_lines = self.text.splitlines()
        for line in star_lines:
            previous = raw_lines[line - 1].strip() if line > 0 else ""
            self.expect(
                previous.startswith("#"),
                f"line {line + 1}: IAM statement with Resource '*' and no '#' comment on the line before",
            )
        self.checked += 1

    def check_functions(self) -> None:
        functions = self.resources("AWS::Serverless::Function")
        binaries: set[str] = set()
        for name, resource in functions.items():
            metadata = resource.get("Metadata") or {}
            self.expect(
                metadata.get("BuildMethod") == BUILD_METHOD,
                f"{name}: Metadata.BuildMethod must be {BUILD_METHOD}",
            )
            binary = (metadata.get("BuildProperties") or {}).get("Binary")
            binaries.add(str(binary))
            self.expect(
                binary in self.function_dirs,
                f"{name}: BuildProperties.Binary {binary!r} is not a directory under functions/",
            )
            self.expect(
                self.function_setting(resource, "Runtime") == RUNTIME,
                f"{name}: Runtime must be {RUNTIME} (per function or in Globals)",
            )
            self.expect(
                self.function_setting(resource, "Architectures") == [ARCHITECTURE],
                f"{name}: Architectures must be [{ARCHITECTURE}] (per function or in Globals)",
            )
            for event_name, event in (self.props(resource).get("Events") or {}).items():
                if isinstance(event, dict) and event.get("Type") == "SQS":
                    types = (event.get("Properties") or {}).get("FunctionResponseTypes") or []
                    self.expect(
                        "ReportBatchItemFailures" in types,
                        f"{name}.{event_name}: SQS event source lacks FunctionResponseTypes ReportBatchItemFailures",
                    )
        for name, resource in self.resources("AWS::Lambda::EventSourceMapping").items():
            arn = self.props(resource).get("EventSourceArn")
            if logical_id(arn) in self.resources("AWS::SQS::Queue"):
                types = self.props(resource).get("FunctionResponseTypes") or []
                self.expect(
                    "ReportBatchItemFailures" in types,
                    f"{name}: SQS event source mapping lacks FunctionResponseTypes ReportBatchItemFailures",
                )
        for directory in sorted(self.function_dirs):
            self.expect(directory in binaries, f"functions/{directory} has no AWS::Serverless::Function")

    def queue_consumers(self) -> dict[str, list[tuple[str, int]]]:
        """Queue logical id -> [(function, timeout seconds)], plus unresolvable sources."""
        queues = self.resources("AWS::SQS::Queue")
        functions = self.resources("AWS::Serverless::Function")
        consumers: dict[str, list[tuple[str, int]]] = {name: [] for name in queues}

        def timeout(function: dict[str, Any]) -> int:
            value = self.function_setting(function, "Timeout")
            if value is None:
                return LAMBDA_DEFAULT_TIMEOUT
            number = self.number(value)
            return number if number is not None else -1

        for name, resource in functions.items():
            for event_name, event in (self.props(resource).get("Events") or {}).items():
                if not (isinstance(event, dict) and event.get("Type") == "SQS"):
                    continue
                queue = logical_id((event.get("Properties") or {}).get("Queue"))
                if self.expect(
                    queue in queues,
                    f"{name}.{event_name}: SQS event source does not point at a queue in this template",
                ):
                    consumers[queue].append((name, timeout(resource)))
        for name, resource in self.resources("AWS::Lambda::EventSourceMapping").items():
            queue = logical_id(self.props(resource).get("EventSourceArn"))
            function_name = logical_id(self.props(resource).get("FunctionName"))
            if queue in queues:
                function = self.template["Resources"].get(function_name) or {}
                consumers[queue].append((f"{name}->{function_name}", timeout(function)))
        return consumers

    def check_queues(self) -> None:
        queues = self.resources("AWS::SQS::Queue")
        dead_letter_targets: dict[str, Any] = {}
        for name, resource in queues.items():
            redrive = self.props(resource).get("RedrivePolicy")
            if isinstance(redrive, str):
                try:
                    redrive = json.loads(redrive)
                except json.JSONDecodeError:
                    redrive = {}
            dead_letter_targets[name] = redrive if isinstance(redrive, dict) else None
        dlqs = {
            logical_id(redrive.get("deadLetterTargetArn"))
            for redrive in dead_letter_targets.values()
            if redrive
        }
        failure_queues = self.failure_queues()
        consumers = self.queue_consumers()
        for name, resource in queues.items():
            props = self.props(resource)
            if name in failure_queues:
                # EventBridge dead-letter queues and Lambda on-failure destinations must be
                # standard queues; they are the end of the line, so they have no redrive policy.
                self.expect(
                    as_bool(props.get("FifoQueue")) is not True,
                    f"{name}: {failure_queues[name]} must be a standard queue, not FIFO",
                )
                self.expect(
                    not consumers.get(name),
                    f"{name}: {failure_queues[name]} must not be consumed by a function",
                )
                continue
            if name in STANDARD_QUEUES:
                self.expect(as_bool(props.get("FifoQueue")) is not True, f"{name}: must be a standard queue")
            else:
                self.expect(as_bool(props.get("FifoQueue")) is True, f"{name}: queue must be FIFO (FifoQueue true)")
                content_dedup = props.get("ContentBasedDeduplication", False)
                self.expect(
                    as_bool(content_dedup) is False,
                    f"{name}: ContentBasedDeduplication must be false (the webhook sets the deduplication id)",
                )
            if name not in dlqs:
                redrive = dead_letter_targets.get(name)
                if self.expect(bool(redrive), f"{name}: queue has no RedrivePolicy (dead-letter queue)"):
                    count = self.number(redrive.get("maxReceiveCount"))
                    self.expect(
                        count is not None and count >= MIN_MAX_RECEIVE_COUNT,
                        f"{name}: RedrivePolicy maxReceiveCount must be >= {MIN_MAX_RECEIVE_COUNT}, got {count}",
                    )
                    target = logical_id(redrive.get("deadLetterTargetArn"))
                    self.expect(
                        target in queues and target != name,
                        f"{name}: RedrivePolicy deadLetterTargetArn must point at another queue in this template",
                    )
            visibility = props.get("VisibilityTimeout", SQS_DEFAULT_VISIBILITY)
            visibility_seconds = self.number(visibility)
            for function, timeout in consumers.get(name, []):
                self.expect(
                    visibility_seconds is not None and timeout >= 0 and visibility_seconds >= VISIBILITY_FACTOR * timeout,
                    f"{name}: VisibilityTimeout {visibility_seconds} is below {VISIBILITY_FACTOR} x the "
                    f"{timeout} s timeout of its consumer {function}",
                )

    def failure_queues(self) -> dict[str, str]:
        """Queues that EventBridge targets or Lambda async invocations dead-letter to -> role."""
        queues = self.resources("AWS::SQS::Queue")
        found: dict[str, str] = {}
        for name, rule in self.resources("AWS::Events::Rule").items():
            for target in self.props(rule).get("Targets") or []:
                if isinstance(target, dict):
                    queue = logical_id((target.get("DeadLetterConfig") or {}).get("Arn"))
                    if queue in queues:
                        found[queue] = f"the dead-letter queue of rule {name}"
        for name, config in self.event_invoke_configs().items():
            on_failure = (config.get("DestinationConfig") or {}).get("OnFailure") or {}
            queue = logical_id(on_failure.get("Destination"))
            if queue in queues:
                found[queue] = f"the on-failure destination of {name}"
        return found

    def event_invoke_configs(self) -> dict[str, dict[str, Any]]:
        """Function logical id -> its EventInvokeConfig (SAM property or AWS::Lambda resource)."""
        configs: dict[str, dict[str, Any]] = {}
        for name, resource in self.resources("AWS::Serverless::Function").items():
            config = self.props(resource).get("EventInvokeConfig")
            if isinstance(config, dict):
                configs[name] = config
        for name, resource in self.resources("AWS::Lambda::EventInvokeConfig").items():
            function = logical_id(self.props(resource).get("FunctionName"))
            configs[function or name] = self.props(resource)
        return configs

    # -- secrets

    def environment(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A function's environment variables, Globals merged in (the function's win)."""
        merged: dict[str, Any] = {}
        globals_ = (self.template.get("Globals") or {}).get("Function") or {}
        for source in (globals_, self.props(resource)):
            variables = ((source.get("Environment") or {}).get("Variables")) or {}
            if isinstance(variables, dict):
                merged.update(variables)
        return merged

    def secret_kinds(self, value: Any) -> tuple[set[str], str | None]:
        """The Stripe secrets an ARN value names, and what is wrong with it if anything is: a
        literal or wildcard part, or a reference to something that is no Stripe secret."""
        names, literals = references(value)
        kinds = {
            kind
            for kind, spec in STRIPE_SECRETS.items()
            if names & {spec.parameter, spec.resource}
        }
        known = {name for spec in STRIPE_SECRETS.values() for name in (spec.parameter, spec.resource)}
        if literals:
            return kinds, f"has a literal or wildcard part {literals[0]!r} (name the secret's parameter or resource)"
        others = sorted(name for name in names - known if not name.startswith("AWS::"))
        if others:
            return kinds, f"refers to {', '.join(others)}, which is no Stripe secret"
        if not kinds:
            return kinds, "names no Stripe secret"
        return kinds, None

    def secret_reads(self, resource: dict[str, Any]) -> list[tuple[str, set[str], str | None]]:
        """Each entry of a function's Policies that gives it Secrets Manager access: (description,
        the Stripe secrets it can read, what is wrong with it if anything is)."""
        reads: list[tuple[str, set[str], str | None]] = []
        policies = self.props(resource).get("Policies") or []
        for index, policy in enumerate(as_list(policies)):
            if isinstance(policy, str):
                if "secretsmanager" in policy.lower():
                    reads.append((f"managed policy {policy}", set(), "is not limited to one secret"))
                continue
            if not isinstance(policy, dict):
                continue
            grants: list[tuple[str, set[str], str | None]] = []
            for key, value in policy.items():
                if "secretsmanager" not in key.lower():
                    continue
                if key == "AWSSecretsManagerGetSecretValuePolicy":
                    arn = value.get("SecretArn") if isinstance(value, dict) else None
                    grants.append((f"policy template {key}", *self.secret_kinds(arn)))
                else:
                    grants.append((f"policy template {key}", set(), "is more than GetSecretValue on one secret"))
            for statement in as_list(policy.get("Statement") or []):
                if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
                    continue
                if "NotAction" in statement:
                    grants.append(("a NotAction statement", set(), "may allow Secrets Manager (use Action)"))
                for action in actions(statement):
                    if not (action == "*" or action.lower().startswith("secretsmanager:")):
                        continue
                    described = f"statement action {action}"
                    if action.lower() != "secretsmanager:getsecretvalue":
                        grants.append((described, set(), "is more than secretsmanager:GetSecretValue"))
                        continue
                    for arn in as_list(statement.get("Resource")):
                        grants.append((described, *self.secret_kinds(arn)))
            if grants:
                # One entry per policy: what all its grants together can read.
                descriptions = sorted({description for description, _, _ in grants})
                kinds = {kind for _, found, _ in grants for kind in found}
                problem = next((problem for _, _, problem in grants if problem), None)
                reads.append((f"Policies[{index}] ({', '.join(descriptions)})", kinds, problem))
        if self.props(resource).get("Role") is not None:
            reads.append(("an explicit Role", set(), "hides its permissions from this check"))
        return reads

    def secret_grants(self, resource: dict[str, Any]) -> list[str]:
        """The policies of a function that give it Secrets Manager access, described."""
        return [description for description, _, _ in self.secret_reads(resource)]

    def check_stripe_secrets(self) -> None:
        """Each Stripe secret: a parameter (default "") or a secret the stack creates, an output
        stating the one in use, and a Rules assertion that the two are never the same secret."""
        parameters = self.template.get("Parameters") or {}
        outputs = self.template.get("Outputs") or {}
        secrets = self.resources("AWS::SecretsManager::Secret")
        for kind, spec in STRIPE_SECRETS.items():
            parameter = parameters.get(spec.parameter)
            self.expect(
                isinstance(parameter, dict) and parameter.get("Default") == "",
                f"Parameters.{spec.parameter} ({kind}) must exist with Default \"\" (empty: the stack creates it)",
            )
            resource = secrets.get(spec.resource)
            self.expect(
                resource is not None and resource.get("Condition") is not None,
                f"{spec.resource}: the {kind} the stack creates must be an AWS::SecretsManager::Secret "
                f"with a Condition (created only when {spec.parameter} is empty)",
            )
            output = outputs.get(spec.parameter)
            kinds, problem = self.secret_kinds((output or {}).get("Value") if isinstance(output, dict) else None)
            self.expect(
                problem is None and kinds == {kind},
                f"Outputs.{spec.parameter} must state the {kind} in use ({spec.parameter} or {spec.resource})",
            )
        for name in RETIRED_SECRET_VARIABLES:
            self.expect(
                not any(name in self.environment(f) for f in self.resources("AWS::Serverless::Function").values()),
                f"no function may get {name} any more: the API key and webhook secrets are separate",
            )
        wanted = {spec.parameter for spec in STRIPE_SECRETS.values()}
        self.expect(
            any(asserts_different(rule, wanted) for rule in (self.template.get("Rules") or {}).values()),
            f"Rules: no assertion that {' and '.join(sorted(wanted))} differ (one secret given as both would hand "
            f"the API key to the webhook receiver)",
        )

    def check_secret_access(self) -> None:
        table = self.project.secret_access
        functions = self.resources("AWS::Serverless::Function")
        for name, resource in functions.items():
            if not self.expect(
                name in table,
                f"{name}: no entry in STRIPE_SECRET_ACCESS (check_template.py): which Stripe secrets does it read?",
            ):
                continue
            allowed = table[name]
            environment = self.environment(resource)
            for kind, spec in STRIPE_SECRETS.items():
                if kind in allowed:
                    if self.expect(
                        spec.variable in environment,
                        f"{name}: reads the {kind} but has no {spec.variable}",
                    ):
                        kinds, problem = self.secret_kinds(environment[spec.variable])
                        self.expect(
                            problem is None and kinds == {kind},
                            f"{name}: {spec.variable} must name the {kind} ({spec.parameter} or {spec.resource})"
                            + (f"; it {problem}" if problem else ""),
                        )
                else:
                    self.expect(
                        spec.variable not in environment,
                        f"{name}: must not get {spec.variable} (from its Environment or Globals); "
                        f"it does not read the {kind}",
                    )
            reads = self.secret_reads(resource)
            if not allowed:
                self.expect(
                    not reads,
                    f"{name}: must have no Secrets Manager access, has {', '.join(d for d, _, _ in reads)}",
                )
                continue
            for description, kinds, problem in reads:
                self.expect(problem is None, f"{name}: {description} {problem}")
                self.expect(
                    len(kinds) <= 1,
                    f"{name}: {description} can read both Stripe secrets; each grant must name one",
                )
                for kind in sorted(kinds - allowed):
                    self.expect(False, f"{name}: {description} may not read the {kind} (STRIPE_SECRET_ACCESS)")
            granted = {kind for _, kinds, problem in reads if problem is None and len(kinds) == 1 for kind in kinds}
            for kind in sorted(allowed - granted):
                self.expect(False, f"{name}: reads the {kind} but no Secrets Manager policy grants it")
        for name in sorted(set(table) - set(functions)):
            self.expect(False, f"STRIPE_SECRET_ACCESS names {name}, which is not a function of the template")

    # -- DynamoDB

    def table_scope(self, arn: Any) -> str | None:
        """"table" for a table's !GetAtt Arn, "index" for !Sub ${Table.Arn}/index/<GSI_NAME>."""
        tables = self.resources("AWS::DynamoDB::Table")
        if isinstance(arn, dict) and list(arn) == ["Fn::GetAtt"]:
            getatt = arn["Fn::GetAtt"]
            if isinstance(getatt, list) and len(getatt) == 2 and getatt[0] in tables and getatt[1] == "Arn":
                return "table"
        if isinstance(arn, dict) and list(arn) == ["Fn::Sub"] and isinstance(arn["Fn::Sub"], str):
            match = INDEX_ARN_PATTERN.match(arn["Fn::Sub"])
            if match and match.group(1) in tables and match.group(2) == GSI_NAME:
                return "index"
        return None

    def dynamodb_grants(self, name: str, resource: dict[str, Any]) -> dict[str, set[str]]:
        """scope ("table", "index") -> the DynamoDB actions a function's policies grant there;
        what cannot be stated that way (policy templates, wildcards, other resources) is a
        violation here."""
        granted: dict[str, set[str]] = {"table": set(), "index": set()}
        for policy in as_list(self.props(resource).get("Policies") or []):
            if isinstance(policy, str):
                self.expect(
                    "dynamodb" not in policy.lower(),
                    f"{name}: managed policy {policy} grants DynamoDB access; use statements from DYNAMODB_ACCESS",
                )
                continue
            if not isinstance(policy, dict):
                continue
            for key in policy:
                if key == "DynamoDBCrudPolicy":
                    self.expect(
                        False,
                        f"{name}: DynamoDBCrudPolicy grants Scan, DeleteItem, BatchWriteItem and more; grant the "
                        f"actions DYNAMODB_ACCESS lists in a Statement",
                    )
                elif key.lower().startswith("dynamodb"):
                    self.expect(
                        False,
                        f"{name}: policy template {key} grants a fixed set of DynamoDB actions; grant the actions "
                        f"DYNAMODB_ACCESS lists in a Statement",
                    )
            for statement in as_list(policy.get("Statement") or []):
                if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
                    continue
                self.expect(
                    "NotAction" not in statement,
                    f"{name}: an Allow statement with NotAction grants DynamoDB (and everything else) it does not name",
                )
                dynamodb = [a for a in actions(statement) if a == "*" or a.lower().startswith("dynamodb:")]
                if not dynamodb:
                    continue
                names: set[str] = set()
                for action in dynamodb:
                    if self.expect(
                        "*" not in action and "?" not in action,
                        f"{name}: wildcard action {action}; name each DynamoDB action (DYNAMODB_ACCESS)",
                    ):
                        names.add(action.split(":", 1)[1])
                for arn in as_list(statement.get("Resource")):
                    scope = self.table_scope(arn)
                    if self.expect(
                        scope is not None,
                        f"{name}: DynamoDB statement on {arn!r}, which is neither !GetAtt <table>.Arn nor "
                        f"!Sub ${{<table>.Arn}}/index/{GSI_NAME}",
                    ):
                        granted[scope] |= names
        if self.props(resource).get("Role") is not None:
            self.expect(False, f"{name}: an explicit Role hides its DynamoDB permissions from this check")
        return granted

    def check_dynamodb_access(self) -> None:
        table = self.project.dynamodb_access
        functions = self.resources("AWS::Serverless::Function")
        for name, resource in functions.items():
            granted = self.dynamodb_grants(name, resource)
            if not self.expect(
                name in table,
                f"{name}: no entry in DYNAMODB_ACCESS (check_template.py): which DynamoDB calls does its code make?",
            ):
                continue
            for scope, expected in (("table", table[name].table), ("index", table[name].index)):
                have = {action.lower(): action for action in granted[scope]}
                want = {action.lower(): action for action in expected}
                extra = sorted(f"dynamodb:{have[a]}" for a in set(have) - set(want))
                missing = sorted(f"dynamodb:{want[a]}" for a in set(want) - set(have))
                where = "the table" if scope == "table" else f"index {GSI_NAME}"
                self.expect(
                    not extra and not missing,
                    f"{name}: DynamoDB actions on {where} differ from DYNAMODB_ACCESS: extra {extra}, missing {missing}",
                )
        for name in sorted(set(table) - set(functions)):
            self.expect(False, f"DYNAMODB_ACCESS names {name}, which is not a function of the template")

    # -- logs and concurrency

    def logging_config(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A function's LoggingConfig with Globals merged in (SAM merges maps; the function's win)."""
        merged: dict[str, Any] = {}
        globals_ = (self.template.get("Globals") or {}).get("Function") or {}
        for source in (globals_, self.props(resource)):
            config = source.get("LoggingConfig")
            if isinstance(config, dict):
                merged.update(config)
        return merged

    def check_log_groups(self) -> None:
        """Every function logs to its own AWS::Logs::LogGroup, /aws/lambda/<its name>, with a
        retention CloudWatch accepts (else Lambda creates a group that keeps logs forever)."""
        groups = self.resources("AWS::Logs::LogGroup")
        parameters = self.template.get("Parameters") or {}
        used: dict[str, str] = {}
        for name, resource in self.resources("AWS::Serverless::Function").items():
            target = self.logging_config(resource).get("LogGroup")
            group = logical_id(target) if isinstance(target, dict) and "Ref" in target else None
            if not self.expect(
                group in groups,
                f"{name}: LoggingConfig.LogGroup must be a !Ref to its AWS::Logs::LogGroup (with RetentionInDays)",
            ):
                continue
            self.expect(
                group not in used,
                f"{name}: shares log group {group} with {used.get(group)}; each function needs its own",
            )
            used.setdefault(group, name)
            props = self.props(groups[group])
            retention = props.get("RetentionInDays")
            self.expect(
                self.number(retention) in LOG_RETENTION_DAYS,
                f"{group}: RetentionInDays must be one of CloudWatch's values {sorted(LOG_RETENTION_DAYS)}, "
                f"got {retention!r}",
            )
            parameter = logical_id(retention) if isinstance(retention, dict) and "Ref" in retention else None
            if parameter in parameters:
                allowed = (parameters[parameter] or {}).get("AllowedValues")
                self.expect(
                    isinstance(allowed, list) and {self.number(v) for v in allowed} <= LOG_RETENTION_DAYS,
                    f"Parameters.{parameter}: AllowedValues must be CloudWatch's retention values (it sets "
                    f"{group}'s RetentionInDays)",
                )
            function_name = self.props(resource).get("FunctionName")
            group_name = props.get("LogGroupName")
            self.expect(
                sub_text(group_name) is not None
                and sub_text(function_name) is not None
                and sub_text(group_name) == LAMBDA_LOG_GROUP_PREFIX + sub_text(function_name),
                f"{group}: LogGroupName must be {LAMBDA_LOG_GROUP_PREFIX}<FunctionName of {name}> (name the "
                f"function), got {group_name!r} for {function_name!r}",
            )
            self.expect(
                groups[group].get("Condition") == resource.get("Condition"),
                f"{group}: must have the Condition of {name} ({resource.get('Condition')})",
            )

    def check_concurrency(self) -> None:
        """Every SQS consumer: MaximumConcurrency on its event source, and a reserved concurrency
        of at least that (a lower one would throttle invocations the poller already made)."""
        functions = self.resources("AWS::Serverless::Function")
        sources: list[tuple[str, str, dict[str, Any]]] = []
        for name, resource in functions.items():
            for event_name, event in (self.props(resource).get("Events") or {}).items():
                if isinstance(event, dict) and event.get("Type") == "SQS":
                    sources.append((f"{name}.{event_name}", name, event.get("Properties") or {}))
        queues = self.resources("AWS::SQS::Queue")
        for name, resource in self.resources("AWS::Lambda::EventSourceMapping").items():
            props = self.props(resource)
            function = logical_id(props.get("FunctionName"))
            if logical_id(props.get("EventSourceArn")) in queues and function in functions:
                sources.append((name, function, props))
        parameters = self.template.get("Parameters") or {}
        for where, function, props in sources:
            maximum = (props.get("ScalingConfig") or {}).get("MaximumConcurrency")
            reserved = self.props(functions[function]).get("ReservedConcurrentExecutions")
            maximum_n, reserved_n = self.number(maximum), self.number(reserved)
            if not self.expect(
                maximum_n is not None and maximum_n >= MIN_MAXIMUM_CONCURRENCY,
                f"{where}: SQS event source needs ScalingConfig.MaximumConcurrency (>= {MIN_MAXIMUM_CONCURRENCY}), "
                f"got {maximum!r}",
            ):
                continue
            if not self.expect(
                reserved_n is not None,
                f"{function}: an SQS consumer needs ReservedConcurrentExecutions (>= its MaximumConcurrency)",
            ):
                continue
            self.expect(
                reserved_n >= maximum_n,
                f"{function}: ReservedConcurrentExecutions {reserved_n} is below {where}'s MaximumConcurrency "
                f"{maximum_n}: invocations the poller makes would be throttled",
            )
            refs = {logical_id(value) for value in (maximum, reserved) if isinstance(value, dict) and "Ref" in value}
            self.expect(
                len(refs) <= 1 and (not refs or (isinstance(maximum, dict) and isinstance(reserved, dict))),
                f"{function}: take ReservedConcurrentExecutions and {where}'s MaximumConcurrency from one "
                f"parameter, so that reserved >= maximum holds for any value deployed",
            )
            for parameter in refs & set(parameters):
                minimum = self.number((parameters[parameter] or {}).get("MinValue"))
                self.expect(
                    minimum is not None and minimum >= MIN_MAXIMUM_CONCURRENCY,
                    f"Parameters.{parameter}: MinValue must be >= {MIN_MAXIMUM_CONCURRENCY} (it sets {where}'s "
                    f"MaximumConcurrency)",
                )

    def check_tables(self) -> None:
        tables = self.resources("AWS::DynamoDB::Table")
        self.expect(bool(tables), "no AWS::DynamoDB::Table in the template")
        for name, resource in tables.items():
            props = self.props(resource)
            pitr = props.get("PointInTimeRecoverySpecification") or {}
            self.expect(
                as_bool(pitr.get("PointInTimeRecoveryEnabled")) is True,
                f"{name}: PointInTimeRecoverySpecification must be enabled",
            )
            ttl = props.get("TimeToLiveSpecification") or {}
            self.expect(
                ttl.get("AttributeName") == "expires_at" and as_bool(ttl.get("Enabled")) is True,
                f"{name}: TimeToLiveSpecification must be enabled on expires_at",
            )
            indexes = {index.get("IndexName") for index in props.get("GlobalSecondaryIndexes") or []}
            self.expect("gsi1" in indexes, f"{name}: GlobalSecondaryIndexes must include gsi1")

    def check_http_api(self) -> None:
        apis = self.resources("AWS::Serverless::HttpApi")
        self.expect(bool(apis), "no AWS::Serverless::HttpApi in the template")
        jwt: dict[str, set[str]] = {}
        default: dict[str, str | None] = {}
        for name, resource in apis.items():
            props = self.props(resource)
            auth = props.get("Auth") or {}
            jwt[name] = {
                authorizer
                for authorizer, config in (auth.get("Authorizers") or {}).items()
                if isinstance(config, dict) and "JwtConfiguration" in config
            }
            default[name] = auth.get("DefaultAuthorizer")
            settings = props.get("DefaultRouteSettings") or {}
            self.expect(
                settings.get("ThrottlingBurstLimit") is not None and settings.get("ThrottlingRateLimit") is not None,
                f"{name}: DefaultRouteSettings must set ThrottlingBurstLimit and ThrottlingRateLimit",
            )
        webhook_routes = 0
        routed: set[tuple[str, str]] = set()
        for name, resource in self.resources("AWS::Serverless::Function").items():
            for event_name, event in (self.props(resource).get("Events") or {}).items():
                if not (isinstance(event, dict) and event.get("Type") == "HttpApi"):
                    continue
                where = f"{name}.{event_name}"
                props = event.get("Properties") or {}
                api = logical_id(props.get("ApiId"))
                if not self.expect(api in apis, f"{where}: route is not on an HttpApi of this template"):
                    continue
                authorizer = (props.get("Auth") or {}).get("Authorizer")
                if props.get("Path") == WEBHOOK_PATH:
                    webhook_routes += 1
                    self.expect(
                        authorizer == "NONE",
                        f"{where}: the Stripe webhook route must have Authorizer NONE (the signature authenticates)",
                    )
                else:
                    routed.add((str(props.get("Method")).upper(), str(props.get("Path"))))
                    effective = authorizer if authorizer is not None else default[api]
                    self.expect(
                        effective in jwt[api],
                        f"{where}: route {props.get('Method')} {props.get('Path')} is not behind a JWT authorizer",
                    )
        self.expect(webhook_routes == 1, f"expected one HttpApi route for {WEBHOOK_PATH}, found {webhook_routes}")
        for method, path in sorted(self.project.api_routes - routed):
            self.expect(False, f"API route {method} {path} of the OpenAPI document has no HttpApi event")
        for method, path in sorted(routed - self.project.api_routes):
            self.expect(False, f"HttpApi route {method} {path} is not in the OpenAPI document")

    # -- EventBridge

    def check_eventbridge(self) -> None:
        buses = self.resources("AWS::Events::EventBus")
        rules = self.resources("AWS::Events::Rule")
        partner_buses = {name for name, bus in buses.items() if self.props(bus).get("EventSourceName") is not None}
        self.expect(
            len(partner_buses) == 1,
            f"expected one AWS::Events::EventBus with EventSourceName (Stripe's partner event bus), "
            f"found {len(partner_buses)}",
        )
        targeted = {
            logical_id(target.get("Arn"))
            for rule in rules.values()
            if logical_id(self.props(rule).get("EventBusName")) in partner_buses
            for target in self.props(rule).get("Targets") or []
            if isinstance(target, dict)
        }
        for name, resource in self.resources("AWS::Serverless::Function").items():
            if "BILLING_EVENTBRIDGE_SOURCE" in self.environment(resource):
                self.expect(
                    name in targeted,
                    f"{name}: has BILLING_EVENTBRIDGE_SOURCE but no rule on the partner event bus targets it",
                )
        for name in sorted(partner_buses):
            props = self.props(buses[name])
            self.expect(
                props.get("Name") == props.get("EventSourceName"),
                f"{name}: a partner event bus must be named after its EventSourceName (that associates the source)",
            )
            self.expect(
                any(logical_id(self.props(rule).get("EventBusName")) == name for rule in rules.values()),
                f"{name}: no AWS::Events::Rule on the partner event bus (a SAM EventBridgeRule event cannot "
                f"name its rule's ARN in the dead-letter queue policy)",
            )
        for name, rule in rules.items():
            if logical_id(self.props(rule).get("EventBusName")) in partner_buses:
                self.check_stripe_rule(name, rule)
        for name, resource in self.resources("AWS::Lambda::Permission").items():
            props = self.props(resource)
            if props.get("Principal") == EVENTS_PRINCIPAL:
                self.expect(
                    props.get("SourceArn") is not None,
                    f"{name}: a permission for {EVENTS_PRINCIPAL} must be limited to one rule with SourceArn",
                )

    def check_stripe_rule(self, name: str, rule: dict[str, Any]) -> None:
        pattern = self.props(rule).get("EventPattern")
        if isinstance(pattern, str):
            try:
                pattern = json.loads(pattern)
            except json.JSONDecodeError:
                pattern = None
        if not self.expect(isinstance(pattern, dict), f"{name}: EventPattern must be a mapping"):
            return
        self.expect(
            "detail-type" not in pattern,
            f"{name}: filter on detail.type (Stripe's event type), not on EventBridge's detail-type",
        )
        self.expect(
            pattern.get("source") == [{"prefix": STRIPE_PARTNER_SOURCE_PREFIX}],
            f"{name}: EventPattern source must be [{{prefix: {STRIPE_PARTNER_SOURCE_PREFIX}}}]",
        )
        types = (pattern.get("detail") or {}).get("type") if isinstance(pattern.get("detail"), dict) else None
        expected = [*self.project.event_types, *(THIN_EVENT_PREFIX + name_ for name_ in self.project.event_types)]
        if self.expect(isinstance(types, list), f"{name}: EventPattern detail.type must be a list of event types"):
            # Exact strings only: a prefix or wildcard matcher would let unhandled types through.
            listed = [item if isinstance(item, str) else json.dumps(item) for item in types]
            missing = sorted(set(expected) - set(listed))
            extra = sorted(set(listed) - set(expected))
            self.expect(
                not missing and not extra and len(listed) == len(expected),
                f"{name}: EventPattern detail.type must be README.md's event types, each also with the "
                f"{THIN_EVENT_PREFIX} prefix (missing {missing}, unexpected {extra}, {len(types)} listed)",
            )
        targets = self.props(rule).get("Targets") or []
        self.expect(bool(targets), f"{name}: rule has no Targets")
        for target in targets:
            if isinstance(target, dict):
                self.check_stripe_rule_target(name, target)

    def check_stripe_rule_target(self, rule_name: str, target: dict[str, Any]) -> None:
        where = f"{rule_name}.{target.get('Id')}"
        retry = target.get("RetryPolicy")
        self.expect(
            isinstance(retry, dict)
            and self.number(retry.get("MaximumEventAgeInSeconds")) is not None
            and self.number(retry.get("MaximumRetryAttempts")) is not None,
            f"{where}: target needs a RetryPolicy with MaximumEventAgeInSeconds and MaximumRetryAttempts",
        )
        queue = logical_id((target.get("DeadLetterConfig") or {}).get("Arn"))
        if self.expect(
            queue in self.resources("AWS::SQS::Queue"),
            f"{where}: target needs a DeadLetterConfig whose Arn is a queue of this template",
        ):
            self.check_dead_letter_policy(where, rule_name, queue)
        function = logical_id(target.get("Arn"))
        functions = self.resources("AWS::Serverless::Function")
        if function in functions:
            self.check_permission(where, rule_name, function)
            self.check_receiver(function, functions[function])

    def check_dead_letter_policy(self, where: str, rule_name: str, queue: str) -> None:
        statements: list[dict[str, Any]] = []
        for resource in self.resources("AWS::SQS::QueuePolicy").values():
            props = self.props(resource)
            if queue in {logical_id(item) for item in props.get("Queues") or []}:
                document = props.get("PolicyDocument") or {}
                statements += [s for s in as_list(document.get("Statement") or []) if isinstance(s, dict)]
        for_events = [
            statement
            for statement in statements
            if statement.get("Effect") == "Allow" and EVENTS_PRINCIPAL in principal_services(statement)
        ]
        self.expect(
            any("sqs:SendMessage" in actions(statement) for statement in for_events),
            f"{where}: no queue policy lets {EVENTS_PRINCIPAL} sqs:SendMessage to the dead-letter queue {queue}",
        )
        for statement in for_events:
            condition = statement.get("Condition") or {}
            source_arns = [
                (condition.get(operator) or {}).get("aws:SourceArn")
                for operator in ("ArnEquals", "ArnLike", "StringEquals")
                if isinstance(condition.get(operator), dict)
            ]
            self.expect(
                any(logical_id(arn) == rule_name and "Fn::GetAtt" in arn for arn in source_arns if arn),
                f"{where}: the dead-letter queue policy of {queue} must restrict {EVENTS_PRINCIPAL} "
                f"with aws:SourceArn = the ARN of {rule_name}",
            )

    def check_permission(self, where: str, rule_name: str, function: str) -> None:
        self.expect(
            any(
                logical_id(props.get("FunctionName")) == function
                and props.get("Principal") == EVENTS_PRINCIPAL
                and logical_id(props.get("SourceArn")) == rule_name
                for props in map(self.props, self.resources("AWS::Lambda::Permission").values())
            ),
            f"{where}: no AWS::Lambda::Permission lets {EVENTS_PRINCIPAL} invoke {function} with SourceArn {rule_name}",
        )

    def check_receiver(self, name: str, resource: dict[str, Any]) -> None:
        """The function a Stripe rule invokes: only SQS sends to the receiver queues, no secret."""
        queues = self.resources("AWS::SQS::Queue")
        environment = self.environment(resource)
        receiver_queues: set[str] = set()
        for variable in RECEIVER_QUEUE_VARIABLES:
            queue = logical_id(environment.get(variable))
            if self.expect(
                queue in queues and as_bool(self.props(queues[queue]).get("FifoQueue")) is True,
                f"{name}: {variable} must be a Ref to a FIFO queue of this template",
            ):
                receiver_queues.add(queue)
        grants = self.secret_grants(resource)
        self.expect(
            not grants,
            f"{name}: an EventBridge receiver needs no Secrets Manager access, has {', '.join(grants)}",
        )
        sent_to: set[str] = set()
        for policy in as_list(self.props(resource).get("Policies") or []):
            queue = None
            if isinstance(policy, dict) and list(policy) == ["SQSSendMessagePolicy"]:
                queue = logical_id((policy["SQSSendMessagePolicy"] or {}).get("QueueName"))
            if self.expect(
                queue in receiver_queues,
                f"{name}: an EventBridge receiver may only have SQSSendMessagePolicy for its "
                f"{' and '.join(RECEIVER_QUEUE_VARIABLES)} queues, has {policy!r}",
            ):
                sent_to.add(queue)
        self.expect(
            sent_to == receiver_queues,
            f"{name}: SQSSendMessagePolicy missing for {sorted(receiver_queues - sent_to)}",
        )
        config = self.event_invoke_configs().get(name) or {}
        on_failure = (config.get("DestinationConfig") or {}).get("OnFailure") or {}
        self.expect(
            self.number(config.get("MaximumRetryAttempts")) is not None
            and logical_id(on_failure.get("Destination")) in queues,
            f"{name}: EventInvokeConfig needs MaximumRetryAttempts and an OnFailure destination queue of this template",
        )
        self.expect(
            environment.get("BILLING_EVENTBRIDGE_ACCOUNT") == {"Ref": "AWS::AccountId"},
            f"{name}: BILLING_EVENTBRIDGE_ACCOUNT must be !Ref AWS::AccountId",
        )
        sources = [
            self.props(bus).get("EventSourceName") for bus in self.resources("AWS::Events::EventBus").values()
        ]
        self.expect(
            environment.get("BILLING_EVENTBRIDGE_SOURCE") in sources,
            f"{name}: BILLING_EVENTBRIDGE_SOURCE must be the partner event bus's EventSourceName",
        )

    # -- Stripe API version

    def check_metrics(self) -> None:
        """Every metric the code counts is on the dashboard or has an alarm: none is emitted
        for nobody to look at, and a renamed metric cannot leave a dead widget behind."""
        dashboards = self.resources("AWS::CloudWatch::Dashboard")
        self.expect(len(dashboards) == 1, f"expected one AWS::CloudWatch::Dashboard, found {len(dashboards)}")
        shown = " ".join(
            sub_text(self.props(board).get("DashboardBody")) or str(self.props(board).get("DashboardBody") or "")
            for board in dashboards.values()
        )
        alarmed = {self.props(alarm).get("MetricName") for alarm in self.resources("AWS::CloudWatch::Alarm").values()}
        for metric in self.project.metrics:
            self.expect(
                re.search(rf"(?<![A-Za-z0-9]){metric}(?![A-Za-z0-9])", shown) is not None or metric in alarmed,
                f"metric {metric} (counted in the Rust code) is on no dashboard widget and has no alarm",
            )

    def check_api_version(self) -> None:
        output = (self.template.get("Outputs") or {}).get(API_VERSION_OUTPUT) or {}
        self.expect(
            output.get("Value") == self.project.api_version,
            f"Outputs.{API_VERSION_OUTPUT} must be {self.project.api_version!r} (API_VERSION in "
            f"shared/src/stripe/client.rs), got {output.get('Value')!r}",
        )


def check_template(text: str, project: Project) -> tuple[int, list[str]]:
    checker = Checker(text, project)
    checker.run()
    return checker.checked, checker.violations


def function_directories() -> set[str]:
    root = REPO_ROOT / "functions"
    return {path.name for path in root.iterdir() if path.is_dir() and (path / "Cargo.toml").exists()}


def readme_event_types(text: str) -> tuple[str, ...]:
    """The event types between README.md's event-types markers (code fence lines skipped)."""
    begin = text.find(EVENT_TYPES_BEGIN)
    end = text.find(EVENT_TYPES_END, begin + 1)
    if begin < 0 or end < 0:
        raise ValueError(f"no {EVENT_TYPES_BEGIN} ... {EVENT_TYPES_END} block")
    lines = (line.strip() for line in text[begin + len(EVENT_TYPES_BEGIN) : end].splitlines())
    types = tuple(line for line in lines if line and not line.startswith("```"))
    if not types:
        raise ValueError("the event-types block is empty")
    return types


def pinned_api_version(text: str) -> str:
    match = API_VERSION_PATTERN.search(text)
    if match is None:
        raise ValueError("no `pub const API_VERSION: &str = \"...\";` line")
    return match.group(1)


METRIC_CALL = re.compile(r'\bcount(?:_by)?\(\s*"(\w+)"')


def counted_metrics() -> tuple[str, ...]:
    """The metric names passed to telemetry::count / count_by in shared/ and functions/."""
    names: set[str] = set()
    for root in (REPO_ROOT / "shared" / "src", REPO_ROOT / "functions"):
        for path in root.rglob("*.rs"):
            names.update(METRIC_CALL.findall(path.read_text(encoding="utf-8")))
    return tuple(sorted(names))


def openapi_routes(text: str) -> frozenset[tuple[str, str]]:
    """The (METHOD, path) pairs of an OpenAPI document's `paths`."""
    document = yaml.safe_load(text)
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return frozenset(
        (method.upper(), path)
        for path, operations in (document.get("paths") or {}).items()
        for method in operations
        if method in methods
    )


def load_project() -> Project:
    """The repository's functions/, README.md and client.rs; raises OSError or ValueError."""
    try:
        event_types = readme_event_types(README.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{README}: {error}") from error
    try:
        api_version = pinned_api_version(STRIPE_CLIENT.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{STRIPE_CLIENT}: {error}") from error
    try:
        api_routes = openapi_routes(OPENAPI.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, AttributeError) as error:
        raise ValueError(f"{OPENAPI}: {error}") from error
    return Project(
        function_directories(),
        event_types,
        api_version,
        STRIPE_SECRET_ACCESS,
        DYNAMODB_ACCESS,
        counted_metrics(),
        api_routes,
    )


# ------------------------------------------------------------------ self-test

SELF_TEST_PROJECT = Project(
    function_dirs={"hook", "consumer", "relay"},
    event_types=("invoice.paid", "customer.updated"),
    api_version="2099-01-01.test",
    secret_access={"Hook": frozenset({WEBHOOK_SECRET}), "Consumer": frozenset({API_KEY}), "Relay": frozenset()},
    dynamodb_access={
        "Hook": TableAccess(),
        "Consumer": TableAccess(
            table=frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"}),
            index=frozenset({"Query"}),
        ),
        "Relay": TableAccess(),
    },
    metrics=("Seen", "Lost"),
    api_routes=frozenset({("GET", "/billing/me")}),
)

SELF_TEST_TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  StripeApiKeySecretArn: {Type: String, Default: ""}
  StripeWebhookSecretArn: {Type: String, Default: ""}
  Retention:
    Type: Number
    Default: 30
    AllowedValues: [7, 30, 90]
  Concurrency: {Type: Number, Default: 5, MinValue: 2}
Rules:
  Separate:
    Assertions:
      - Assert: !Not [!Equals [!Ref StripeApiKeySecretArn, !Ref StripeWebhookSecretArn]]
Conditions:
  MakeKey: !Equals [!Ref StripeApiKeySecretArn, ""]
  MakeHook: !Equals [!Ref StripeWebhookSecretArn, ""]
Globals:
  Function:
    Runtime: provided.al2023
    Architectures: [arm64]
    Timeout: 10
    LoggingConfig: {LogFormat: JSON}
Resources:
  StripeApiKeySecret:
    Type: AWS::SecretsManager::Secret
    Condition: MakeKey
    Properties: {SecretString: "{}"}
  StripeWebhookSecret:
    Type: AWS::SecretsManager::Secret
    Condition: MakeHook
    Properties: {SecretString: "{}"}
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}
      PointInTimeRecoverySpecification: {PointInTimeRecoveryEnabled: true}
      GlobalSecondaryIndexes:
        - IndexName: gsi1
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
      ContentBasedDeduplication: false
      VisibilityTimeout: 360
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt DeadLetters.Arn
        maxReceiveCount: 10
  DeadLetters:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
  Failed:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
      RedrivePolicy: {deadLetterTargetArn: !GetAtt DeadLetters.Arn, maxReceiveCount: 10}
  RuleDeadLetters:
    Type: AWS::SQS::Queue
  RelayFailures:
    Type: AWS::SQS::Queue
  RuleDeadLettersPolicy:
    Type: AWS::SQS::QueuePolicy
    Properties:
      Queues: [!Ref RuleDeadLetters]
      PolicyDocument:
        Statement:
          - Effect: Allow
            Principal: {Service: events.amazonaws.com}
            Action: sqs:SendMessage
            Resource: !GetAtt RuleDeadLetters.Arn
            Condition: {ArnEquals: {aws:SourceArn: !GetAtt Rule.Arn}}
  Bus:
    Type: AWS::Events::EventBus
    Properties: {Name: !Ref Source, EventSourceName: !Ref Source}
  Rule:
    Type: AWS::Events::Rule
    Properties:
      EventBusName: !Ref Bus
      EventPattern:
        source: [{prefix: aws.partner/stripe.com/}]
        detail:
          type: [invoice.paid, customer.updated, v1.invoice.paid, v1.customer.updated]
      Targets:
        - Id: Relay
          Arn: !GetAtt Relay.Arn
          RetryPolicy: {MaximumEventAgeInSeconds: 86400, MaximumRetryAttempts: 185}
          DeadLetterConfig: {Arn: !GetAtt RuleDeadLetters.Arn}
  RelayPermission:
    Type: AWS::Lambda::Permission
    Properties:
      Action: lambda:InvokeFunction
      FunctionName: !GetAtt Relay.Arn
      Principal: events.amazonaws.com
      SourceArn: !GetAtt Rule.Arn
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            JwtConfiguration: {issuer: !Ref Issuer, audience: [x]}
      DefaultRouteSettings: {ThrottlingBurstLimit: 1, ThrottlingRateLimit: 1}
  HookLogs:
    Type: AWS::Logs::LogGroup
    Properties: {LogGroupName: !Sub '/aws/lambda/${AWS::StackName}-hook', RetentionInDays: !Ref Retention}
  ConsumerLogs:
    Type: AWS::Logs::LogGroup
    Properties: {LogGroupName: !Sub '/aws/lambda/${AWS::StackName}-consumer', RetentionInDays: !Ref Retention}
  RelayLogs:
    Type: AWS::Logs::LogGroup
    Properties: {LogGroupName: /aws/lambda/relay, RetentionInDays: 14}
  Hook:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: rust-cargolambda, BuildProperties: {Binary: hook}}
    Properties:
      FunctionName: !Sub '${AWS::StackName}-hook'
      LoggingConfig: {LogGroup: !Ref HookLogs}
      Events:
        Stripe:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: POST, Path: /webhooks/stripe, Auth: {Authorizer: NONE}}
        Me:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: GET, Path: /billing/me}
      Environment: {Variables: {STRIPE_WEBHOOK_SECRET_ARN: !If [MakeHook, !Ref StripeWebhookSecret, !Ref StripeWebhookSecretArn]}}
      Policies:
        - AWSSecretsManagerGetSecretValuePolicy: {SecretArn: !If [MakeHook, !Ref StripeWebhookSecret, !Ref StripeWebhookSecretArn]}
        - Statement:
            - Effect: Allow
              Action: xray:PutTraceSegments
              # X-Ray accepts no resource-level permissions.
              Resource: '*'
  Consumer:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: rust-cargolambda, BuildProperties: {Binary: consumer}}
    Properties:
      FunctionName: !Sub '${AWS::StackName}-consumer'
      LoggingConfig: {LogGroup: !Ref ConsumerLogs}
      Timeout: 60
      ReservedConcurrentExecutions: !Ref Concurrency
      Environment: {Variables: {STRIPE_API_KEY_SECRET_ARN: !If [MakeKey, !Ref StripeApiKeySecret, !Ref StripeApiKeySecretArn]}}
      Policies:
        - Statement:
            - Effect: Allow
              Action: [dynamodb:GetItem, dynamodb:PutItem, dynamodb:UpdateItem, dynamodb:DeleteItem, dynamodb:Query]
              Resource: !GetAtt Table.Arn
            - Effect: Allow
              Action: dynamodb:Query
              Resource: !Sub '${Table.Arn}/index/gsi1'
        - Statement:
            - Effect: Allow
              Action: secretsmanager:GetSecretValue
              Resource: !If [MakeKey, !Ref StripeApiKeySecret, !Ref StripeApiKeySecretArn]
      Events:
        Messages:
          Type: SQS
          Properties:
            Queue: !GetAtt Queue.Arn
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig: {MaximumConcurrency: !Ref Concurrency}
  Relay:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: rust-cargolambda, BuildProperties: {Binary: relay}}
    Properties:
      FunctionName: relay
      LoggingConfig: {LogGroup: !Ref RelayLogs}
      Environment:
        Variables:
          EVENTS_QUEUE_URL: !Ref Queue
          PAYMENT_FAILED_QUEUE_URL: !Ref Failed
          BILLING_EVENTBRIDGE_ACCOUNT: !Ref AWS::AccountId
          BILLING_EVENTBRIDGE_SOURCE: !Ref Source
      Policies:
        - SQSSendMessagePolicy: {QueueName: !GetAtt Queue.QueueName}
        - SQSSendMessagePolicy: {QueueName: !GetAtt Failed.QueueName}
      EventInvokeConfig:
        MaximumRetryAttempts: 2
        DestinationConfig:
          OnFailure: {Type: SQS, Destination: !GetAtt RelayFailures.Arn}
  LostAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties: {Namespace: StripeBilling, MetricName: Lost}
  Board:
    Type: AWS::CloudWatch::Dashboard
    Properties:
      DashboardBody: !Sub '{"widgets": [{"properties": {"region": "${AWS::Region}", "metrics": [["StripeBilling", "Seen"]]}}]}'
Outputs:
  StripeApiVersion:
    Value: 2099-01-01.test
  StripeApiKeySecretArn:
    Value: !If [MakeKey, !Ref StripeApiKeySecret, !Ref StripeApiKeySecretArn]
  StripeWebhookSecretArn:
    Value: !If [MakeHook, !Ref StripeWebhookSecret, !Ref StripeWebhookSecretArn]
"""

# Built by concatenation so that this file itself holds no secret-looking literal.
_FAKE_KEY = "sk_" + "live_" + "0123456789abcdefABCDEF"


def _mutate(old: str, new: str) -> str:
    if old not in SELF_TEST_TEMPLATE:
        raise AssertionError(f"self-test template lacks {old!r}")
    return SELF_TEST_TEMPLATE.replace(old, new, 1)


SELF_TEST_CASES: list[tuple[str, str, str]] = [
    # (case, template text, substring the violation must contain)
    (
        "missing ReportBatchItemFailures",
        _mutate("FunctionResponseTypes: [ReportBatchItemFailures]", "FunctionResponseTypes: []"),
        "ReportBatchItemFailures",
    ),
    ("metric on no widget", _mutate('"StripeBilling", "Seen"', '"StripeBilling", "Unseen"'), "metric Seen"),
    ("metric without its alarm", _mutate("MetricName: Lost}", "MetricName: Found}"), "metric Lost"),
    ("no dashboard", _mutate("Type: AWS::CloudWatch::Dashboard", "Type: AWS::SNS::Topic"), "one AWS::CloudWatch::Dashboard"),
    ("low visibility timeout", _mutate("VisibilityTimeout: 360", "VisibilityTimeout: 300"), "VisibilityTimeout"),
    (
        "uncommented Resource '*'",
        _mutate("              # X-Ray accepts no resource-level permissions.\n", ""),
        "Resource '*'",
    ),
    (
        "Resource list holding '*'",
        _mutate(
            "              # X-Ray accepts no resource-level permissions.\n              Resource: '*'",
            "              Resource: [arn:aws:s3:::b, '*']",
        ),
        "Resource '*'",
    ),
    (
        "secret literal",
        _mutate("    Timeout: 10\n", f"    Timeout: 10\n    Environment: {{Variables: {{STRIPE_SECRET_KEY: {_FAKE_KEY}}}}}\n"),
        "secret-looking",
    ),
    (
        "webhook secret literal",
        _mutate("audience: [x]", "audience: [whsec_" + "abcdefgh12345678]"),
        "secret-looking",
    ),
    ("missing redrive policy", _mutate("      RedrivePolicy:\n", "      NoRedrive:\n"), "RedrivePolicy"),
    ("low maxReceiveCount", _mutate("maxReceiveCount: 10", "maxReceiveCount: 5"), "maxReceiveCount"),
    ("standard queue", _mutate("      FifoQueue: true\n      ContentBasedDeduplication", "      FifoQueue: false\n      ContentBasedDeduplication"), "FIFO"),
    (
        "content-based deduplication",
        _mutate("ContentBasedDeduplication: false", "ContentBasedDeduplication: true"),
        "ContentBasedDeduplication",
    ),
    ("x86 architecture", _mutate("Architectures: [arm64]", "Architectures: [x86_64]"), "Architectures"),
    ("wrong runtime", _mutate("Runtime: provided.al2023", "Runtime: python3.12"), "Runtime"),
    ("unknown binary", _mutate("Binary: hook}", "Binary: hooks}"), "Binary"),
    ("webhook behind JWT", _mutate(", Auth: {Authorizer: NONE}}", "}"), "Authorizer NONE"),
    (
        "user route without JWT",
        _mutate("Path: /billing/me}", "Path: /billing/me, Auth: {Authorizer: NONE}}"),
        "JWT",
    ),
    ("no point-in-time recovery", _mutate("PointInTimeRecoveryEnabled: true", "PointInTimeRecoveryEnabled: false"), "PointInTimeRecovery"),
    ("TTL attribute", _mutate("AttributeName: expires_at", "AttributeName: ttl"), "expires_at"),
    ("no gsi1", _mutate("IndexName: gsi1", "IndexName: byCustomer"), "gsi1"),
    ("no throttling", _mutate("ThrottlingRateLimit: 1", "Unrelated: 1"), "Throttling"),
    ("rule without a thin type", _mutate(", v1.customer.updated]", "]"), "detail.type"),
    ("rule without a snapshot type", _mutate("[invoice.paid, customer.updated,", "[invoice.paid,"), "detail.type"),
    (
        "rule with an unhandled type",
        _mutate("v1.customer.updated]", "v1.customer.updated, invoice.created]"),
        "detail.type",
    ),
    (
        "rule on detail-type",
        _mutate("        source: [{prefix", "        detail-type: [invoice.paid]\n        source: [{prefix"),
        "detail-type",
    ),
    (
        "rule matching types by prefix",
        _mutate("v1.customer.updated]", "v1.customer.updated, {prefix: invoice.}]"),
        "detail.type",
    ),
    ("rule on another source", _mutate("prefix: aws.partner/stripe.com/", "prefix: aws.partner/"), "source"),
    (
        "rule without retry policy",
        _mutate("          RetryPolicy: {MaximumEventAgeInSeconds: 86400, MaximumRetryAttempts: 185}\n", ""),
        "RetryPolicy",
    ),
    (
        "rule without dead-letter queue",
        _mutate("          DeadLetterConfig: {Arn: !GetAtt RuleDeadLetters.Arn}\n", ""),
        "DeadLetterConfig",
    ),
    (
        "dead-letter policy without aws:SourceArn",
        _mutate("            Condition: {ArnEquals: {aws:SourceArn: !GetAtt Rule.Arn}}\n", ""),
        "aws:SourceArn",
    ),
    ("dead-letter policy for another source", _mutate("aws:SourceArn: !GetAtt Rule.Arn", "aws:SourceArn: !GetAtt Bus.Arn"), "aws:SourceArn"),
    ("dead-letter policy missing", _mutate("      Queues: [!Ref RuleDeadLetters]", "      Queues: [!Ref RelayFailures]"), "no queue policy"),
    (
        "FIFO EventBridge dead-letter queue",
        _mutate("  RuleDeadLetters:\n    Type: AWS::SQS::Queue\n", "  RuleDeadLetters:\n    Type: AWS::SQS::Queue\n    Properties: {FifoQueue: true}\n"),
        "standard queue",
    ),
    ("invoke permission for any rule", _mutate("      SourceArn: !GetAtt Rule.Arn\n", ""), "SourceArn"),
    ("bus not named after its source", _mutate("{Name: !Ref Source,", "{Name: stripe,"), "named after"),
    ("partner bus without rule", _mutate("      EventBusName: !Ref Bus\n", ""), "no AWS::Events::Rule"),
    ("no partner bus", _mutate("EventSourceName: !Ref Source}", "Description: x}"), "expected one AWS::Events::EventBus"),
    ("receiver not targeted", _mutate("          Arn: !GetAtt Relay.Arn\n", "          Arn: !GetAtt Hook.Arn\n"), "no rule on the partner event bus targets it"),
    (
        "receiver reads the secret",
        _mutate(
            "        - SQSSendMessagePolicy: {QueueName: !GetAtt Queue.QueueName}\n",
            "        - SQSSendMessagePolicy: {QueueName: !GetAtt Queue.QueueName}\n"
            "        - AWSSecretsManagerGetSecretValuePolicy: {SecretArn: !Ref StripeWebhookSecret}\n",
        ),
        "no Secrets Manager access",
    ),
    (
        "receiver with a table policy",
        _mutate(
            "        - SQSSendMessagePolicy: {QueueName: !GetAtt Failed.QueueName}\n",
            "        - SQSSendMessagePolicy: {QueueName: !GetAtt Failed.QueueName}\n"
            "        - DynamoDBCrudPolicy: {TableName: !Ref Table}\n",
        ),
        "may only have SQSSendMessagePolicy",
    ),
    (
        "receiver sends to a dead-letter queue",
        _mutate("{QueueName: !GetAtt Failed.QueueName}", "{QueueName: !GetAtt RuleDeadLetters.QueueName}"),
        "may only have SQSSendMessagePolicy",
    ),
    (
        "receiver told the API key secret's ARN by Globals",
        _mutate("    Timeout: 10\n", "    Timeout: 10\n    Environment: {Variables: {STRIPE_API_KEY_SECRET_ARN: !Ref StripeApiKeySecret}}\n"),
        "Relay: must not get STRIPE_API_KEY_SECRET_ARN",
    ),
    (
        "receiver without on-failure destination",
        _mutate("        DestinationConfig:\n          OnFailure: {Type: SQS, Destination: !GetAtt RelayFailures.Arn}\n", ""),
        "OnFailure",
    ),
    ("receiver checks another account", _mutate("!Ref AWS::AccountId", "'123456789012'"), "BILLING_EVENTBRIDGE_ACCOUNT"),
    ("secret reader without policy", _mutate("        - AWSSecretsManagerGetSecretValuePolicy: {SecretArn: !If [MakeHook, !Ref StripeWebhookSecret, !Ref StripeWebhookSecretArn]}\n", ""), "Hook: reads the webhook signing secret but no Secrets Manager policy"),
    # -- the two Stripe secrets
    (
        "webhook told the API key secret",
        _mutate(
            "      Environment: {Variables: {STRIPE_WEBHOOK_SECRET_ARN:",
            "      Environment: {Variables: {STRIPE_API_KEY_SECRET_ARN: !Ref StripeApiKeySecret, STRIPE_WEBHOOK_SECRET_ARN:",
        ),
        "Hook: must not get STRIPE_API_KEY_SECRET_ARN",
    ),
    (
        "webhook reads the API key secret",
        _mutate(
            "{SecretArn: !If [MakeHook, !Ref StripeWebhookSecret, !Ref StripeWebhookSecretArn]}",
            "{SecretArn: !If [MakeKey, !Ref StripeApiKeySecret, !Ref StripeApiKeySecretArn]}",
        ),
        "may not read the API key secret",
    ),
    (
        "one grant reading both secrets",
        _mutate(
            "              Resource: !If [MakeKey, !Ref StripeApiKeySecret, !Ref StripeApiKeySecretArn]",
            "              Resource: [!Ref StripeApiKeySecret, !Ref StripeWebhookSecret]",
        ),
        "can read both Stripe secrets",
    ),
    (
        "wildcard secret ARN",
        _mutate(
            "              Resource: !If [MakeKey, !Ref StripeApiKeySecret, !Ref StripeApiKeySecretArn]",
            "              Resource: !Sub '${StripeApiKeySecret}*'",
        ),
        "literal or wildcard part '${StripeApiKeySecret}*'",
    ),
    (
        "secret ARN of another resource",
        _mutate(
            "              Resource: !If [MakeKey, !Ref StripeApiKeySecret, !Ref StripeApiKeySecretArn]",
            "              Resource: !Ref Queue",
        ),
        "refers to Queue, which is no Stripe secret",
    ),
    (
        "ARN variable naming the other secret",
        _mutate(
            "{Variables: {STRIPE_WEBHOOK_SECRET_ARN: !If [MakeHook, !Ref StripeWebhookSecret, !Ref StripeWebhookSecretArn]}}",
            "{Variables: {STRIPE_WEBHOOK_SECRET_ARN: !Ref StripeApiKeySecret}}",
        ),
        "STRIPE_WEBHOOK_SECRET_ARN must name the webhook signing secret",
    ),
    (
        "API key reader without its ARN",
        _mutate(
            "      Environment: {Variables: {STRIPE_API_KEY_SECRET_ARN: !If [MakeKey, !Ref StripeApiKeySecret, !Ref StripeApiKeySecretArn]}}\n",
            "",
        ),
        "Consumer: reads the API key secret but has no STRIPE_API_KEY_SECRET_ARN",
    ),
    (
        "the combined secret's variable",
        _mutate("          EVENTS_QUEUE_URL: !Ref Queue\n", "          EVENTS_QUEUE_URL: !Ref Queue\n          STRIPE_SECRETS_ARN: x\n"),
        "no function may get STRIPE_SECRETS_ARN",
    ),
    (
        "broader Secrets Manager action",
        _mutate("              Action: secretsmanager:GetSecretValue", "              Action: secretsmanager:*"),
        "is more than secretsmanager:GetSecretValue",
    ),
    (
        "secret parameter with a default",
        _mutate('StripeWebhookSecretArn: {Type: String, Default: ""}', 'StripeWebhookSecretArn: {Type: String, Default: "arn:x"}'),
        "Parameters.StripeWebhookSecretArn",
    ),
    (
        "created secret without a condition",
        _mutate("    Condition: MakeKey\n", ""),
        "StripeApiKeySecret: the API key secret the stack creates",
    ),
    ("no secret output", _mutate("  StripeWebhookSecretArn:\n    Value:", "  WebhookArn:\n    Value:"), "Outputs.StripeWebhookSecretArn"),
    ("no separate-secrets rule", _mutate("      - Assert: !Not [!Equals", "      - Assert: !Or [!Equals"), "Rules: no assertion"),
    # -- DynamoDB
    (
        "DynamoDBCrudPolicy",
        _mutate("        - Statement:\n            - Effect: Allow\n              Action: [dynamodb:", "        - DynamoDBCrudPolicy: {TableName: !Ref Table}\n        - Statement:\n            - Effect: Allow\n              Action: [dynamodb:"),
        "Consumer: DynamoDBCrudPolicy",
    ),
    ("other DynamoDB policy template", _mutate("        - SQSSendMessagePolicy: {QueueName: !GetAtt Queue.QueueName}\n", "        - SQSSendMessagePolicy: {QueueName: !GetAtt Queue.QueueName}\n        - DynamoDBReadPolicy: {TableName: !Ref Table}\n"), "Relay: policy template DynamoDBReadPolicy"),
    ("dynamodb:*", _mutate("Action: [dynamodb:GetItem,", "Action: ['dynamodb:*', dynamodb:GetItem,"), "wildcard action dynamodb:*"),
    ("extra Scan", _mutate("dynamodb:DeleteItem, dynamodb:Query]", "dynamodb:DeleteItem, dynamodb:Query, dynamodb:Scan]"), "extra ['dynamodb:Scan']"),
    ("missing DeleteItem", _mutate(" dynamodb:DeleteItem,", ""), "missing ['dynamodb:DeleteItem']"),
    (
        "no index Query",
        _mutate("            - Effect: Allow\n              Action: dynamodb:Query\n              Resource: !Sub '${Table.Arn}/index/gsi1'\n", ""),
        "on index gsi1 differ from DYNAMODB_ACCESS: extra [], missing ['dynamodb:Query']",
    ),
    ("every index", _mutate("/index/gsi1'", "/index/*'"), "neither !GetAtt <table>.Arn"),
    ("table by name", _mutate("              Resource: !GetAtt Table.Arn", "              Resource: !Sub 'arn:aws:dynamodb:*:*:table/${Table}'"), "neither !GetAtt <table>.Arn"),
    (
        "webhook with table access",
        _mutate(
            "        - Statement:\n            - Effect: Allow\n              Action: xray:PutTraceSegments",
            "        - Statement:\n            - Effect: Allow\n              Action: dynamodb:GetItem\n              Resource: !GetAtt Table.Arn\n"
            "        - Statement:\n            - Effect: Allow\n              Action: xray:PutTraceSegments",
        ),
        "Hook: DynamoDB actions on the table differ from DYNAMODB_ACCESS: extra ['dynamodb:GetItem']",
    ),
    # -- log groups
    ("function without its log group", _mutate("      LoggingConfig: {LogGroup: !Ref HookLogs}\n", ""), "Hook: LoggingConfig.LogGroup"),
    ("log group by literal name", _mutate("LoggingConfig: {LogGroup: !Ref HookLogs}", "LoggingConfig: {LogGroup: /aws/lambda/hook}"), "Hook: LoggingConfig.LogGroup"),
    ("log group without retention", _mutate(", RetentionInDays: 14}", "}"), "RelayLogs: RetentionInDays"),
    ("retention CloudWatch refuses", _mutate("RetentionInDays: 14}", "RetentionInDays: 31}"), "RelayLogs: RetentionInDays"),
    ("retention parameter allowing a refused value", _mutate("AllowedValues: [7, 30, 90]", "AllowedValues: [7, 30, 45]"), "Parameters.Retention: AllowedValues"),
    ("log group named after another function", _mutate("LogGroupName: /aws/lambda/relay,", "LogGroupName: /aws/lambda/relay2,"), "RelayLogs: LogGroupName"),
    ("function not named", _mutate("      FunctionName: relay\n", ""), "RelayLogs: LogGroupName"),
    ("shared log group", _mutate("LoggingConfig: {LogGroup: !Ref RelayLogs}", "LoggingConfig: {LogGroup: !Ref HookLogs}"), "shares log group HookLogs"),
    (
        "log group without the function's condition",
        _mutate("    Metadata: {BuildMethod: rust-cargolambda, BuildProperties: {Binary: relay}}\n", "    Condition: MakeHook\n    Metadata: {BuildMethod: rust-cargolambda, BuildProperties: {Binary: relay}}\n"),
        "RelayLogs: must have the Condition of Relay",
    ),
    # -- concurrency
    ("no MaximumConcurrency", _mutate("            ScalingConfig: {MaximumConcurrency: !Ref Concurrency}\n", ""), "ScalingConfig.MaximumConcurrency"),
    ("MaximumConcurrency 1", _mutate("{MaximumConcurrency: !Ref Concurrency}", "{MaximumConcurrency: 1}"), "ScalingConfig.MaximumConcurrency"),
    ("no reserved concurrency", _mutate("      ReservedConcurrentExecutions: !Ref Concurrency\n", ""), "Consumer: an SQS consumer needs ReservedConcurrentExecutions"),
    ("reserved below maximum", _mutate("ReservedConcurrentExecutions: !Ref Concurrency", "ReservedConcurrentExecutions: 2"), "ReservedConcurrentExecutions 2 is below"),
    ("concurrency from two sources", _mutate("ReservedConcurrentExecutions: !Ref Concurrency", "ReservedConcurrentExecutions: 50"), "from one parameter"),
    ("concurrency parameter allowing 1", _mutate("Default: 5, MinValue: 2}", "Default: 5, MinValue: 1}"), "Parameters.Concurrency: MinValue"),
    ("wrong API version output", _mutate("Value: 2099-01-01.test", "Value: 2098-01-01.test"), "StripeApiVersion"),
    ("no API version output", _mutate("  StripeApiVersion:\n", "  ApiVersion:\n"), "StripeApiVersion"),
]

# (case, project, substring the violation must contain), all on the correct template.
SELF_TEST_PROJECT_CASES: list[tuple[str, Project, str]] = [
    (
        "documented route API Gateway does not route",
        replace(SELF_TEST_PROJECT, api_routes=SELF_TEST_PROJECT.api_routes | {("GET", "/billing/invoices")}),
        "GET /billing/invoices of the OpenAPI document has no HttpApi event",
    ),
    (
        "routed route the document lacks",
        replace(SELF_TEST_PROJECT, api_routes=frozenset()),
        "GET /billing/me is not in the OpenAPI document",
    ),
    (
        "functions/ directory without a function",
        replace(SELF_TEST_PROJECT, function_dirs=SELF_TEST_PROJECT.function_dirs | {"orphan"}),
        "functions/orphan",
    ),
    (
        "function missing from STRIPE_SECRET_ACCESS",
        replace(SELF_TEST_PROJECT, secret_access={"Hook": frozenset({WEBHOOK_SECRET}), "Consumer": frozenset({API_KEY})}),
        "Relay: no entry in STRIPE_SECRET_ACCESS",
    ),
    (
        "stale STRIPE_SECRET_ACCESS entry",
        replace(SELF_TEST_PROJECT, secret_access={**SELF_TEST_PROJECT.secret_access, "Gone": frozenset()}),
        "STRIPE_SECRET_ACCESS names Gone",
    ),
    (
        "secret table gives the webhook the API key",
        replace(SELF_TEST_PROJECT, secret_access={**SELF_TEST_PROJECT.secret_access, "Hook": frozenset({API_KEY})}),
        "Hook: reads the API key secret but has no STRIPE_API_KEY_SECRET_ARN",
    ),
    (
        "function missing from DYNAMODB_ACCESS",
        replace(SELF_TEST_PROJECT, dynamodb_access={"Hook": TableAccess(), "Relay": TableAccess()}),
        "Consumer: no entry in DYNAMODB_ACCESS",
    ),
    (
        "stale DYNAMODB_ACCESS entry",
        replace(SELF_TEST_PROJECT, dynamodb_access={**SELF_TEST_PROJECT.dynamodb_access, "Gone": TableAccess()}),
        "DYNAMODB_ACCESS names Gone",
    ),
    (
        "DYNAMODB_ACCESS row wants Scan",
        replace(
            SELF_TEST_PROJECT,
            dynamodb_access={
                **SELF_TEST_PROJECT.dynamodb_access,
                "Consumer": replace(
                    SELF_TEST_PROJECT.dynamodb_access["Consumer"],
                    table=SELF_TEST_PROJECT.dynamodb_access["Consumer"].table | {"Scan"},
                ),
            },
        ),
        "missing ['dynamodb:Scan']",
    ),
    (
        "README gained an event type",
        replace(SELF_TEST_PROJECT, event_types=(*SELF_TEST_PROJECT.event_types, "invoice.voided")),
        "detail.type",
    ),
    ("client.rs pins another version", replace(SELF_TEST_PROJECT, api_version="2100-01-01.next"), "StripeApiVersion"),
]


def _self_test_readers() -> None:
    readme = f"x\n{EVENT_TYPES_BEGIN}\n```\ninvoice.paid\n\ncustomer.updated\n```\n{EVENT_TYPES_END}\ny\n"
    if readme_event_types(readme) != ("invoice.paid", "customer.updated"):
        raise AssertionError(f"self-test: README event types read as {readme_event_types(readme)}")
    client = 'const X: u8 = 1;\npub const API_VERSION: &str = "2099-01-01.test";\n'
    if pinned_api_version(client) != "2099-01-01.test":
        raise AssertionError("self-test: API_VERSION not read")
    for reader, text in ((readme_event_types, readme.replace(EVENT_TYPES_END, "")), (pinned_api_version, "")):
        try:
            reader(text)
        except ValueError:
            continue
        raise AssertionError(f"self-test: {reader.__name__} accepted input without its marker")


def self_test() -> int:
    """Returns the number of cases run; raises AssertionError when the checker misbehaves."""
    _self_test_readers()
    checked, violations = check_template(SELF_TEST_TEMPLATE, SELF_TEST_PROJECT)
    if violations or checked == 0:
        raise AssertionError(f"self-test: the correct template was rejected: {violations}")
    cases = [(case, text, SELF_TEST_PROJECT, expected) for case, text, expected in SELF_TEST_CASES]
    cases += [(case, SELF_TEST_TEMPLATE, project, expected) for case, project, expected in SELF_TEST_PROJECT_CASES]
    for case, text, project, expected in cases:
        _, violations = check_template(text, project)
        if not any(expected in violation for violation in violations):
            raise AssertionError(f"self-test: {case!r} was not caught (violations: {violations})")
    return len(cases) + 2


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 1
    try:
        cases = self_test()
    except AssertionError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"self-test: {cases} cases passed")
    if argv[0] == "--self-test":
        return 0
    path = Path(argv[0])
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        print(f"cannot read {path}: {error}", file=sys.stderr)
        return 1
    try:
        project = load_project()
    except ValueError as error:
        print(f"cannot read the project: {error}", file=sys.stderr)
        return 1
    checked, violations = check_template(text, project)
    for violation in violations:
        print(f"{path}: {violation}")
    print(f"template rules: {checked} checked, {len(violations)} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
