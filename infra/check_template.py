#!/usr/bin/env python3
"""Project rules for the SAM template that cfn-lint does not know about.

Usage:
    python3 infra/check_template.py infra/template.yaml   # self-test, then check the template
    python3 infra/check_template.py --self-test           # self-test only

Every run first feeds the checker deliberately broken in-memory templates and makes sure each
one is caught (and that a correct one is not), so the checker cannot silently pass everything.
Exit status: 0 when all rules hold, 1 on any violation or unreadable template, 2 when the
self-test itself fails.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNTIME = "provided.al2023"
ARCHITECTURE = "arm64"
BUILD_METHOD = "rust-cargolambda"
WEBHOOK_PATH = "/webhooks/stripe"
MIN_MAX_RECEIVE_COUNT = 5
VISIBILITY_FACTOR = 6
LAMBDA_DEFAULT_TIMEOUT = 3
SQS_DEFAULT_VISIBILITY = 30
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


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


class Checker:
    def __init__(self, text: str, function_dirs: set[str]) -> None:
        self.text = text
        self.function_dirs = function_dirs
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
        self.check_queues()
        self.check_tables()
        self.check_http_api()

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
        consumers = self.queue_consumers()
        for name, resource in queues.items():
            props = self.props(resource)
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
                    effective = authorizer if authorizer is not None else default[api]
                    self.expect(
                        effective in jwt[api],
                        f"{where}: route {props.get('Method')} {props.get('Path')} is not behind a JWT authorizer",
                    )
        self.expect(webhook_routes == 1, f"expected one HttpApi route for {WEBHOOK_PATH}, found {webhook_routes}")


def check_template(text: str, function_dirs: set[str]) -> tuple[int, list[str]]:
    checker = Checker(text, function_dirs)
    checker.run()
    return checker.checked, checker.violations


def function_directories() -> set[str]:
    root = REPO_ROOT / "functions"
    return {path.name for path in root.iterdir() if path.is_dir() and (path / "Cargo.toml").exists()}


# ------------------------------------------------------------------ self-test

SELF_TEST_FUNCTIONS = {"hook", "consumer"}

SELF_TEST_TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: provided.al2023
    Architectures: [arm64]
    Timeout: 10
Resources:
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
        maxReceiveCount: 5
  DeadLetters:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            JwtConfiguration: {issuer: !Ref Issuer, audience: [x]}
      DefaultRouteSettings: {ThrottlingBurstLimit: 1, ThrottlingRateLimit: 1}
  Hook:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: rust-cargolambda, BuildProperties: {Binary: hook}}
    Properties:
      Events:
        Stripe:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: POST, Path: /webhooks/stripe, Auth: {Authorizer: NONE}}
        Me:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: GET, Path: /billing/me}
      Policies:
        - Statement:
            - Effect: Allow
              Action: xray:PutTraceSegments
              # X-Ray accepts no resource-level permissions.
              Resource: '*'
  Consumer:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: rust-cargolambda, BuildProperties: {Binary: consumer}}
    Properties:
      Timeout: 60
      Events:
        Messages:
          Type: SQS
          Properties:
            Queue: !GetAtt Queue.Arn
            FunctionResponseTypes: [ReportBatchItemFailures]
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
    ("low maxReceiveCount", _mutate("maxReceiveCount: 5", "maxReceiveCount: 1"), "maxReceiveCount"),
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
]


def self_test() -> int:
    """Returns the number of cases run; raises AssertionError when the checker misbehaves."""
    checked, violations = check_template(SELF_TEST_TEMPLATE, SELF_TEST_FUNCTIONS)
    if violations or checked == 0:
        raise AssertionError(f"self-test: the correct template was rejected: {violations}")
    _, violations = check_template(SELF_TEST_TEMPLATE, SELF_TEST_FUNCTIONS | {"orphan"})
    if not any("functions/orphan" in violation for violation in violations):
        raise AssertionError("self-test: a functions/ directory without a function was not caught")
    for case, text, expected in SELF_TEST_CASES:
        _, violations = check_template(text, SELF_TEST_FUNCTIONS)
        if not any(expected in violation for violation in violations):
            raise AssertionError(f"self-test: {case!r} was not caught (violations: {violations})")
    return len(SELF_TEST_CASES) + 2


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
    checked, violations = check_template(text, function_directories())
    for violation in violations:
        print(f"{path}: {violation}")
    print(f"template rules: {checked} checked, {len(violations)} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
