"""routes.yaml: the schema, its validation, and the immutable ``RouteTable`` it compiles into.

    server:      listen address, body limit, deadlines, shutdown grace
    logging:     level, format (json or text), whether bodies may be logged
    state:       where routing state lives (memory, or redis shared by replicas)
    providers:   name -> kind, base_url, api_key (${ENV}), timeouts, headers, limits, health, options
    models:      alias -> targets (provider + upstream model + routing facts),
                 fallbacks, strategy, retry policy, operations it serves
    auth:        virtual keys, teams, budgets (schema in router/auth/settings.py)
    ledger:      where usage records go (sinks, journal), price file, attribution

Every mistake is collected, not only the first, and each names the file and
the path inside it (``models.chat.targets[1].provider``) with what to do.  A
table is never changed after it is built; a reload builds a new one and
swaps it whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from providers import ADAPTERS
from router.accounting.price_file import PriceFileError, load_litellm_prices
from router.auth.settings import AuthSettings, check_alias_names, parse_auth
from router.auth.settings import json_schema as auth_schema
from router.operations import Operation
from router.schema import Limits, Price, Reader, keys_of, object_schema, read_fields, read_section, setting
from router.secrets import Secret
from router.yaml_loader import DuplicateKeyError, YAMLError, load_yaml

__all__ = ["ConfigError", "Limits", "Price", "RouteTable", "json_schema", "load_table", "parse_table"]

STRATEGIES = ("priority", "weighted", "cost", "latency", "least-busy", "default")
SCHEMA_ID = "https://llm-router.dev/schemas/routes.schema.json"


class ConfigError(Exception):
    def __init__(self, source: str, issues: list[tuple[str, str]]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("\n".join(f"{source}: {path}: {message}" if path else f"{source}: {message}" for path, message in issues))


@dataclass(frozen=True, slots=True)
class Timeouts:
    """One meaning each, in seconds (the pipeline applies them; README "When things fail")."""

    connect: float = setting("seconds to get a connection to the upstream (opening it, or a free pooled one)", 5.0, minimum=0.001)
    first_token: float = setting(
        "seconds from sending to a stream's first event, or to a whole answer's headers; past it the next candidate is tried",
        60.0,
        minimum=0.001,
    )
    idle: float = setting("longest silence, in seconds, between two reads of a stream once it began; past it the stream is broken", 60.0, minimum=0.001)
    total: float = setting("seconds one upstream call may take in all, a whole stream included", 600.0, minimum=0.001)
    read: float | None = setting("deprecated: sets first_token and idle where they are not set (check warns)", None, minimum=0.001)


def _timeouts(r: Reader, raw: Any, path: str, base: Timeouts) -> Timeouts:
    """A provider's timeouts over the defaults, or a target's over its provider's: only what is written changes."""
    data = r.mapping(raw, path, keys_of(Timeouts))
    given = {k: v for k, v in read_fields(r, data, Timeouts, path).items() if data.get(k) is not None}
    read = given.pop("read", None)
    if read is not None:
        r.warn(f"{path}.read", "is deprecated: it meant both the first-token deadline and the stall detector; write first_token and idle")
        given = {"first_token": read, "idle": read, **given}
    return replace(base, **given)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When a target's circuit opens and how long it stays open (router/routing/health.py applies it)."""

    failure_threshold: int = setting("consecutive failures that open the circuit", 5, minimum=1)
    failure_rate: float = setting(
        "or this share of failures (0.01 to 1) over min_requests calls in the window", 0.5, minimum=0.01, maximum=1, hint="a share of calls"
    )
    min_requests: int = setting("calls in the window before failure_rate applies", 10, minimum=1)
    window: float = setting("seconds of calls failure_rate looks at", 30.0, minimum=1)
    cooldown: float = setting("seconds the circuit stays open, then one half-open probe at a time", 30.0, minimum=0.01)
    probe_timeout: float = setting("seconds after which a probe that never reported frees its slot", 30.0, minimum=0.01)
    check_interval: float | None = setting("seconds between active checks (a 1-token request); unset: none", None, minimum=0.05)


