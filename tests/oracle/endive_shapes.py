"""The oracle for tests/integration/api_version.rs: what Stripe's API looks like at the version
the system pins, as the official stripe-python 16.1.0 declares it (its classes and params
TypedDicts are generated from Stripe's OpenAPI spec at 2026-10-28.endive).

    python3 tests/oracle/endive_shapes.py MODE < request.json > answer.json

MODE is one of
  version   {} -> {"package": stripe.VERSION, "api_version": stripe.api_version}
  shapes    [{"label", "class", "object"}] -> {label: [problem, ...]}
            Every key of the object (at any depth) must be a field the class declares; every
            field it declares without Optional must be there and not null; a value where the
            class declares an enum (Literal) must be one of its values; `object` must be the
            class's OBJECT_NAME. A deleted object (`deleted: true`) is only checked for keys
            the class does not declare: Stripe's deleted form has just id, object and deleted.
  event_classes [object name] -> {object name: class path stripe-python gives it}
  declared  [{"struct", "class", "fields"}] -> {struct: [field the class does not declare]}
  params    {"spec": spec-subset.json, "operations": [{"method", "path", "params"}]}
            -> {"METHOD path": [problem, ...]}: every parameter (query, and body at any depth)
            the spec subset allows must be declared by the operation's params TypedDict.
"""
import importlib
import json
import re
import sys
import typing

import stripe
from typing_extensions import is_typeddict
from stripe._list_object import ListObject
from stripe._object_classes import OBJECT_CLASSES
from stripe._request_options import RequestOptions
from stripe._stripe_object import StripeObject, UntypedStripeObject

Literal = typing.Literal


def load(path):
    """`stripe.Subscription`, `stripe.Invoice.Parent`, `stripe.params.checkout.SessionCreateParams`."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            target = getattr(target, attr)
        return target
    raise LookupError(path)


_imports = {}


def imported(module, name):
    """A name the module imports under TYPE_CHECKING (`from stripe._card import Card as CardResource`)."""
    if module.__name__ not in _imports:
        table = {}
        source = open(module.__file__).read()
        for found in re.finditer(r"from (stripe[\w.]*) import (\([^)]*\)|[^\n]*)", source):
            for part in found.group(2).strip("()").split(","):
                bits = [b.strip() for b in part.strip().split(" as ")]
                if bits[0]:
                    table[bits[-1]] = (found.group(1), bits[0])
        _imports[module.__name__] = table
    where = _imports[module.__name__].get(name)
    if where is None:
        return getattr(module, name, None) or getattr(stripe, name, None)
    return getattr(importlib.import_module(where[0]), where[1])


def annotations(cls):
    return {k: t for k, t in cls.__dict__.get("__annotations__", {}).items() if typing.get_origin(t) is not typing.ClassVar}


def resolve(t, module):
    if isinstance(t, typing.ForwardRef):
        t = t.__forward_arg__
    if isinstance(t, str):
        found = imported(module, t) if t.isidentifier() else None
        return found if found is not None else eval(t, vars(module))
    return t


def flatten(t, module):
    """The alternatives of an annotation, forward references resolved, NotRequired unwrapped."""
    t = resolve(t, module)
    origin = typing.get_origin(t)
    if origin is typing.Union or (origin is not None and getattr(origin, "_name", "") in ("NotRequired", "Required")):
        return [x for a in typing.get_args(t) for x in flatten(a, module)]
    if type(t).__name__ == "UnionType":
        return [x for a in t.__args__ for x in flatten(a, module)]
    return [t]


def optional(t, module):
    return any(a is type(None) for a in flatten(t, module))


class Shapes:
    def __init__(self):
        self.problems = []

    def check(self, value, cls, at):
        module = sys.modules[cls.__module__]
        declared = annotations(cls)
        for key in sorted(set(value) - set(declared)):
            self.problems.append(f"{at}.{key}: {cls.__qualname__} has no such field at {stripe.api_version}")
        deleted = value.get("deleted") is True
        name = getattr(cls, "OBJECT_NAME", None)
        if isinstance(name, str) and "object" in value and value["object"] != name:
            self.problems.append(f"{at}.object: {value['object']!r}, {cls.__qualname__} is {name!r}")
        for key, t in declared.items():
            if key not in value:
                if not deleted and not optional(t, module):
                    self.problems.append(f"{at}.{key}: missing; {cls.__qualname__} declares it without Optional")
                continue
            self.value(value[key], t, module, f"{at}.{key}")

    def value(self, v, t, module, at):
        alternatives = flatten(t, module)
        if v is None:
            if type(None) not in alternatives:
                self.problems.append(f"{at}: null; declared without Optional")
            return
        if isinstance(v, str):
            values = [x for a in alternatives if typing.get_origin(a) is Literal for x in typing.get_args(a)]
            if values and v not in values:
                self.problems.append(f"{at}: {v!r} is not one of {sorted(map(str, values))}")
            return
        if isinstance(v, list):
            items = [typing.get_args(a)[0] for a in alternatives if typing.get_origin(a) in (list, typing.List)]
            for i, item in enumerate(v):
                if items:
                    self.value(item, items[0], module, f"{at}[{i}]")
            return
        if not isinstance(v, dict):
            return
        if any(a is UntypedStripeObject or typing.get_origin(a) in (UntypedStripeObject, dict) for a in alternatives):
            return
        lists = [typing.get_args(a)[0] for a in alternatives if typing.get_origin(a) is ListObject]
        if lists:
            for key in sorted(set(v) - {"object", "data", "has_more", "url", "total_count"}):
                self.problems.append(f"{at}.{key}: a list has no such field")
            for key in ("data", "has_more", "url"):
                if key not in v:
                    self.problems.append(f"{at}.{key}: missing from a list")
            for i, item in enumerate(v.get("data", [])):
                self.value(item, lists[0], module, f"{at}.data[{i}]")
            return
        classes = [a for a in alternatives if isinstance(a, type) and issubclass(a, StripeObject)]
        if len(classes) > 1 and "object" in v:
            classes = [c for c in classes if getattr(c, "OBJECT_NAME", None) == v["object"]] or classes
        if classes:
            self.check(v, classes[0], at)
        else:
            self.problems.append(f"{at}: an object where {t} is declared")


def shapes(request):
    answer = {}
    for entry in request:
        checker = Shapes()
        cls = load(entry["class"])
        checker.check(entry["object"], cls, entry["label"])
        answer[entry["label"]] = checker.problems
    return answer


def event_class(object_name):
    """The class stripe-python gives an event's `data.object`, by its `object`."""
    module, name = OBJECT_CLASSES[object_name]
    return f"{module}.{name}"


