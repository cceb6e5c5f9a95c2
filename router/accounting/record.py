"""``RequestRecord``: everything known about one client request when it ends.

The pipeline fills one in as the request goes (attempts, the answering
target, usage, timings) and hands it to the ledger exactly once, whether the
request succeeded, failed or the client went away.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from providers.base import Usage
from router.accounting.pricing import NO_COST, CostParts, cost_parts, to_micro, usd
from router.config import Price
from router.outcome import AttemptKind, HealthEffect

_PART_NAMES = ("input", "cached_input", "cache_write", "output", "reasoning")  # CostParts' fields, in order
TRACE_LIMIT = 2000  # characters of x-router-trace
STREAM_ERROR = "stream_error"  # the status of a stream that broke after the client's first byte


@dataclass(slots=True)
class AttemptRecord:
    """One candidate's typed outcome for one request: what routing, the limiter, budgets, the ledger,
    metrics and logs all read (none of them re-derives it from an error or a string)."""

    target: str  # "provider/model"
    alias: str
    kind: AttemptKind = AttemptKind.STARTED
    reason: str = ""  # skipped: why; failed: the error's short reason ("status 503", "timeout")
    detail: str = ""  # failed: the error's message, for the 5xx's lines and the log
    status: int | None = None  # the upstream's HTTP status, once it answered
    latency_ms: float = 0.0
    usage: Usage | None = None  # a failed attempt that consumed tokens is charged
    price: Price | None = None  # the target's price when the attempt was made
    health: HealthEffect = HealthEffect.NEUTRAL  # what this call did to the target's health
    retry_after: float | None = None  # the cooldown the upstream asked for (429, 503)
    cost: Decimal = Decimal(0)  # usage at price, exact micro-dollars: computed once, in charge()
    parts: CostParts = NO_COST  # the same cost, split by what was billed

    def __post_init__(self) -> None:
        if self.usage is not None:
            self.charge(self.usage)

    def charge(self, usage: Usage) -> None:
        """Set the attempt's usage and price it: the only place a cost is computed."""
        self.usage = usage
        self.parts = cost_parts(usage, self.price)
        self.cost = self.parts.total

    @property
    def tried(self) -> bool:
        return self.kind is not AttemptKind.SKIPPED

    @property
    def answered(self) -> bool:
        """The upstream answered (a stream that broke after its first byte included): tokens were spent."""
        return self.kind in (AttemptKind.OK, AttemptKind.MID_STREAM, AttemptKind.CONTINUED)

    @property
    def trace(self) -> str:
        """This attempt in ``x-router-trace``: ``ok``, ``status 503``, ``skipped: open circuit``, ..."""
        if self.kind is AttemptKind.SKIPPED:
            return f"skipped: {self.reason}"
        if self.kind is AttemptKind.MID_STREAM:
            return f"{self.reason} mid-stream"
        if self.kind is AttemptKind.FAILED:
            return self.reason
        return self.kind.value

    @property
    def line(self) -> str:
        """This attempt in an all-upstreams-failed error: its trace and, for a failure, the message."""
        text = self.trace
        if self.kind is AttemptKind.FAILED and self.detail and self.detail != self.reason:
            text = f"{self.reason} ({self.detail})"
        return f"{self.alias} -> {self.target}: {text}"


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    operation: str
    stream: bool
    requested_models: list[str]
    started_at: float = field(default_factory=time.time)  # wall clock, for the ledger
    started_mono: float = field(default_factory=time.monotonic)
    first_token_mono: float | None = None
    upstream_started_mono: float | None = None
    ended_mono: float | None = None
    alias: str | None = None
    provider: str | None = None
    model: str | None = None
    target_key: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    status: int = 0  # the HTTP status the client was sent
    error_class: str | None = None
    stream_error: str | None = None  # a stream that broke after its first byte: why (the client saw an SSE error)
    usage: Usage | None = None
    client_disconnected: bool = False
    user: str | None = None
    key_id: str | None = None  # the virtual key that made the request (router/auth), never the key itself
    team: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tries(self) -> int:
        return sum(1 for a in self.attempts if a.tried)

    def skip(self, target: str, alias: str, reason: str) -> None:
        self.attempts.append(AttemptRecord(target, alias, AttemptKind.SKIPPED, reason))

    @property
    def cost(self) -> Decimal:
        """Every attempt that consumed tokens, at its target's price (exact; the ledger rounds once)."""
        return sum((a.cost for a in self.attempts), Decimal(0))

    @property
    def cost_micro(self) -> int:
        """The request's cost rounded once, half-up: what its ledger row, the client and budgets all see."""
        return to_micro(self.cost)

    def cost_for_client(self) -> dict[str, Any]:
        """``usage.cost`` (USD) and ``usage.cost_details`` (each part rounded alone), from the same cost as the ledger row."""
        charged = [a.parts for a in self.attempts if a.parts is not NO_COST]
        parts = charged[0] if len(charged) == 1 else sum(charged, NO_COST)
        details = {name: usd(to_micro(part)) if part else 0.0 for name, part in zip(_PART_NAMES, parts.split(), strict=True)}
        return {"cost": usd(self.cost_micro), "cost_details": details}

    @property
    def tokens_used(self) -> int:
        """Every token the request's attempts consumed, failed ones included (what a key's tpm pays)."""
        return sum(a.usage.total for a in self.attempts if a.usage is not None)

    @property
    def trace(self) -> str:
        """``x-router-trace``: every target tried or skipped, in order, with why: ``key=outcome, ...``."""
        parts = []
        for attempt in self.attempts:
            text = f"{attempt.target}={attempt.trace}"
            parts.append("".join(ch if 32 <= ord(ch) < 127 and ch != "," else " " for ch in text))
        value = ", ".join(parts)
        return value if len(value) <= TRACE_LIMIT else value[: TRACE_LIMIT - 3] + "..."

    @property
    def status_label(self) -> str:
        """The request's status for ``/v1/usage`` and metrics: the HTTP status, or ``stream_error`` when a
        stream that was sent with 200 broke before its end (the client saw an SSE error event, not an answer)."""
        return STREAM_ERROR if self.stream_error is not None and self.status == 200 else str(self.status)

    def client_left(self) -> None:
        self.client_disconnected = True
        self.finish(499, "ClientDisconnected")

    def finish(self, status: int, error_class: str | None = None) -> None:
        if self.ended_mono is None:
            self.ended_mono = time.monotonic()
            self.status = status
            self.error_class = error_class or self.error_class  # a broken stream's error stays on its 200


