"""A deterministic instance of a JSON schema: what the mock provider answers when a client asks for structure.

Clients check the mock's tool-call arguments and structured content against
the schema they sent (pydantic validates them, instructor retries on a
mismatch), so a plausible-looking but invalid answer would make the client
look broken.  ``instance_of(schema)`` builds one valid value, the same one
every time, for the schemas clients actually send: pydantic's (``$defs``
and ``$ref``, ``anyOf`` with ``null`` for Optional fields, enums, ``const``
for Literal, ``default``), OpenAI's strict ones (every property required,
``additionalProperties: false``) and hand-written tool parameters.

Rules, in order: ``const``; ``default``; the first of ``enum``; ``$ref``
(``#/...`` pointers into the root schema); the first non-null branch of
``anyOf``/``oneOf``; ``allOf`` merged; then by ``type`` (the first non-null
one of a list, or guessed from ``properties``/``items``).  Objects get every
property, required or not; arrays get one item (or ``minItems``); numbers,
strings and arrays respect their bounds; a string with a ``format`` gets a
value of that format, one with a ``pattern`` the shortest string the
pattern's first branches spell (``^\\d{5}$`` gives ``00000``), or else the
first of a few candidates that matches.  A recursive schema is cut short:
past ``_DEEP`` levels only required properties, ``minItems`` items and null
branches are taken.

Not covered (a schema that needs them may get an invalid instance):
``not``, ``if``/``then``/``else``, ``uniqueItems`` with ``minItems`` above
one, patterns that need a look-around or back reference, and references
outside the schema.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

Schema = dict[str, Any]

# Values for string formats that pydantic and jsonschema's format checker accept.
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "mock@example.com",
    "idn-email": "mock@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "iri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
# Tried in order against a ``pattern``; the first that matches is the value.
_PATTERN_CANDIDATES = ("mock", "Mock", "MOCK", "a", "A", "0", "1", "abc", "mock-1", "mock_1", "2026-01-01", "mock@example.com", "https://example.com/", "")
# Past this depth a recursive schema is answered as small as it allows; past _STOP, with null.
_DEEP = 6
_STOP = 40


def instance_of(schema: Any) -> Any:
    """One value valid against ``schema`` (a JSON schema as a dict, or a boolean schema)."""
    return _Instance(schema).of(schema, 0)


class _Instance:
    """Holds the root schema, which ``$ref`` pointers resolve against."""

    def __init__(self, root: Any) -> None:
        self.root = root

    def of(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict) or depth > _STOP:
            return "mock" if schema is True else None
        if "const" in schema:
            return schema["const"]
        if "default" in schema:
            return schema["default"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        if isinstance(schema.get("$ref"), str):
            return self.of({**self.resolve(schema["$ref"]), **{k: v for k, v in schema.items() if k != "$ref"}}, depth + 1)
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.of(self.branch(schema, key, depth), depth + 1)
        if isinstance(schema.get("allOf"), list) and schema["allOf"]:
            return self.of(_merged(schema), depth + 1)
        return _BY_TYPE[_type_of(schema)](self, schema, depth)

    def resolve(self, ref: str) -> Schema:
        """A ``#/a/b`` pointer into the root schema; anything else (or a dangling pointer) is the empty schema."""
        if not ref.startswith("#"):
            return {}
        node = self.root
        for part in filter(None, ref[1:].split("/")):
            key = part.replace("~1", "/").replace("~0", "~")
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}

    def branch(self, schema: Schema, key: str, depth: int) -> Schema:
        """The first non-null branch; the null one once deep in a recursive schema, where it ends the recursion."""
        siblings = {k: v for k, v in schema.items() if k != key}
        branches = [b for b in schema[key] if isinstance(b, dict)] or [{}]
        nulls = [b for b in branches if b.get("type") == "null"]
        others = [b for b in branches if b.get("type") != "null"] or nulls
        chosen = nulls[0] if depth > _DEEP and nulls else others[0]
        return {**siblings, **chosen}

    def object(self, schema: Schema, depth: int) -> dict[str, Any]:
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = [name for name in schema.get("required", ()) if isinstance(name, str)]
        names = required if depth > _DEEP else list(properties) + [name for name in required if name not in properties]
        return {name: self.of(properties.get(name, True), depth + 1) for name in names}

    def array(self, schema: Schema, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        items = schema.get("items", True)
        if isinstance(items, list):  # the draft-04..2019 spelling of prefixItems
            prefix, items = items, schema.get("additionalItems", True)
        least = _int(schema.get("minItems"), 0)
        count = max(least, len(prefix), 0 if depth > _DEEP or items is False else 1)
        count = min(count, _int(schema.get("maxItems"), count))
        return [self.of(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(count)]

    def string(self, schema: Schema, depth: int) -> str:
        value = _FORMATS.get(schema.get("format", ""), "mock")
        if isinstance(schema.get("pattern"), str):
            value = _matching(schema["pattern"], value)
        least, most = _int(schema.get("minLength"), 0), _int(schema.get("maxLength"), len(value))
        if len(value) < least:
            value = (value * least)[:least]
        return value[:most]

    def integer(self, schema: Schema, depth: int) -> int:
        return int(_number(schema, 1, integer=True))

    def number(self, schema: Schema, depth: int) -> float:
        return float(_number(schema, 1.0, integer=False))


def _type_of(schema: Schema) -> str:
    """The schema's type, or a guess from the keywords it uses; the first non-null of a list."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null") if kind else None
    if kind in _BY_TYPE:
        return kind
    if "properties" in schema or "required" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _merged(schema: Schema) -> Schema:
    """``allOf`` as one schema: the branches' keywords together, properties and required lists joined."""
    out: Schema = {k: v for k, v in schema.items() if k != "allOf"}
    for branch in schema["allOf"]:
        if not isinstance(branch, dict):
            continue
        for key, value in branch.items():
            if key == "properties" and isinstance(value, dict):
                out["properties"] = {**out.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                out["required"] = list(dict.fromkeys([*out.get("required", []), *value]))
            else:
                out.setdefault(key, value)
    return out


def _int(value: Any, fallback: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else fallback


def _matching(pattern: str, preferred: str) -> str:
    """``preferred`` if it matches, else a string built from the pattern, else the first candidate that matches."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return preferred
    if compiled.search(preferred):
        return preferred
    try:
        built = _from_regex(re._parser.parse(pattern))  # the parse re.compile itself uses; private, so guarded
    except Exception:  # any surprise in a private API means: fall back to the candidates
        built = None
    if built is not None and compiled.search(built):
        return built
    return next((c for c in _PATTERN_CANDIDATES if compiled.search(c)), preferred)


# One character of each regex category, and a character class's candidates, tried in order.
_CATEGORY_CHARS = {
    "CATEGORY_DIGIT": "0",
    "CATEGORY_NOT_DIGIT": "a",
    "CATEGORY_WORD": "a",
    "CATEGORY_NOT_WORD": " ",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": "a",
}
_CATEGORY_RES = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
}
_CLASS_CANDIDATES = "a0A_-. @/:"


def _from_regex(parsed: Any) -> str:
    """The shortest string of a parsed regex that takes the first branch and each class's first fitting character."""
    return "".join(_regex_piece(str(op), arg) for op, arg in parsed)


def _regex_piece(op: str, arg: Any) -> str:
    if op == "LITERAL":
        return chr(arg)
    if op == "NOT_LITERAL":
        return "b" if chr(arg) == "a" else "a"
    if op == "ANY":
        return "a"
    if op == "IN":
        return _class_char(arg)
    if op == "CATEGORY":
        return _CATEGORY_CHARS.get(str(arg), "a")
    if op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
        least, _, sub = arg
        return _from_regex(sub) * least
    if op in ("SUBPATTERN", "ATOMIC_GROUP"):
        return _from_regex(arg[-1])
    if op == "BRANCH":
        return _from_regex(arg[1][0])
    return ""  # anchors, lookarounds, back references: nothing to write


def _class_char(items: list[Any]) -> str:
    negate = bool(items) and str(items[0][0]) == "NEGATE"
    members = [(str(op), arg) for op, arg in items if str(op) != "NEGATE"]
    firsts = [chr(arg if op == "LITERAL" else arg[0]) for op, arg in members if op in ("LITERAL", "RANGE")]
    for ch in (*([] if negate else firsts), *_CLASS_CANDIDATES):
        if any(_class_has(op, arg, ch) for op, arg in members) != negate:
            return ch
    return "a"


def _class_has(op: str, arg: Any, ch: str) -> bool:
    if op == "LITERAL":
        return ord(ch) == arg
    if op == "RANGE":
        return arg[0] <= ord(ch) <= arg[1]
    return op == "CATEGORY" and re.fullmatch(_CATEGORY_RES.get(str(arg), "(?!)"), ch) is not None


def _number(schema: Schema, start: float, *, integer: bool) -> float:
    """``start`` moved into the schema's bounds, then up to a multiple of ``multipleOf``."""
    step = 1 if integer else 1e-6
    low, high = _bound(schema, "minimum", "exclusiveMinimum", step, max), _bound(schema, "maximum", "exclusiveMaximum", -step, min)
    value = start if low is None else max(start, low)
    value = value if high is None else min(value, high)
    multiple = schema.get("multipleOf")
    if isinstance(multiple, (int, float)) and not isinstance(multiple, bool) and multiple > 0:
        value = math.ceil(value / multiple) * multiple
        if high is not None and value > high:
            value -= multiple
    return math.ceil(value) if integer else value


def _bound(schema: Schema, inclusive: str, exclusive: str, nudge: float, pick: Callable[..., float]) -> float | None:
    """The tighter of the inclusive bound and the exclusive one moved just inside (draft-04's boolean form too)."""
    found = []
    if _is_number(schema.get(inclusive)):
        value = schema[inclusive]
        found.append(value + nudge if schema.get(exclusive) is True else value)
    if _is_number(schema.get(exclusive)):
        found.append(schema[exclusive] + nudge)
    return pick(found) if found else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_BY_TYPE: dict[str, Callable[[_Instance, Schema, int], Any]] = {
    "object": _Instance.object,
    "array": _Instance.array,
    "string": _Instance.string,
    "integer": _Instance.integer,
    "number": _Instance.number,
    "boolean": lambda self, schema, depth: True,
    "null": lambda self, schema, depth: None,
}
