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
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from providers import ADAPTERS
from router.operations import Operation
from router.secrets import Secret

if TYPE_CHECKING:
    from router.auth.settings import AuthSettings

STRATEGIES = ("priority", "weighted", "cost", "latency", "least-busy", "default")


class ConfigError(Exception):
    def __init__(self, source: str, issues: list[tuple[str, str]]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("\n".join(f"{source}: {path}: {message}" if path else f"{source}: {message}" for path, message in issues))


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 60.0  # longest silence between two bytes of an answer
    total: float = 300.0  # whole non-streamed call


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens.  ``version`` is stored on every usage record priced with it."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    version: str = "unversioned"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When a target's circuit opens and how long it stays open (router/routing/health.py applies it)."""

    failure_threshold: int = 5  # consecutive failures
    failure_rate: float = 0.5  # or this share of failures ...
    min_requests: int = 10  # ... over at least this many calls ...
    window: float = 30.0  # ... in the last this many seconds
    cooldown: float = 30.0  # open this long, then one half-open probe at a time
    probe_timeout: float = 30.0  # a probe that never reports frees the slot after this
    check_interval: float | None = None  # seconds between active checks (a 1-token request); None: none


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    kind: str
    base_url: str
    api_key: Secret | None
    timeouts: Timeouts
    headers: Mapping[str, str]
    options: Mapping[str, Any]
    limits: Limits | None = None
    health: HealthPolicy = HealthPolicy()


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    model: str  # wildcard aliases: "" passes the caller's name on, "*" stands for the part after the prefix
    weight: float = 1.0
    priority: int = 0
    price: Price | None = None
    limits: Limits | None = None

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
        return Target(self.provider, model, self.weight, self.priority, self.price, self.limits)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 1  # tries per target before moving on
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    retry_after_cap: float = 10.0
    deadline: float = 120.0  # seconds a client may wait in all, every attempt included
    retry_on: frozenset[str] = frozenset({"connect", "timeout", "429", "5xx"})  # failures worth the same target again
    same_target: bool = True  # False: a retryable failure moves straight on to the next target


@dataclass(frozen=True, slots=True)
class Alias:
    name: str
    targets: tuple[Target, ...]
    fallbacks: tuple[str, ...] = ()
    strategy: str = "default"
    retry: RetryPolicy = RetryPolicy()
    operations: frozenset[Operation] = frozenset({Operation.CHAT})
    description: str = ""

    @property
    def wildcard_prefix(self) -> str | None:
        return self.name[:-1] if self.name.endswith("*") else None


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4 * 1024 * 1024
    shutdown_grace: float = 30.0  # seconds requests in flight may take to finish after SIGTERM
    # Client requests one process handles at once; beyond it, 503 overloaded with Retry-After at once.
    # High enough for 256 keep-alive clients and their bursts; low enough that a saturated
    # process answers honestly instead of letting timeouts pile up into a fake outage.
    max_in_flight: int = 1024


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """How the gateway logs (router/logs.py).  ROUTER_LOG_LEVEL / ROUTER_LOG_FORMAT override these."""

    level: str = "info"
    format: str = "text"
    bodies: bool = False  # log the client's prompt on each request line: off unless someone opts in


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Where shared state lives: ``memory`` (one instance) or ``redis`` (any number of replicas)."""

    backend: str = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "llmr"
    # Seconds.  Short, so Redis trouble never stalls a request for long; not so short
    # that event-loop lag under load (64 busy connections on 2 cores) reads as an
    # outage and flips every replica to local state (seen at 0.05 in the benchmark).
    timeout: float = 0.25
    # Connections to Redis; exhaustion waits up to pool_timeout seconds, never reads as an outage.
    # One pipeline per loop turn carries every call of that turn, so a few connections do (bench: docs/state.md).
    pool_size: int = 32
    pool_timeout: float = 2.0
    outage_probes: int = 3  # consecutive failed PINGs (own connection) before the store calls Redis out


SINK_KINDS = ("sqlite", "redis", "jsonl")


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """One place usage records are written.  ``name`` keys its journal file and metrics."""

    kind: str
    name: str
    path: str = ""  # sqlite, jsonl
    url: str = ""  # redis
    prefix: str = "llmr"  # redis keys: <prefix>:usage:...
    maxlen: int = 1_000_000  # redis: the stream is trimmed to about this many records
    max_age_days: int = 35  # redis: stream records older than this are trimmed
    rollup_days: int = 400  # redis: per-day roll-up hashes live this long
    dedupe_days: int = 7  # redis: a replay within this many days of the first write never counts twice
    timeout: float = 1.0  # seconds a write may wait (sqlite busy timeout, redis socket timeout)


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    sinks: tuple[SinkSettings, ...]
    journal_dir: str
    batch_size: int = 500
    flush_interval: float = 0.25  # seconds records may wait in the buffer
    retry_interval: float = 1.0  # seconds between tries of a sink that is down
    team_from_metadata: str | None = None  # metadata key naming the team when the client key has none
    max_label_values: int = 200  # distinct values a metric label may take before "other"
    prices_file: str | None = None


@dataclass(frozen=True)
class RouteTable:
    source: str
    server: ServerSettings
    providers: Mapping[str, Provider]
    aliases: Mapping[str, Alias]
    wildcards: tuple[Alias, ...] = field(default=())
    state: StateSettings = field(default_factory=StateSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    auth: AuthSettings = field(default_factory=lambda: _default_auth())
    ledger: LedgerSettings | None = None  # None: no ledger (metrics still count)

    def lookup(self, name: str) -> Alias | None:
        alias = self.aliases.get(name)
        if alias is not None:
            return alias
        for wildcard in self.wildcards:  # longest prefix first
            prefix = wildcard.wildcard_prefix
            if prefix is not None and name.startswith(prefix) and len(name) > len(prefix):
                return wildcard
        return None

    def secrets(self) -> list[Secret]:
        return [p.api_key for p in self.providers.values() if p.api_key] + self.auth.secrets()


def _default_auth() -> AuthSettings:
    from router.auth.settings import AuthSettings  # router.auth builds on this module

    return AuthSettings()


_RETRY, _TIMEOUTS, _SERVER, _STATE, _LOGGING = RetryPolicy(), Timeouts(), ServerSettings(), StateSettings(), LoggingSettings()


# --------------------------------------------------------------------------
# Reading: a tiny cursor over the YAML tree that records problems with paths.

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.issues: list[tuple[str, str]] = []
        self.env = env

    def fail(self, path: str, message: str) -> None:
        self.issues.append((path, message))

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, got {type(value).__name__}")
            return {}
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    self.fail(f"{path}.{key}" if path else str(key), f"unknown field; expected one of: {', '.join(allowed)}")
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


def _limits(r: _Reader, raw: Any, path: str) -> Limits | None:
    if raw is None:
        return None
    data = r.mapping(raw, path, ("rpm", "tpm", "concurrency"))
    return Limits(
        rpm=r.integer(data.get("rpm"), f"{path}.rpm", None, minimum=1),
        tpm=r.integer(data.get("tpm"), f"{path}.tpm", None, minimum=1),
        concurrency=r.integer(data.get("concurrency"), f"{path}.concurrency", None, minimum=1),
    )


def _price(r: _Reader, raw: Any, path: str) -> Price | None:
    if raw is None:
        return None
    data = r.mapping(raw, path, ("input", "output", "cached_input", "cache_write", "reasoning", "version"))
    for required in ("input", "output"):
        if data and required not in data:
            r.fail(f"{path}.{required}", "is required (USD per million tokens)")
    return Price(
        input=r.money(data.get("input"), f"{path}.input") or Decimal(0),
        output=r.money(data.get("output"), f"{path}.output") or Decimal(0),
        cached_input=r.money(data.get("cached_input"), f"{path}.cached_input"),
        cache_write=r.money(data.get("cache_write"), f"{path}.cache_write"),
        reasoning=r.money(data.get("reasoning"), f"{path}.reasoning"),
        version=r.string(data.get("version"), f"{path}.version", default="unversioned") or "unversioned",
    )


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


_LEDGER_FIELDS = ("sinks", "journal_dir", "batch_size", "flush_interval", "retry_interval", "team_from_metadata", "max_label_values", "prices_file")
_SINK_FIELDS = ("kind", "name", "path", "url", "prefix", "maxlen", "max_age_days", "rollup_days", "dedupe_days", "timeout")


def _ledger(r: _Reader, raw: Any, source: str, present: bool) -> tuple[LedgerSettings | None, dict[str, Price]]:
    if not present:
        return None, {}
    data = r.mapping(raw, "ledger", _LEDGER_FIELDS)
    raw_sinks = data.get("sinks", [{"kind": "sqlite"}])
    if not isinstance(raw_sinks, list) or not raw_sinks:
        r.fail("ledger.sinks", "must be a non-empty list of sinks, e.g. [{kind: sqlite, path: usage.db}]")
        raw_sinks = []
    sinks: list[SinkSettings] = []
    for i, raw_sink in enumerate(raw_sinks):
        path = f"ledger.sinks[{i}]"
        d = r.mapping(raw_sink, path, _SINK_FIELDS)
        kind = r.string(d.get("kind"), f"{path}.kind", required=True) or ""
        if kind and kind not in SINK_KINDS:
            r.fail(f"{path}.kind", f"unknown sink kind {kind!r}; expected one of: {', '.join(SINK_KINDS)}")
        name = r.string(d.get("name"), f"{path}.name", default=kind) or kind
        if any(s.name == name for s in sinks):
            r.fail(f"{path}.name", f"two sinks are named {name!r}; give each its own name (it names its journal file)")
        default_path = {"sqlite": "usage.db", "jsonl": "usage.jsonl"}.get(kind, "")
        sink_path = r.string(d.get("path"), f"{path}.path", default=default_path) or ""
        url = r.string(d.get("url"), f"{path}.url", default="") or ""
        if kind == "redis" and not url.startswith(("redis://", "rediss://", "unix://")):
            r.fail(f"{path}.url", f"a redis sink needs a redis:// URL, got {url!r}")
        sinks.append(
            SinkSettings(
                kind=kind,
                name=name,
                path=_resolve(sink_path, source) if sink_path else "",
                url=url,
                prefix=r.string(d.get("prefix"), f"{path}.prefix", default="llmr") or "llmr",
                maxlen=r.integer(d.get("maxlen"), f"{path}.maxlen", 1_000_000, minimum=1) or 1_000_000,
                max_age_days=r.integer(d.get("max_age_days"), f"{path}.max_age_days", 35, minimum=1) or 35,
                rollup_days=r.integer(d.get("rollup_days"), f"{path}.rollup_days", 400, minimum=1) or 400,
                dedupe_days=r.integer(d.get("dedupe_days"), f"{path}.dedupe_days", 7, minimum=1) or 7,
                timeout=r.number(d.get("timeout"), f"{path}.timeout", 1.0, minimum=0.001),
            )
        )
    prices: dict[str, Price] = {}
    prices_file = r.string(data.get("prices_file"), "ledger.prices_file")
    if prices_file:
        from router.accounting.price_file import PriceFileError, load_litellm_prices

        prices_file = _resolve(prices_file, source)
        try:
            prices = load_litellm_prices(prices_file)
        except PriceFileError as exc:
            r.fail("ledger.prices_file", str(exc))
    team_key = r.string(data.get("team_from_metadata"), "ledger.team_from_metadata")
    settings = LedgerSettings(
        sinks=tuple(sinks),
        journal_dir=_resolve(r.string(data.get("journal_dir"), "ledger.journal_dir", default="ledger-journal") or "ledger-journal", source),
        batch_size=r.integer(data.get("batch_size"), "ledger.batch_size", 500, minimum=1) or 500,
        flush_interval=r.number(data.get("flush_interval"), "ledger.flush_interval", 0.25, minimum=0.001),
        retry_interval=r.number(data.get("retry_interval"), "ledger.retry_interval", 1.0, minimum=0.001),
        team_from_metadata=team_key or None,
        max_label_values=r.integer(data.get("max_label_values"), "ledger.max_label_values", 200, minimum=1) or 200,
        prices_file=prices_file or None,
    )
    return settings, prices


def _provider(r: _Reader, name: str, raw: Any) -> Provider | None:
    path = f"providers.{name}"
    data = r.mapping(raw, path, ("kind", "base_url", "api_key", "timeouts", "headers", "limits", "options", "health"))
    kind = r.string(data.get("kind"), f"{path}.kind", required=True)
    if kind is None:
        return None
    adapter = ADAPTERS.get(kind)
    if adapter is None:
        r.fail(f"{path}.kind", f"unknown provider kind {kind!r}; known kinds: {', '.join(sorted(ADAPTERS))}")
        return None
    base_url = r.string(data.get("base_url"), f"{path}.base_url", default=adapter.default_base_url)
    if not base_url:
        r.fail(f"{path}.base_url", "is required for this kind")
        base_url = ""
    elif kind != "mock" and not base_url.startswith(("http://", "https://")):
        r.fail(f"{path}.base_url", f"must start with http:// or https://, got {base_url!r}")
    api_key = r.string(data.get("api_key"), f"{path}.api_key")
    t = r.mapping(data.get("timeouts"), f"{path}.timeouts", ("connect", "read", "total"))
    timeouts = Timeouts(
        connect=r.number(t.get("connect"), f"{path}.timeouts.connect", _TIMEOUTS.connect, minimum=0.001),
        read=r.number(t.get("read"), f"{path}.timeouts.read", _TIMEOUTS.read, minimum=0.001),
        total=r.number(t.get("total"), f"{path}.timeouts.total", _TIMEOUTS.total, minimum=0.001),
    )
    headers = {str(k): r.string(v, f"{path}.headers.{k}") or "" for k, v in r.mapping(data.get("headers"), f"{path}.headers").items()}
    options = r.mapping(data.get("options"), f"{path}.options")
    return Provider(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        api_key=Secret(api_key) if api_key else None,
        timeouts=timeouts,
        headers=MappingProxyType(headers),
        options=MappingProxyType(dict(options)),
        limits=_limits(r, data.get("limits"), f"{path}.limits"),
        health=_health(r, data.get("health"), f"{path}.health"),
    )


_HEALTH = HealthPolicy()


def _health(r: _Reader, raw: Any, path: str) -> HealthPolicy:
    data = r.mapping(raw, path, ("failure_threshold", "failure_rate", "min_requests", "window", "cooldown", "probe_timeout", "check_interval"))
    interval = data.get("check_interval")
    rate = r.number(data.get("failure_rate"), f"{path}.failure_rate", _HEALTH.failure_rate, minimum=0.01)
    if rate > 1:
        r.fail(f"{path}.failure_rate", f"is a share of calls, between 0.01 and 1; got {rate}")
    return HealthPolicy(
        failure_threshold=r.integer(data.get("failure_threshold"), f"{path}.failure_threshold", _HEALTH.failure_threshold, minimum=1) or 1,
        failure_rate=rate,
        min_requests=r.integer(data.get("min_requests"), f"{path}.min_requests", _HEALTH.min_requests, minimum=1) or 1,
        window=r.number(data.get("window"), f"{path}.window", _HEALTH.window, minimum=1),
        cooldown=r.number(data.get("cooldown"), f"{path}.cooldown", _HEALTH.cooldown, minimum=0.01),
        probe_timeout=r.number(data.get("probe_timeout"), f"{path}.probe_timeout", _HEALTH.probe_timeout, minimum=0.01),
        check_interval=None if interval is None else r.number(interval, f"{path}.check_interval", 0.0, minimum=0.05),
    )


_RETRY_ON = ("connect", "timeout", "429", "5xx")
_TARGET_FIELDS = ("provider", "model", "weight", "priority", "price", "limits")
_ALIAS_FIELDS = ("targets", "fallbacks", "strategy", "retry", "operations", "description")


def _alias(r: _Reader, name: str, raw: Any, providers: Mapping[str, Provider], file_prices: Mapping[str, Price] | None = None) -> Alias | None:
    path = f"models.{name}"
    data = r.mapping(raw, path, _ALIAS_FIELDS)
    wildcard = name.endswith("*")
    if "*" in name[:-1]:
        r.fail(path, "a wildcard alias may only end in '*', like 'forii/*'")
    ops_raw = data.get("operations", ["chat"])
    operations: set[Operation] = set()
    if not isinstance(ops_raw, list) or not ops_raw:
        r.fail(f"{path}.operations", "must be a non-empty list of: chat, completion")
    else:
        for i, op in enumerate(ops_raw):
            try:
                operations.add(Operation(op))
            except ValueError:
                r.fail(f"{path}.operations[{i}]", f"unknown operation {op!r}; expected chat or completion")
    raw_targets = data.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        r.fail(f"{path}.targets", "must be a non-empty list of {provider, model}")
        raw_targets = []
    targets: list[Target] = []
    for i, raw_target in enumerate(raw_targets):
        tpath = f"{path}.targets[{i}]"
        t = r.mapping(raw_target, tpath, _TARGET_FIELDS)
        provider_name = r.string(t.get("provider"), f"{tpath}.provider", required=True)
        provider = providers.get(provider_name) if provider_name else None
        if provider_name and provider is None:
            r.fail(f"{tpath}.provider", f"unknown provider {provider_name!r}; declared providers: {', '.join(sorted(providers)) or 'none'}")
        model = r.string(t.get("model"), f"{tpath}.model", required=not wildcard, default="")
        if provider is None or model is None:
            continue
        adapter = ADAPTERS[provider.kind]
        for op in sorted(operations - adapter.capabilities.operations):
            r.fail(
                tpath,
                f"provider {provider.name!r} (kind {provider.kind}) cannot serve {op.value}; it serves {', '.join(sorted(o.value for o in adapter.capabilities.operations))}",
            )
        targets.append(
            Target(
                provider=provider,
                model=model,
                weight=r.number(t.get("weight"), f"{tpath}.weight", 1.0),
                priority=r.integer(t.get("priority"), f"{tpath}.priority", 0) or 0,
                price=_price(r, t.get("price"), f"{tpath}.price") or _file_price(file_prices, model),
                limits=_limits(r, t.get("limits"), f"{tpath}.limits"),
            )
        )
    fallbacks = data.get("fallbacks", [])
    if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
        r.fail(f"{path}.fallbacks", "must be a list of alias names")
        fallbacks = []
    strategy = r.string(data.get("strategy"), f"{path}.strategy", default="default") or "default"
    if strategy not in STRATEGIES:
        r.fail(f"{path}.strategy", f"unknown strategy {strategy!r}; expected one of: {', '.join(STRATEGIES)}")
    rr = r.mapping(data.get("retry"), f"{path}.retry", ("attempts", "backoff_initial", "backoff_max", "retry_after_cap", "deadline", "on", "same_target"))
    retry_on = rr.get("on", sorted(_RETRY.retry_on))
    if not isinstance(retry_on, list) or any(kind not in _RETRY_ON for kind in retry_on):
        r.fail(f"{path}.retry.on", f"must be a list of: {', '.join(_RETRY_ON)} (a caller's 4xx is never retried)")
        retry_on = sorted(_RETRY.retry_on)
    same_target = rr.get("same_target", _RETRY.same_target)
    if not isinstance(same_target, bool):
        r.fail(f"{path}.retry.same_target", "must be true (retry the same target) or false (move on to the next)")
        same_target = _RETRY.same_target
    retry = RetryPolicy(
        attempts=r.integer(rr.get("attempts"), f"{path}.retry.attempts", _RETRY.attempts, minimum=1) or 1,
        backoff_initial=r.number(rr.get("backoff_initial"), f"{path}.retry.backoff_initial", _RETRY.backoff_initial),
        backoff_max=r.number(rr.get("backoff_max"), f"{path}.retry.backoff_max", _RETRY.backoff_max),
        retry_after_cap=r.number(rr.get("retry_after_cap"), f"{path}.retry.retry_after_cap", _RETRY.retry_after_cap),
        deadline=r.number(rr.get("deadline"), f"{path}.retry.deadline", _RETRY.deadline, minimum=0.01),
        retry_on=frozenset(str(kind) for kind in retry_on),
        same_target=same_target,
    )
    if not targets:
        return None
    return Alias(
        name=name,
        targets=tuple(targets),
        fallbacks=tuple(fallbacks),
        strategy=strategy,
        retry=retry,
        operations=frozenset(operations),
        description=r.string(data.get("description"), f"{path}.description", default="") or "",
    )


def _logging(r: _Reader, raw: Any) -> LoggingSettings:
    data = r.mapping(raw, "logging", ("level", "format", "bodies"))
    level = (r.string(data.get("level"), "logging.level", default=_LOGGING.level) or _LOGGING.level).lower()
    if level not in LOG_LEVELS:
        r.fail("logging.level", f"unknown level {level!r}; expected one of: {', '.join(LOG_LEVELS)}")
    fmt = (r.string(data.get("format"), "logging.format", default=_LOGGING.format) or _LOGGING.format).lower()
    if fmt not in LOG_FORMATS:
        r.fail("logging.format", f"unknown format {fmt!r}; expected json or text")
    bodies = data.get("bodies", False)
    if not isinstance(bodies, bool):
        r.fail("logging.bodies", f"must be true or false, got {bodies!r}")
        bodies = False
    return LoggingSettings(level=level, format=fmt, bodies=bodies)


def parse_table(document: Any, source: str = "<routes>", env: Mapping[str, str] | None = None) -> RouteTable:
    r = _Reader(os.environ if env is None else env)
    root = r.mapping(document, "", ("version", "server", "state", "logging", "auth", "providers", "models", "ledger"))
    if document is None or not root:
        raise ConfigError(source, [("", "the file is empty; it needs at least 'providers' and 'models'")])
    version = root.get("version", 1)
    if version != 1:
        r.fail("version", f"unsupported version {version!r}; this gateway reads version 1")
    s = r.mapping(root.get("server"), "server", ("host", "port", "max_body_bytes", "shutdown_grace", "max_in_flight"))
    server = ServerSettings(
        host=r.string(s.get("host"), "server.host", default=_SERVER.host) or _SERVER.host,
        port=r.integer(s.get("port"), "server.port", _SERVER.port, minimum=0) or 0,
        max_body_bytes=r.integer(s.get("max_body_bytes"), "server.max_body_bytes", _SERVER.max_body_bytes, minimum=1024) or 0,
        shutdown_grace=r.number(s.get("shutdown_grace"), "server.shutdown_grace", _SERVER.shutdown_grace),
        max_in_flight=r.integer(s.get("max_in_flight"), "server.max_in_flight", _SERVER.max_in_flight, minimum=1) or _SERVER.max_in_flight,
    )
    logging_settings = _logging(r, root.get("logging"))
    st = r.mapping(root.get("state"), "state", ("backend", "url", "prefix", "timeout", "pool_size", "pool_timeout", "outage_probes"))
    state = StateSettings(
        backend=r.string(st.get("backend"), "state.backend", default=_STATE.backend) or _STATE.backend,
        url=r.string(st.get("url"), "state.url", default=_STATE.url) or _STATE.url,
        prefix=r.string(st.get("prefix"), "state.prefix", default=_STATE.prefix) or _STATE.prefix,
        timeout=r.number(st.get("timeout"), "state.timeout", _STATE.timeout, minimum=0.001),
        pool_size=r.integer(st.get("pool_size"), "state.pool_size", _STATE.pool_size, minimum=1) or _STATE.pool_size,
        pool_timeout=r.number(st.get("pool_timeout"), "state.pool_timeout", _STATE.pool_timeout, minimum=0.001),
        outage_probes=r.integer(st.get("outage_probes"), "state.outage_probes", _STATE.outage_probes, minimum=1) or _STATE.outage_probes,
    )
    if state.backend not in ("memory", "redis"):
        r.fail("state.backend", f"unknown backend {state.backend!r}; expected memory or redis")
    elif state.backend == "redis" and not state.url.startswith(("redis://", "rediss://", "unix://")):
        r.fail("state.url", f"must be a redis:// URL, got {state.url!r}")
    from router.auth.settings import check_alias_names, parse_auth  # router.auth builds on this module

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
    )


def load_table(path: str | Path, env: Mapping[str, str] | None = None) -> RouteTable:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(source, [("", f"{where}not valid YAML: {getattr(exc, 'problem', None) or exc}")]) from exc
    return parse_table(document, source, env)