# Bounds on what a client can attach, so a record (and the ledger) stays small.
MAX_METADATA_KEYS = 32
MAX_METADATA_CHARS = 256
METADATA_HEADER = "x-router-metadata-"
TAGS_HEADER = "x-router-tags"


def request_metadata(body_metadata: dict[str, str], headers: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The request's attribution: its ``metadata`` object plus ``x-router-metadata-*`` headers, and its tags.

    A header wins over a body field of the same name (a proxy in front of the
    client can then set attribution the client cannot override).  ``x-router-tags``
    is a comma-separated list; a tag ``key:value`` also sets metadata ``key``.
    """
    metadata: dict[str, str] = {}
    for key, value in body_metadata.items():
        if isinstance(value, str):
            metadata[str(key)[:MAX_METADATA_CHARS]] = value[:MAX_METADATA_CHARS]
    tags: list[str] = []
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(METADATA_HEADER) and len(lower) > len(METADATA_HEADER):
            metadata[lower[len(METADATA_HEADER) :][:MAX_METADATA_CHARS]] = value[:MAX_METADATA_CHARS]
        elif lower == TAGS_HEADER:
            for tag in value.split(","):
                tag = tag.strip()[:MAX_METADATA_CHARS]
                if not tag:
                    continue
                tags.append(tag)
                key, sep, tag_value = tag.partition(":")
                if sep and key and tag_value:
                    metadata.setdefault(key, tag_value)
    if len(metadata) > MAX_METADATA_KEYS:
        metadata = dict(list(metadata.items())[:MAX_METADATA_KEYS])
    return metadata, tags[:MAX_METADATA_KEYS]
