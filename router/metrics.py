"""Prometheus metrics: one ``Metrics`` per Gateway, with its own ``CollectorRegistry``.

Counted from each finished request's ``RequestRecord`` (a record listener:
in-memory increments only, no I/O), plus collectors read at scrape time:
per-target health (from the routing engine's state when the gateway has one), the
ledger's buffer, journals and writes, failed authentications, the state
store's Redis errors and degraded flag, and live reloads.

Label values come only from the route table (alias, provider, model), the
key table (team) and, for gateways without keys, the metadata key named by
``ledger.team_from_metadata``; a label that would take more than
``max_label_values`` distinct values reads "other", so cardinality stays
bounded whatever clients send.

Cost is kept as integer micro-dollars per label set and exported as USD at
scrape time, so the counter agrees with the ledger to the micro-dollar.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from router.accounting.ledger import Ledger
from router.accounting.record import RequestRecord
from router.accounting.usage import UsageRow, row_from_record
from router.config import RouteTable, Target
from router.gateway import Gateway
from router.outcome import AttemptKind
from router.reload import Reloader

log = logging.getLogger("router.metrics")

PREFIX = "llm_router"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OTHER = "other"
UNKNOWN_ALIAS = "(unknown)"  # the alias label of a request whose model names no alias
CIRCUIT_STATES = {"closed": 0, "half-open": 1, "half_open": 1, "open": 2}


class BoundedLabel:
    """Passes at most ``limit`` distinct values; later newcomers read "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return ""
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


