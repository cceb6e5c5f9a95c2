"""Declaring a routes.yaml field once: the reader that walks the declarations, and the JSON Schema made from them.

A field is a dataclass field whose metadata holds a ``Spec`` (made with
``setting``): its doc, bounds, allowed values and YAML name.  Its type and
default are the dataclass's own.  ``read_fields`` walks a class's fields over
one YAML mapping, converting and checking each by its type, and records every
mistake with its path and a remedy on the ``Reader``; ``object_schema`` walks
the same fields into JSON Schema.  A field whose reading needs more than its
own value (a target's provider, a sink's default path) declares its schema and
is read by its section's code.

This module is a leaf: router.config and router.auth.settings both build on
it, so neither imports the other to reach the reader.  It also holds the two
sections read below router.config (``Limits`` by router.auth, ``Price`` by
the price file), for the same reason.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, dataclass, field
from decimal import Decimal, InvalidOperation
from enum import Enum
from types import MappingProxyType, NoneType, UnionType
from typing import Any

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
INTERPOLATED = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}
MONEY_PATTERN = r"^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$"


class Reader:
    """A cursor over the YAML tree that records problems with their paths instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.issues: list[tuple[str, str]] = []
        self.warnings: list[tuple[str, str]] = []  # accepted, but worth changing (a deprecated field)
        self.env = env

    def fail(self, path: str, message: str) -> None:
        self.issues.append((path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append((path, message))

    def mapping(self, value: Any, path: str, allowed: Collection[str] | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, got {type(value).__name__}")
            return {}
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    # YAML 1.1 reads an unquoted on/off/yes/no key as a boolean.
                    hint = f' (YAML reads an unquoted key as {key}: quote it, like "on":)' if isinstance(key, bool) else ""
                    self.fail(f"{path}.{key}" if path else str(key), f"unknown field; expected one of: {', '.join(allowed)}{hint}")
        return value

    def string(self, value: Any, path: str, *, required: bool = False, default: str | None = None) -> str | None:
        if value is None:
            if required:
                self.fail(path, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.fail(path, f"must be a string, got {type(value).__name__}")
            return default
        return self.interpolate(str(value), path)

    def interpolate(self, text: str, path: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, fallback = match.group(1), match.group(2)
            if name in self.env:
                return self.env[name]
            if fallback is not None:
                return fallback
            self.fail(path, f"environment variable {name} is not set (export it, or write ${{{name}:-default}})")
            return ""

        return _ENV.sub(substitute, text)

    def number(self, value: Any, path: str, default: float, *, minimum: float = 0.0) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be a number, got {type(value).__name__}")
            return default
        if value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value}")
        return float(value)

    def integer(self, value: Any, path: str, default: int | None, *, minimum: int = 0) -> int | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be a whole number, got {value!r}")
            return default
        if value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, value: Any, path: str, default: bool, hint: str = "") -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, got {value!r}{f' ({hint})' if hint else ''}")
            return default
        return value

    def money(self, value: Any, path: str) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.fail(path, f"must be a price in USD per million tokens, got {value!r}")
            return None
        try:
            # str() first: a YAML float 0.15 must price as exactly 0.15.
            amount = Decimal(str(value))
        except InvalidOperation:
            self.fail(path, f"must be a price in USD per million tokens, got {value!r}")
            return None
        if amount < 0 or not amount.is_finite():
            self.fail(path, f"must be a non-negative finite price, got {value!r}")
        return amount


# --------------------------------------------------------------------------
# Declarations.

FieldReader = Callable[[Reader, Any, str], Any]


@dataclass(frozen=True, slots=True)
class Spec:
    doc: str
    key: str | None = None  # the YAML name, when the attribute's differs (retry.on -> retry_on)
    minimum: float | None = 0  # numbers and whole numbers: the reader has always refused negatives
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    noun: str | None = None  # "unknown {noun} 'x'"; the field's name if unset
    lower: bool = False  # the value is lower-cased before it is checked (logging.level: INFO)
    required: bool = False
    hint: str = ""  # appended to "is required" and to a bound's message: why, or in what unit
    read: FieldReader | None = None  # a reader for a value no type alone describes; called only when the key is present
    schema: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None  # the JSON Schema of a field read by custom code


def setting(doc: str, default: Any = MISSING, *, factory: Callable[[], Any] | None = None, **spec: Any) -> Any:
    """A dataclass field declared for routes.yaml: ``default`` is both the attribute's and the file's."""
    metadata = {"spec": Spec(doc, **spec)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Declared:
    name: str  # the attribute
    key: str  # the YAML name
    spec: Spec
    kind: Any  # the type with ``| None`` removed
    optional: bool  # ``| None``: absent stays None
    default: Any  # MISSING when the attribute has none


_DECLARED: dict[type, tuple[Declared, ...]] = {}


def declared(cls: type) -> tuple[Declared, ...]:
    """The declared fields of ``cls``, in order (the order mistakes are reported in)."""
    found = _DECLARED.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        items = []
        for f in dataclasses.fields(cls):
            spec = f.metadata.get("spec")
            if spec is None:
                continue
            kind, optional = hints[f.name], False
            if isinstance(kind, UnionType) or typing.get_origin(kind) is typing.Union:
                args = [a for a in typing.get_args(kind) if a is not NoneType]
                optional, kind = True, args[0] if len(args) == 1 else kind
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            items.append(Declared(f.name, spec.key or f.name, spec, kind, optional, default))
        found = _DECLARED[cls] = tuple(items)
    return found


def keys_of(cls: type, exclude: Collection[str] = ()) -> tuple[str, ...]:
    return tuple(d.key for d in declared(cls) if d.key not in exclude)


def _is_section(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind) and bool(declared(kind))


def read_section(r: Reader, cls: type, raw: Any, path: str) -> Any:
    """``cls`` built from one mapping, every field by its declaration (only for classes with no custom fields)."""
    return cls(**read_fields(r, r.mapping(raw, path, keys_of(cls)), cls, path))


def read_fields(r: Reader, data: Mapping[Any, Any], cls: type, path: str, exclude: Collection[str] = ()) -> dict[str, Any]:
    """Attribute -> value for each declared field of ``cls`` that needs no context; the caller reads the rest.

    ``data`` is the mapping already checked for unknown keys.  A key that is
    absent (or null, for everything but booleans and custom readers) takes the
    field's default.
    """
    values: dict[str, Any] = {}
    for d in declared(cls):
        if d.key in exclude or (d.spec.read is None and d.spec.schema is not None):
            continue
        where = f"{path}.{d.key}" if path else d.key
        fallback = None if d.default is MISSING else d.default
        if d.spec.required and data.get(d.key) is None:
            r.fail(where, f"is required{f' ({d.spec.hint})' if d.spec.hint else ''}")
            values[d.name] = fallback
            continue
        if d.spec.read is not None:
            values[d.name] = d.spec.read(r, data[d.key], where) if d.key in data else fallback
        elif d.kind is bool:
            values[d.name] = r.boolean(data[d.key], where, fallback, d.spec.hint) if d.key in data else fallback
        else:
            values[d.name] = _read_value(r, d, data.get(d.key), where, fallback)
    return values


def _read_value(r: Reader, d: Declared, value: Any, where: str, fallback: Any) -> Any:
    spec = d.spec
    if _is_section(d.kind):
        if value is None and d.optional:
            return None
        return read_section(r, d.kind, value, where)
    if d.kind is str:
        text = r.string(value, where, default=fallback)
        if text == "" and isinstance(fallback, str):  # an empty value has always meant the default
            text = fallback
        if text is not None and spec.lower:
            text = text.lower()
        if text is not None and spec.choices and text not in spec.choices:
            r.fail(where, f"unknown {spec.noun or d.key} {text!r}; expected one of: {', '.join(spec.choices)}")
        return text
    if d.kind is Decimal:
        amount = r.money(value, where)
        return fallback if amount is None else amount
    if d.kind is int:
        number: float | None = r.integer(value, where, fallback, minimum=int(spec.minimum or 0))
    elif d.kind is float:
        number = r.number(value, where, fallback, minimum=float(spec.minimum or 0))
    else:
        raise TypeError(f"{d.name}: no reader for {d.kind!r}; declare read= or schema=")
    if value is not None and number is not None and spec.maximum is not None and number > spec.maximum:
        r.fail(where, f"must be at most {spec.maximum}, got {value}{f' ({spec.hint})' if spec.hint else ''}")
    return number


# --------------------------------------------------------------------------
# JSON Schema, from the same declarations.


def object_schema(cls: type, *, exclude: Collection[str] = (), nullable: bool = True) -> dict[str, Any]:
    """The JSON Schema of a mapping read with ``cls``'s declarations: only its fields, each described."""
    properties = {d.key: field_schema(d) for d in declared(cls) if d.key not in exclude}
    required = [d.key for d in declared(cls) if d.spec.required and d.key not in exclude]
    out: dict[str, Any] = {"type": ["object", "null"] if nullable else "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def field_schema(d: Declared) -> dict[str, Any]:
    spec = d.spec
    own = spec.schema() if callable(spec.schema) else spec.schema
    out: dict[str, Any] = {"description": spec.doc}
    if own is not None:
        out.update(own)
    elif _is_section(d.kind):
        out.update(object_schema(d.kind))
    else:
        out.update(_scalar_schema(d))
    default = _json_default(d.default)
    if default is not None and "default" not in out:
        out["default"] = default
    return out


def _scalar_schema(d: Declared) -> dict[str, Any]:
    spec = d.spec
    # Null means "the default" for every scalar but a boolean, as the reader treats it.
    if d.kind is bool:
        return {"type": "boolean"}
    if d.kind is str:
        if not spec.choices:
            return {"type": ["string", "number", "null"]}  # a number is read as its text
        branches: list[dict[str, Any]] = [{"enum": list(spec.choices)}]
        if spec.lower:
            branches.append({"type": "string", "pattern": "^(" + "|".join(_any_case(c) for c in spec.choices) + ")$"})
        return {"anyOf": [*branches, INTERPOLATED, {"type": "null"}]}
    if d.kind is Decimal:
        return {"type": ["number", "string", "null"], "minimum": 0, "pattern": MONEY_PATTERN}
    out: dict[str, Any] = {"type": ["integer" if d.kind is int else "number", "null"]}
    if spec.minimum is not None:
        out["minimum"] = spec.minimum
    if spec.maximum is not None:
        out["maximum"] = spec.maximum
    return out


def _any_case(text: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in text)


def _json_default(value: Any) -> Any:
    if value is MISSING or value is None or dataclasses.is_dataclass(value):
        return None
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (frozenset, set)):
        return sorted(_json_default(v) for v in value)
    if isinstance(value, tuple):
        return [_json_default(v) for v in value]
    if isinstance(value, (Mapping, MappingProxyType)):
        return {str(k): _json_default(v) for k, v in value.items()} or None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    return None


# --------------------------------------------------------------------------
# The sections read below router.config.


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = setting("requests per minute", None, minimum=1)
    tpm: int | None = setting("tokens per minute (prompt estimate reserved, settled to real usage)", None, minimum=1)
    concurrency: int | None = setting("requests in flight at once", None, minimum=1)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens.  ``version`` is stored on every usage record priced with it."""

    input: Decimal = setting("USD per million prompt tokens", Decimal(0), required=True, hint="USD per million tokens")
    output: Decimal = setting("USD per million completion tokens", Decimal(0), required=True, hint="USD per million tokens")
    cached_input: Decimal | None = setting("USD per million prompt tokens read from the provider's cache", None)
    cache_write: Decimal | None = setting("USD per million prompt tokens written to the provider's cache", None)
    reasoning: Decimal | None = setting("USD per million reasoning tokens, when they are priced apart from output", None)
    version: str = setting("stored on every usage record priced with this price, so a bill says which price applied", "unversioned")