def declared_by(classes):
    """Fields declared by `a|b|…`: a model that reads both event shapes (a snapshot `stripe.Event`
    and a thin event notification, whose fields sit on its class and `EventNotification`) may
    read what either declares."""
    if "|" not in classes:
        return set(annotations(load(classes)))
    names = set()
    for path in classes.split("|"):
        for cls in load(path).__mro__:
            names |= set(annotations(cls))
    return names


def declared(request):
    return {
        entry["struct"]: sorted(f for f in entry["fields"] if f not in declared_by(entry["class"]))
        for entry in request
    }


OPTIONS = set(RequestOptions.__annotations__)


def typed_dicts(t, module, kind):
    out = []
    for a in flatten(t, module):
        if typing.get_origin(a) is Literal:
            continue
        if kind == "list" and typing.get_origin(a) in (list, typing.List):
            out.extend(typed_dicts(typing.get_args(a)[0], module, "object"))
        elif kind == "object" and is_typeddict(a):
            out.append(a)
        elif kind == "object" and typing.get_origin(a) is dict:
            out.append(dict)
    return out


def params_of(td):
    """What the TypedDict declares as parameters (not the client's request options)."""
    own = set(td.__annotations__)
    if OPTIONS <= own:
        own -= OPTIONS
    return own


def walk(schema, td, at, problems):
    if td is dict:
        return
    module = sys.modules[td.__module__]
    names = params_of(td)
    for key, sub in schema.get("properties", {}).items():
        if key not in names:
            problems.append(f"{at}{key}: {td.__name__} has no such parameter at {stripe.api_version}")
            continue
        for branch in sub.get("anyOf", [sub]):
            kind = branch.get("type")
            if kind == "object" and branch.get("properties"):
                found = typed_dicts(td.__annotations__[key], module, "object")
                if found:
                    walk(branch, found[0], f"{at}{key}.", problems)
                else:
                    problems.append(f"{at}{key}: an object, where {td.__name__} declares none")
            elif kind == "array" and branch.get("items", {}).get("properties"):
                found = typed_dicts(td.__annotations__[key], module, "list")
                if found:
                    walk(branch["items"], found[0], f"{at}{key}[].", problems)
                else:
                    problems.append(f"{at}{key}: a list of objects, where {td.__name__} declares none")


def params(request):
    spec = request["spec"]
    answer = {}
    for op in request["operations"]:
        td = load(op["params"])
        problems = []
        operation = spec["paths"][op["path"]][op["method"].lower()]
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and parameter["name"] not in params_of(td):
                problems.append(f"?{parameter['name']}: {td.__name__} has no such parameter at {stripe.api_version}")
        walk(operation.get("requestBody", {}), td, "", problems)
        answer[f"{op['method'].upper()} {op['path']}"] = problems
    return answer


def main():
    mode = sys.argv[1]
    request = json.load(sys.stdin)
    if mode == "version":
        answer = {"package": stripe.VERSION, "api_version": stripe.api_version}
    elif mode == "shapes":
        answer = shapes(request)
    elif mode == "event_classes":
        answer = {name: event_class(name) for name in request}
    elif mode == "declared":
        answer = declared(request)
    elif mode == "params":
        answer = params(request)
    else:
        raise SystemExit(f"unknown mode {mode}")
    json.dump(answer, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