class Metrics:
    def __init__(self, gateway: Gateway, reloader: Reloader | None = None) -> None:
        self.gateway = gateway
        self.reloader = reloader
        self.registry = CollectorRegistry(auto_describe=False)
        ledger_settings = gateway.table.ledger
        limit = ledger_settings.max_label_values if ledger_settings else 200
        self.team_label = BoundedLabel(limit)
        self.model_label = BoundedLabel(limit)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Client requests by alias, answering provider and model, status (HTTP, or stream_error) and operation",
            ["alias", "provider", "model", "status", "operation"],
            registry=r,
        )
        self.tokens = Counter(
            f"{PREFIX}_tokens", "Tokens by type (prompt, cached, cache_write, completion, reasoning)", ["alias", "provider", "model", "type"], registry=r
        )
        self.attempts = Counter(
            f"{PREFIX}_upstream_attempts", "Upstream attempts by target and outcome (ok, error)", ["provider", "model", "outcome"], registry=r
        )
        self.retries = Counter(f"{PREFIX}_retries", "Repeated attempts at a target already tried in the same request", ["alias"], registry=r)
        self.failovers = Counter(f"{PREFIX}_failovers", "Moves to another target within one request", ["alias"], registry=r)
        self.estimated = Counter(
            f"{PREFIX}_usage_estimated", "Requests whose tokens were estimated (no usage reported, or a cut stream)", ["alias", "provider", "model"], registry=r
        )
        self.usage_rejected = Counter(
            f"{PREFIX}_upstream_usage_rejected",
            "Answers whose reported usage was nonsense (negative, absurd, not a number): charged by estimate",
            ["provider"],
            registry=r,
        )
        self.latency = Histogram(f"{PREFIX}_request_duration_seconds", "Whole request, as the client waited", ["alias"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_latency = Histogram(
            f"{PREFIX}_upstream_duration_seconds", "Time spent waiting on upstreams, all attempts", ["alias", "provider"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds", "Request start to the first byte of the answer", ["alias", "provider"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.overhead = Histogram(
            f"{PREFIX}_gateway_overhead_seconds", "Request time not spent waiting on an upstream", ["alias"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.cost_micro: dict[tuple[str, str, str, str], int] = {}
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        r.register(_ScrapeTimeCollector(self))

    def observe(self, record: RequestRecord, row: UsageRow | None = None) -> None:
        """The record listener.  ``row`` is the ledger's priced row when there is a ledger."""
        if row is None:
            ledger = self.gateway.table.ledger
            row = row_from_record(record, ledger.team_from_metadata if ledger else None)
        table = self.gateway.table
        alias_obj = table.lookup(row.alias) if row.alias else None
        # A model no alias serves is one label value, never the caller's text (blank legends and unbounded series otherwise).
        alias = alias_obj.name if alias_obj is not None and alias_obj.name == row.alias else UNKNOWN_ALIAS
        provider = row.provider if row.provider and row.provider in table.providers else ""
        model = self._model(alias_obj, row.model)
        team = self.team_label(row.team)  # the key table's team, or the configured metadata key
        self._child(self.requests, alias, provider, model, str(row.status), row.operation).inc()
        for kind, value in (
            ("prompt", row.prompt_tokens),
            ("cached", row.cached_tokens),
            ("cache_write", row.cache_write_tokens),
            ("completion", row.completion_tokens),
            ("reasoning", row.reasoning_tokens),
        ):
            if value:
                self._child(self.tokens, alias, provider, model, kind).inc(value)
        if row.cost_micro_usd:
            key = (alias, provider, model, team)
            self.cost_micro[key] = self.cost_micro.get(key, 0) + row.cost_micro_usd
        if row.usage_estimated:
            self._child(self.estimated, alias, provider, model).inc()
        if record.extra.get("usage_rejected"):
            self._child(self.usage_rejected, provider).inc()
        if row.retries:
            self._child(self.retries, alias).inc(row.retries)
        if row.failovers:
            self._child(self.failovers, alias).inc(row.failovers)
        for attempt in record.attempts:
            if not attempt.tried or attempt.kind is AttemptKind.STARTED:
                continue
            a_provider, _, a_model = attempt.target.partition("/")
            self._child(
                self.attempts,
                a_provider if a_provider in table.providers else "",
                self._model(alias_obj, a_model),
                "ok" if attempt.kind in (AttemptKind.OK, AttemptKind.CONTINUED) else "error",
            ).inc()
        self._child(self.latency, alias).observe(row.latency_ms / 1000)
        self._child(self.overhead, alias).observe(row.overhead_ms / 1000)
        if row.upstream_ms is not None:
            self._child(self.upstream_latency, alias, provider).observe(row.upstream_ms / 1000)
        if row.ttft_ms is not None:
            self._child(self.ttft, alias, provider).observe(row.ttft_ms / 1000)

    def _child(self, metric: Any, *labels: str) -> Any:
        # prometheus_client's labels() takes a lock and validates on every call; the
        # label sets are bounded, so the children are looked up once and kept.
        key = (metric._name, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _model(self, alias: Any, model: str | None) -> str:
        """A model named in the route table as is; a wildcard's caller-chosen model, bounded."""
        if not model:
            return ""
        if alias is not None and any(t.model == model for t in alias.targets):
            return model
        return self.model_label(model) if alias is not None else OTHER

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ScrapeTimeCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        cost = CounterMetricFamily(
            f"{PREFIX}_cost_usd",
            "Spend in USD by alias, provider, model and team (exact: summed in micro-dollars)",
            labels=["alias", "provider", "model", "team"],
        )
        for labels, micro in sorted(m.cost_micro.items()):
            cost.add_metric(list(labels), micro / 1_000_000)
        yield cost
        yield from _target_health(m.gateway.table, m.gateway)
        ledger: Ledger | None = getattr(m.gateway, "ledger", None)
        depth = GaugeMetricFamily(f"{PREFIX}_ledger_buffer_depth", "Usage records waiting in memory for the writer")
        depth.add_metric([], len(ledger.buffer) if ledger else 0)
        yield depth
        journal = GaugeMetricFamily(f"{PREFIX}_ledger_journal_bytes", "Bytes journaled on disk for a sink that was down", labels=["sink"])
        written = CounterMetricFamily(f"{PREFIX}_ledger_records_written", "Usage records newly stored, by sink", labels=["sink"])
        up = GaugeMetricFamily(f"{PREFIX}_ledger_sink_up", "1 when the sink took its last write", labels=["sink"])
        for state in ledger.sinks if ledger else ():
            journal.add_metric([state.sink.name], state.journal.size)
            written.add_metric([state.sink.name], state.written)
            up.add_metric([state.sink.name], 1 if state.up else 0)
        yield journal
        yield written
        yield up
        yield from _operations(m.gateway, m.reloader)


def _operations(gateway: Any, reloader: Reloader | None) -> Iterator[Metric]:
    """Auth failures, the routing store's Redis health and live reloads, read from their owners at scrape time."""
    auth = getattr(gateway, "auth", None)
    counters = auth.counters() if auth is not None else {}
    failures = CounterMetricFamily(f"{PREFIX}_auth_failures", "Failed authentication attempts (missing, unknown, revoked key, wrong admin token)")
    failures.add_metric([], counters.get("auth_failures_total", 0))
    slowed = CounterMetricFamily(f"{PREFIX}_auth_failures_slowed", "Failed authentication attempts made to wait because their address kept failing")
    slowed.add_metric([], counters.get("auth_failures_slowed_total", 0))
    yield from (failures, slowed)
    routing = getattr(gateway, "routing", None)
    store = getattr(routing, "store", None)
    backend = str(getattr(store, "backend", "memory"))
    errors = CounterMetricFamily(f"{PREFIX}_state_redis_errors", "Shared-state Redis calls that failed or timed out", labels=["backend"])
    errors.add_metric([backend], int(getattr(store, "redis_errors", 0)))
    degraded = GaugeMetricFamily(f"{PREFIX}_state_degraded", "1 while Redis is out and this replica routes and limits on local state", labels=["backend"])
    degraded.add_metric([backend], 1 if getattr(store, "degraded", False) else 0)
    probes = CounterMetricFamily(f"{PREFIX}_state_probes_failed", "PINGs of the state store's prober that Redis did not answer", labels=["backend"])
    probes.add_metric([backend], int(getattr(store, "probes_failed", 0)))
    kept = GaugeMetricFamily(f"{PREFIX}_state_kept_writes", "Releases, settlements and reports waiting for Redis to answer again", labels=["backend"])
    kept.add_metric([backend], len(getattr(store, "_kept", ())))
    overloaded = CounterMetricFamily(f"{PREFIX}_overloaded", "Client requests refused with 503 overloaded: this process had server.max_in_flight in hand")
    overloaded.add_metric([], int(getattr(gateway, "overloaded", 0)))
    yield from (errors, degraded, probes, kept, overloaded)
    reloads = CounterMetricFamily(f"{PREFIX}_config_reloads", "routes.yaml reloads that swapped the route table")
    reloads.add_metric([], int(getattr(reloader, "reloads", 0)))
    refused = CounterMetricFamily(f"{PREFIX}_config_reload_failures", "routes.yaml reloads refused (the old table kept serving)")
    refused.add_metric([], int(getattr(reloader, "failures", 0)))
    yield from (reloads, refused)


def _target_states(gateway: Any, targets: list[Target]) -> dict[str, Any]:
    """The routing state's last known view of each target, without waiting; empty when there is none.

    Read by duck type (``gateway.routing.store.snapshot(claims)`` giving
    objects with ``circuit``, ``cooldown_until``, ``open_until``,
    ``remaining_requests``, ``remaining_tokens``), so metrics work with or
    without the routing engine and never make it a dependency.
    """
    routing = getattr(gateway, "routing", None)
    if routing is None:
        return {}
    try:
        return dict(routing.store.snapshot([routing.claim(t, 0) for t in targets]))
    except Exception:  # a scrape must never fail because the routing state changed shape
        log.exception("reading target state for /metrics failed")
        return {}


def _target_health(table: RouteTable, gateway: Any) -> Iterator[Metric]:
    """Per-target circuit state, cooldown and remaining quota; closed and unlimited without a routing state."""
    targets: dict[str, Target] = {}
    for alias in (*table.aliases.values(), *table.wildcards):
        for target in alias.targets:
            targets.setdefault(target.key, target)
    states = _target_states(gateway, list(targets.values()))
    now = time.time()
    circuit = GaugeMetricFamily(f"{PREFIX}_target_circuit_state", "Circuit breaker per target: 0 closed, 1 half-open, 2 open", labels=["target", "provider"])
    cooldown = GaugeMetricFamily(
        f"{PREFIX}_target_cooldown_seconds", "Seconds until a cooled-down or open target is tried again", labels=["target", "provider"]
    )
    remaining_requests = GaugeMetricFamily(
        f"{PREFIX}_target_remaining_requests", "Requests left in the target's rate window, as its provider last reported", labels=["target", "provider"]
    )
    remaining_tokens = GaugeMetricFamily(
        f"{PREFIX}_target_remaining_tokens", "Tokens left in the target's rate window, as its provider last reported", labels=["target", "provider"]
    )
    for key, target in targets.items():
        state = states.get(key)
        labels = [key, target.provider.name]
        circuit.add_metric(labels, CIRCUIT_STATES.get(str(getattr(state, "circuit", "closed")), 2))
        until = max(float(getattr(state, "cooldown_until", 0.0) or 0.0), float(getattr(state, "open_until", 0.0) or 0.0))
        cooldown.add_metric(labels, max(0.0, until - now))
        requests_left = getattr(state, "remaining_requests", None)
        if requests_left is not None:
            remaining_requests.add_metric(labels, float(requests_left))
        tokens_left = getattr(state, "remaining_tokens", None)
        if tokens_left is not None:
            remaining_tokens.add_metric(labels, float(tokens_left))
    yield from (circuit, cooldown, remaining_requests, remaining_tokens)


def metrics_response(metrics: Metrics) -> web.Response:
    """GET /metrics: the Prometheus text format."""
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