def _secret(r: Reader, value: Any, path: str) -> Secret | None:
    text = r.string(value, path)
    return Secret(text) if text else None


def _headers(r: Reader, value: Any, path: str) -> Mapping[str, str]:
    return MappingProxyType({str(k): r.string(v, f"{path}.{k}") or "" for k, v in r.mapping(value, path).items()})


def _options(r: Reader, value: Any, path: str) -> Mapping[str, Any]:
    return MappingProxyType(dict(r.mapping(value, path)))


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    kind: str = setting("which adapter speaks to it", required=True, choices=tuple(sorted(ADAPTERS)), noun="provider kind")
    base_url: str = setting(
        "the API's root URL, http:// or https:// (mock needs none)", schema={"type": ["string", "null"], "pattern": r"^(https?://|\$\{)|^$"}
    )
    api_key: Secret | None = setting("the provider key; write ${ENV_VAR}, never the key itself", None, read=_secret, schema={"type": ["string", "null"]})
    timeouts: Timeouts = setting(
        "connect, first_token, idle and total, in seconds (a target may override any)", factory=Timeouts, schema=lambda: object_schema(Timeouts)
    )
    headers: Mapping[str, str] = setting(
        "extra headers sent upstream",
        factory=lambda: MappingProxyType({}),
        read=_headers,
        schema={"type": ["object", "null"], "additionalProperties": {"type": ["string", "number"]}},
    )
    options: Mapping[str, Any] = setting(
        "adapter options (mock: latency_ms, chunk_delay_ms, completion_tokens, fail_status, fail_every; azure: api_version)",
        factory=lambda: MappingProxyType({}),
        read=_options,
        schema={"type": ["object", "null"]},
    )
    limits: Limits | None = setting("rpm, tpm and concurrency for the whole provider account", None)
    health: HealthPolicy = setting("when a target's circuit opens and for how long", HealthPolicy())


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider = setting("a provider declared under providers", required=True, schema={"type": "string"})
    # wildcard aliases: "" passes the caller's name on, "*" stands for the part after the prefix
    model: str = setting(
        "the upstream model name; in a wildcard alias omit it (the requested name goes on) or use * for the part after the prefix",
        schema={"type": ["string", "number"]},
    )
    weight: float = setting("share of traffic under the weighted strategy", 1.0)
    priority: int = setting("lower is tried first under the priority strategy", 0)
    price: Price | None = setting("USD per million tokens; without it, the ledger's prices_file is looked up", None)
    limits: Limits | None = setting("rpm, tpm and concurrency for this target", None)
    timeouts: Timeouts = setting(
        "this target's own connect, first_token, idle or total (the rest are its provider's)", factory=Timeouts, schema=lambda: object_schema(Timeouts)
    )

    @property
    def key(self) -> str:
        """Identity of the upstream for shared state: same provider account and model, same state."""
        return f"{self.provider.name}/{self.model}"

    def for_model(self, requested: str, prefix: str) -> Target:
        if not self.model:  # model omitted: the caller's full name goes on, e.g. "forii/deepseek-v3"
            model = requested
        elif "*" in self.model:  # "*" is the part after the alias's prefix
            model = self.model.replace("*", requested[len(prefix) :])
        else:
            return self
        return Target(self.provider, model, self.weight, self.priority, self.price, self.limits, self.timeouts)


_RETRY_ON = ("connect", "timeout", "429", "5xx")


def _retry_on(r: Reader, value: Any, path: str) -> frozenset[str]:
    # A status code may be written as a number or a string: [connect, 429] and [connect, "429"] are one list.
    if not isinstance(value, list) or any(isinstance(kind, bool) or str(kind) not in _RETRY_ON for kind in value):
        r.fail(path, f"must be a list of: {', '.join(_RETRY_ON)} (a caller's 4xx is never retried)")
        return frozenset(_RETRY_ON)
    return frozenset(str(kind) for kind in value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = setting("tries per target before moving on", 1, minimum=1)
    backoff_initial: float = setting("seconds before the first retry; doubles each time", 0.05)
    backoff_max: float = setting("longest wait between two retries, in seconds", 2.0)
    retry_after_cap: float = setting("longest upstream Retry-After honoured, in seconds", 10.0)
    deadline: float = setting("seconds a client may wait in all, every attempt included", 120.0, minimum=0.01)
    retry_on: frozenset[str] = setting(
        "failures worth the same target again (a caller's 4xx never is); 429 may be written as a number or a string",
        frozenset(_RETRY_ON),
        key="on",
        read=_retry_on,
        schema={"type": "array", "items": {"enum": [*_RETRY_ON, 429]}},
    )
    same_target: bool = setting(
        "true: a retryable failure retries the same target; false: it moves straight on to the next",
        True,
        hint="true retries the same target, false moves on to the next",
    )


def _operations(r: Reader, value: Any, path: str) -> frozenset[Operation]:
    if not isinstance(value, list) or not value:
        r.fail(path, f"must be a non-empty list of: {', '.join(o.value for o in Operation)}")
        return frozenset()
    operations: set[Operation] = set()
    for i, op in enumerate(value):
        try:
            operations.add(Operation(op))
        except ValueError:
            r.fail(f"{path}[{i}]", f"unknown operation {op!r}; expected one of: {', '.join(o.value for o in Operation)}")
    return frozenset(operations)


def _fallbacks(r: Reader, value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        r.fail(path, "must be a list of alias names")
        return ()
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Alias:
    name: str
    targets: tuple[Target, ...] = setting(
        "the upstreams serving this alias, tried in order (strategies reorder them)",
        schema=lambda: {"type": "array", "minItems": 1, "items": object_schema(Target, nullable=False)},
    )
    fallbacks: tuple[str, ...] = setting("aliases tried after this one's targets", (), read=_fallbacks, schema={"type": "array", "items": {"type": "string"}})
    strategy: str = setting("how targets are ordered for each request", "default", choices=STRATEGIES, noun="strategy")
    retry: RetryPolicy = setting("retries per target and the client's whole deadline", RetryPolicy())
    operations: frozenset[Operation] = setting(
        "what the alias serves; refused at load if a target cannot",
        frozenset({Operation.CHAT}),
        read=_operations,
        schema={"type": "array", "minItems": 1, "items": {"enum": [op.value for op in Operation]}},
    )
    description: str = setting("shown in /v1/models", "")
    stream_recovery: str = setting(
        "off: a stream broken after its first byte ends with an SSE error event; continue: the next candidate continues it in the same stream",
        "off",
        choices=("off", "continue"),
        noun="stream_recovery",
    )

    @property
    def wildcard_prefix(self) -> str | None:
        return self.name[:-1] if self.name.endswith("*") else None


def _strings(r: Reader, value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        r.fail(path, "must be a list of non-empty strings")
        return ()
    return tuple(value)


_STRINGS_SCHEMA = {"type": "array", "items": {"type": "string", "minLength": 1}}


@dataclass(frozen=True, slots=True)
class CorsSettings:
    """Browsers calling the gateway (router/cors.py); off until an origin is allowed."""

    allow_origins: tuple[str, ...] = setting(
        "origins allowed to call from a browser, e.g. https://app.example.com; * for any; empty: CORS off", (), read=_strings, schema=_STRINGS_SCHEMA
    )
    allow_headers: tuple[str, ...] = setting(
        "request headers a browser may send; * allows whatever the preflight asks for (Authorization included)", ("*",), read=_strings, schema=_STRINGS_SCHEMA
    )
    max_age: int = setting("seconds a browser may cache a preflight answer", 600, minimum=0, maximum=86400)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = setting("listen address (ROUTER_HOST overrides)", "127.0.0.1")
    port: int = setting("listen port; 0 picks a free one (ROUTER_PORT overrides)", 8080)
    max_body_bytes: int = setting("largest request body; larger ones get a 413", 4 * 1024 * 1024, minimum=1024)
    shutdown_grace: float = setting("seconds requests in flight may take to finish after SIGTERM", 30.0)
    max_in_flight: int = setting("client requests one process handles at once; beyond it, 503 overloaded with Retry-After", 1024, minimum=1, maximum=1_000_000)
    max_response_bytes: int = setting(
        "largest whole (non-streamed) upstream answer read; a larger one fails that attempt (502 response_too_large); streams are not capped",
        8 * 1024 * 1024,
        minimum=1024,
    )
    body_timeout: float = setting("seconds a client may take to send its request body; a slower one gets 408 and is closed", 30.0, minimum=0.01)
    cors: CorsSettings = setting("cross-origin calls from browsers (off by default)", CorsSettings())


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """How the gateway logs (router/logs.py).  ROUTER_LOG_LEVEL / ROUTER_LOG_FORMAT override these."""

    level: str = setting("least severe level logged (ROUTER_LOG_LEVEL overrides)", "info", choices=LOG_LEVELS, lower=True, noun="level")
    format: str = setting("json for collectors, text for people (ROUTER_LOG_FORMAT overrides)", "text", choices=LOG_FORMATS, lower=True, noun="format")
    bodies: bool = setting("log the client's prompt on each request line: off unless someone opts in", False)


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Where shared state lives: ``memory`` (one instance) or ``redis`` (any number of replicas)."""

    backend: str = setting("memory (one instance) or redis (shared by every replica)", "memory", choices=("memory", "redis"), noun="backend")
    url: str = setting("the Redis URL: redis://, rediss:// or unix://", "redis://127.0.0.1:6379/0")
    prefix: str = setting("prefix of every Redis key, so deployments can share one Redis", "llmr")
    # Short, so Redis trouble never stalls a request for long; not so short that
    # event-loop lag under load (64 busy connections on 2 cores) reads as an
    # outage and flips every replica to local state (seen at 0.05 in the benchmark).
    timeout: float = setting("seconds one state call may take; a slower call fails that call only (the prober decides when Redis is out)", 0.25, minimum=0.001)
    pool_size: int = setting("connections in the Redis pool", 32, minimum=1, maximum=10000)
    pool_timeout: float = setting("seconds a state call may wait for a free pooled connection", 2.0, minimum=0.001)
    outage_probes: int = setting("consecutive failed probes before the store is marked degraded", 3, minimum=1, maximum=100)


SINK_KINDS = ("sqlite", "redis", "jsonl", "postgres")
PG_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """One place usage records are written.  ``name`` keys its journal file and metrics."""

    kind: str = setting(
        "sqlite (embedded), redis (shared by replicas), postgres (shared, queried with SQL) or jsonl (for log shippers)",
        required=True,
        choices=SINK_KINDS,
        noun="sink kind",
    )
    name: str = setting("names its journal file and metrics; defaults to the kind", schema={"type": ["string", "number", "null"]})
    path: str = setting("sqlite, jsonl: the file, relative to routes.yaml (usage.db, usage.jsonl)", "", schema={"type": ["string", "null"]})
    url: str = setting("redis: the redis:// URL", "")
    prefix: str = setting("redis: keys are <prefix>:usage:...", "llmr")
    maxlen: int = setting("redis: the stream is trimmed to about this many records", 1_000_000, minimum=1)
    max_age_days: int = setting("redis: stream records older than this are trimmed", 35, minimum=1)
    rollup_days: int = setting("redis: per-day roll-up hashes live this long", 400, minimum=1)
    dedupe_days: int = setting("redis: a replay within this many days of the first write never counts twice", 7, minimum=1)
    dsn: Secret | None = setting(
        "postgres: the postgresql:// DSN; write ${ENV_VAR} for it (it holds the password), never the DSN itself",
        None,
        read=_secret,
        schema={"type": ["string", "null"]},
    )
    db_schema: str = setting("postgres: the PostgreSQL schema holding the ledger's tables (created if missing)", "public", schema={"type": ["string", "null"]})
    pool_size: int = setting("postgres: connections in the sink's pool (writes, replays, /v1/usage queries)", 4, minimum=1, maximum=100)
    query_timeout: float = setting("postgres: seconds a /v1/usage or llm-router usage query may run", 30.0, minimum=0.001)
    timeout: float = setting("seconds a write may wait (sqlite busy timeout, redis socket timeout, postgres connect and statement timeout)", 1.0, minimum=0.001)


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    sinks: tuple[SinkSettings, ...] = setting(
        "where usage records go",
        schema=lambda: {"type": "array", "minItems": 1, "items": object_schema(SinkSettings, nullable=False), "default": [{"kind": "sqlite"}]},
    )
    journal_dir: str = setting("where records wait while a sink is down, relative to routes.yaml", "ledger-journal")
    batch_size: int = setting("records written per batch", 500, minimum=1)
    flush_interval: float = setting("seconds records may wait in the buffer", 0.25, minimum=0.001)
    retry_interval: float = setting("seconds between tries of a sink that is down", 1.0, minimum=0.001)
    team_from_metadata: str | None = setting("metadata key naming the team when the client key has none", None)
    max_label_values: int = setting("distinct values a metric label may take before 'other'", 200, minimum=1)
    expose_cost: bool = setting(
        "show callers what each request cost (usage.cost, usage.cost_details, x-router-cost-usd); false for a gateway that must not show prices",
        True,
    )
    prices_file: str | None = setting(
        "LiteLLM's model_prices_and_context_window.json, relative to routes.yaml, for targets without price", None, schema={"type": ["string", "null"]}
    )


def _version(r: Reader, value: Any, path: str) -> int:
    if value != 1:
        r.fail(path, f"unsupported version {value!r}; this gateway reads version 1")
    return 1


@dataclass(frozen=True, slots=True)
class _Document:
    """routes.yaml's top level: a declaration only (the file compiles into a RouteTable)."""

    version: int = setting("the file format; this gateway reads version 1", 1, read=_version, schema={"const": 1})
    server: ServerSettings = setting("listen address, body limit, shutdown grace", ServerSettings())
    logging: LoggingSettings = setting("level, format (json or text), whether bodies may be logged", LoggingSettings())
    state: StateSettings = setting("where routing state lives: memory, or redis shared by replicas", StateSettings())
    auth: AuthSettings = setting("client keys, teams, budgets", factory=AuthSettings, schema=auth_schema)
    providers: Mapping[str, Provider] = setting(
        "name -> an upstream API account",
        factory=dict,
        schema=lambda: {"type": "object", "minProperties": 1, "additionalProperties": object_schema(Provider, exclude=("name",), nullable=False)},
    )
    models: Mapping[str, Alias] = setting(
        "alias (what clients put in model) -> its targets; a name ending in * is a wildcard",
        factory=dict,
        schema=lambda: {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": r"^[^*]*\*?$"},
            "additionalProperties": object_schema(Alias, exclude=("name",), nullable=False),
        },
    )
    ledger: LedgerSettings | None = setting("where usage records go (sinks, journal), the price file; omit it for no ledger", None)


@dataclass(frozen=True)
class RouteTable:
    source: str
    server: ServerSettings
    providers: Mapping[str, Provider]
    aliases: Mapping[str, Alias]
    wildcards: tuple[Alias, ...] = field(default=())
    state: StateSettings = field(default_factory=StateSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    ledger: LedgerSettings | None = None  # None: no ledger (metrics still count)
    warnings: tuple[tuple[str, str], ...] = ()  # (path, message): accepted, but worth changing; `check` prints them

    def lookup(self, name: str) -> Alias | None:
        alias = self.aliases.get(name)
        if alias is not None:
            return alias
        for wildcard in self.wildcards:  # longest prefix first
            prefix = wildcard.wildcard_prefix
            if prefix is not None and name.startswith(prefix) and len(name) > len(prefix):
                return wildcard
        return None

    @property
    def expose_cost(self) -> bool:
        """Whether answers carry their cost (ledger.expose_cost; on when there is no ledger section)."""
        return self.ledger is None or self.ledger.expose_cost

    def secrets(self) -> list[Secret]:
        return [p.api_key for p in self.providers.values() if p.api_key] + self.auth.secrets()


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of routes.yaml, made from the declarations above."""
    body = object_schema(_Document, nullable=False)
    body["required"] = ["providers", "models"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "llm-router routes.yaml",
        "description": "The gateway's route table. String values may use ${ENV} or ${ENV:-default}.",
        **body,
    }


# --------------------------------------------------------------------------
# Reading: each section by its declarations, plus what only its code knows.


def _file_price(prices: Mapping[str, Price] | None, model: str) -> Price | None:
    if not prices:
        return None
    # LiteLLM keys models both bare ("gpt-4o") and with a host prefix ("openai/gpt-4o").
    return prices.get(model) or prices.get(model.rsplit("/", 1)[-1])


def _resolve(path: str, source: str) -> str:
    """Relative paths in routes.yaml are relative to the file itself, not the working directory."""
    if os.path.isabs(path):
        return path
    base = Path(source).parent if Path(source).is_file() else Path.cwd()
    return str(base / path)


def _price(r: Reader, raw: Any, path: str) -> Price | None:
    if raw is None:
        return None
    data = r.mapping(raw, path, keys_of(Price))
    if not data:  # price: {} has always meant free
        return Price()
    return Price(**read_fields(r, data, Price, path))


def _sink(r: Reader, raw: Any, path: str, source: str, taken: list[SinkSettings]) -> SinkSettings:
    d = r.mapping(raw, path, keys_of(SinkSettings))
    values = read_fields(r, d, SinkSettings, path)
    kind = values["kind"] or ""
    name = r.string(d.get("name"), f"{path}.name", default=kind) or kind
    if any(s.name == name for s in taken):
        r.fail(f"{path}.name", f"two sinks are named {name!r}; give each its own name (it names its journal file)")
    sink_path = r.string(d.get("path"), f"{path}.path", default={"sqlite": "usage.db", "jsonl": "usage.jsonl"}.get(kind, "")) or ""
    if kind == "redis" and not values["url"].startswith(("redis://", "rediss://", "unix://")):
        r.fail(f"{path}.url", f"a redis sink needs a redis:// URL, got {values['url']!r}")
    if kind == "postgres":
        dsn = values["dsn"]
        # Never echo the DSN: it holds the password.
        if dsn is None or not dsn.reveal().startswith(("postgresql://", "postgres://")):
            r.fail(f"{path}.dsn", "a postgres sink needs a postgresql://user:password@host:port/db DSN, e.g. dsn: ${LEDGER_DSN}")
    db_schema = r.string(d.get("db_schema"), f"{path}.db_schema", default="public") or "public"
    if not re.match(PG_IDENTIFIER, db_schema):
        r.fail(f"{path}.db_schema", f"must be a plain identifier (letters, digits, _), got {db_schema!r}")
    return SinkSettings(**{**values, "kind": kind, "name": name, "db_schema": db_schema, "path": _resolve(sink_path, source) if sink_path else ""})


def _ledger(r: Reader, raw: Any, source: str, present: bool) -> tuple[LedgerSettings | None, dict[str, Price]]:
    if not present:
        return None, {}
    data = r.mapping(raw, "ledger", keys_of(LedgerSettings))
    raw_sinks = data.get("sinks", [{"kind": "sqlite"}])
    if not isinstance(raw_sinks, list) or not raw_sinks:
        r.fail("ledger.sinks", "must be a non-empty list of sinks, e.g. [{kind: sqlite, path: usage.db}]")
        raw_sinks = []
    sinks: list[SinkSettings] = []
    for i, raw_sink in enumerate(raw_sinks):
        sinks.append(_sink(r, raw_sink, f"ledger.sinks[{i}]", source, sinks))
    values = read_fields(r, data, LedgerSettings, "ledger")
    prices: dict[str, Price] = {}
    prices_file = r.string(data.get("prices_file"), "ledger.prices_file")
    if prices_file:
        prices_file = _resolve(prices_file, source)
        try:
            prices = load_litellm_prices(prices_file)
        except PriceFileError as exc:
            r.fail("ledger.prices_file", str(exc))
    values.update(sinks=tuple(sinks), journal_dir=_resolve(values["journal_dir"], source), team_from_metadata=values["team_from_metadata"] or None)
    return LedgerSettings(**values, prices_file=prices_file or None), prices


def _provider(r: Reader, name: str, raw: Any) -> Provider | None:
    path = f"providers.{name}"
    data = r.mapping(raw, path, keys_of(Provider))
    values = read_fields(r, data, Provider, path)
    adapter = ADAPTERS.get(values["kind"] or "")
    if adapter is None:
        return None
    try:
        adapter.configured(values["options"])  # an option the adapter cannot use is refused here, not at the first call
    except ValueError as exc:
        r.fail(f"{path}.options", str(exc))
    base_url = r.string(data.get("base_url"), f"{path}.base_url", default=adapter.default_base_url)
    if not base_url:
        r.fail(f"{path}.base_url", "is required for this kind")
        base_url = ""
    elif values["kind"] != "mock" and not base_url.startswith(("http://", "https://")):
        r.fail(f"{path}.base_url", f"must start with http:// or https://, got {base_url!r}")
    timeouts = _timeouts(r, data.get("timeouts"), f"{path}.timeouts", Timeouts())
    return Provider(name=name, base_url=base_url.rstrip("/"), **values, timeouts=timeouts)


def _target(r: Reader, raw: Any, path: str, alias: Alias, providers: Mapping[str, Provider], file_prices: Mapping[str, Price] | None) -> Target | None:
    t = r.mapping(raw, path, keys_of(Target))
    values = read_fields(r, t, Target, path)
    provider_name = r.string(t.get("provider"), f"{path}.provider", required=True)
    provider = providers.get(provider_name) if provider_name else None
    if provider_name and provider is None:
        r.fail(f"{path}.provider", f"unknown provider {provider_name!r}; declared providers: {', '.join(sorted(providers)) or 'none'}")
    model = r.string(t.get("model"), f"{path}.model", required=alias.wildcard_prefix is None, default="")
    if provider is None or model is None:
        return None
    served = ADAPTERS[provider.kind].capabilities.operations
    for op in sorted(alias.operations - served):
        r.fail(path, f"provider {provider.name!r} (kind {provider.kind}) cannot serve {op.value}; it serves {', '.join(sorted(o.value for o in served))}")
    price = _price(r, t.get("price"), f"{path}.price") or _file_price(file_prices, model)
    timeouts = _timeouts(r, t.get("timeouts"), f"{path}.timeouts", provider.timeouts)
    return Target(**{**values, "provider": provider, "model": model, "price": price, "timeouts": timeouts})


def _alias(r: Reader, name: str, raw: Any, providers: Mapping[str, Provider], file_prices: Mapping[str, Price] | None = None) -> Alias | None:
    path = f"models.{name}"
    data = r.mapping(raw, path, keys_of(Alias))
    if "*" in name[:-1]:
        r.fail(path, "a wildcard alias may only end in '*', like 'forii/*'")
    # Targets are checked against the alias's operations: read the alias first, then them.
    alias = Alias(name=name, targets=(), **read_fields(r, data, Alias, path))
    raw_targets = data.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        r.fail(f"{path}.targets", "must be a non-empty list of {provider, model}")
        raw_targets = []
    targets = [_target(r, raw_target, f"{path}.targets[{i}]", alias, providers, file_prices) for i, raw_target in enumerate(raw_targets)]
    kept = tuple(t for t in targets if t is not None)
    if alias.stream_recovery == "continue":
        _check_recovery(r, alias, kept, path)
    return replace(alias, targets=kept) if kept else None


def _check_recovery(r: Reader, alias: Alias, targets: tuple[Target, ...], path: str) -> None:
    """stream_recovery: continue needs another candidate to continue a broken stream with."""
    if len(targets) < 2 and not alias.fallbacks:
        r.fail(f"{path}.stream_recovery", "continue needs a second target or a fallback alias to continue a broken stream with")


def parse_table(document: Any, source: str = "<routes>", env: Mapping[str, str] | None = None) -> RouteTable:
    r = Reader(os.environ if env is None else env)
    root = r.mapping(document, "", keys_of(_Document))
    if document is None or not root:
        raise ConfigError(source, [("", "the file is empty; it needs at least 'providers' and 'models'")])
    read_fields(r, root, _Document, "", exclude=("server", "logging", "state", "ledger"))  # version
    server = read_section(r, ServerSettings, root.get("server"), "server")
    logging_settings = read_section(r, LoggingSettings, root.get("logging"), "logging")
    state = read_section(r, StateSettings, root.get("state"), "state")
    if state.backend == "redis" and not state.url.startswith(("redis://", "rediss://", "unix://")):
        r.fail("state.url", f"must be a redis:// URL, got {state.url!r}")
    auth = parse_auth(r, root.get("auth"))
    providers: dict[str, Provider] = {}
    raw_providers = r.mapping(root.get("providers"), "providers")
    if not raw_providers:
        r.fail("providers", "declare at least one provider (the built-in one is kind: mock)")
    for name, raw in raw_providers.items():
        provider = _provider(r, str(name), raw)
        if provider is not None:
            providers[str(name)] = provider
    ledger, file_prices = _ledger(r, root.get("ledger"), source, "ledger" in root)
    aliases: dict[str, Alias] = {}
    raw_models = r.mapping(root.get("models"), "models")
    if not raw_models:
        r.fail("models", "declare at least one model alias")
    for name, raw in raw_models.items():
        alias = _alias(r, str(name), raw, providers, file_prices)
        if alias is not None:
            aliases[str(name)] = alias
    for alias in aliases.values():
        for i, fallback in enumerate(alias.fallbacks):
            if fallback not in raw_models:
                r.fail(f"models.{alias.name}.fallbacks[{i}]", f"unknown alias {fallback!r}")
            elif fallback == alias.name:
                r.fail(f"models.{alias.name}.fallbacks[{i}]", "an alias cannot fall back to itself")
    check_alias_names(r, auth, [str(name) for name in raw_models])
    if r.issues:
        raise ConfigError(source, r.issues)
    exact = {name: a for name, a in aliases.items() if a.wildcard_prefix is None}
    wildcards = tuple(sorted((a for a in aliases.values() if a.wildcard_prefix is not None), key=lambda a: -len(a.name)))
    return RouteTable(
        source=source,
        server=server,
        providers=MappingProxyType(providers),
        aliases=MappingProxyType(exact),
        wildcards=wildcards,
        state=state,
        logging=logging_settings,
        auth=auth,
        ledger=ledger,
        warnings=tuple(r.warnings),
    )


def load_table(path: str | Path, env: Mapping[str, str] | None = None) -> RouteTable:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from exc
    try:
        document = load_yaml(text)
    except DuplicateKeyError as exc:
        raise ConfigError(source, [(exc.path, exc.message)]) from exc
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(source, [("", f"{where}not valid YAML: {getattr(exc, 'problem', None) or exc}")]) from exc
    return parse_table(document, source, env)
