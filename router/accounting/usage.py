"""``UsageRow``: the ledger's flat, priced form of a ``RequestRecord``, and how rows are grouped.

A row is made once, when the request ends (``row_from_record``), and is what
every sink stores and every query sums.  Cost is integer micro-dollars,
priced once per attempt (``AttemptRecord.charge``) and rounded once per request,
half-up (``cost_micro_usd``); the unrounded amount is kept beside it as a decimal
string (``cost_micro_usd_exact``).  Grouping (``GROUP_KEYS``, ``tag:<key>``) is defined here once
for the sinks that aggregate in Python and, as SQL, for the SQLite sink.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Any

from router.accounting.record import RequestRecord

TOKEN_FIELDS = ("prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens", "reasoning_tokens", "total_tokens")
SUM_FIELDS = (*TOKEN_FIELDS, "cost_micro_usd")
GROUP_KEYS = ("team", "model", "provider", "alias", "day", "user", "key_id", "status", "operation")
TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(slots=True)
class UsageRow:
    request_id: str
    started_at: float  # unix seconds
    ended_at: float
    day: str  # UTC date of started_at, YYYY-MM-DD
    first_token_at: float | None = None
    key_id: str | None = None
    team: str | None = None
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    operation: str = "chat"
    requested_model: str | None = None
    alias: str | None = None
    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    retries: int = 0
    failovers: int = 0
    status: str = "0"  # the HTTP status as text, or "stream_error" (RequestRecord.status_label)
    error_class: str | None = None
    stream: bool = False
    client_disconnected: bool = False
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost_micro_usd: int = 0  # rounded once, per request, half-up: what every total sums
    cost_micro_usd_exact: str | None = None  # the unrounded amount, a decimal string ("4.5"); None in rows from before it was kept
    price_version: str | None = None
    usage_estimated: bool = False
    latency_ms: float = 0.0
    upstream_ms: float | None = None
    ttft_ms: float | None = None
    overhead_ms: float = 0.0  # total minus time spent waiting on upstreams

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageRow:
        known = {f.name for f in fields(cls)}
        row = cls(**{k: v for k, v in data.items() if k in known})
        row.status = str(row.status)  # rows written before statuses were text carry an int
        return row


@functools.lru_cache(maxsize=8)
def _day_name(day_number: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day_number * 86400))


def utc_day(ts: float) -> str:
    return _day_name(int(ts // 86400))


def exact_text(amount: Decimal) -> str:
    """An exact Decimal as plain decimal text, no exponent and no trailing zeros: Decimal("50.00") -> "50"."""
    return format(amount.normalize(), "f") if amount else "0"


def row_from_record(record: RequestRecord, team_from_metadata: str | None = None) -> UsageRow:
    """Price and flatten a finished request.  Cheap: no I/O, a few Decimal sums."""
    ended_mono = record.ended_mono if record.ended_mono is not None else time.monotonic()
    total_s = ended_mono - record.started_mono
    tried = [a for a in record.attempts if a.tried]
    upstream_s = sum(a.latency_ms for a in tried) / 1000 if tried else None
    targets_tried: list[str] = []
    for attempt in tried:
        if attempt.target not in targets_tried:
            targets_tried.append(attempt.target)
    tokens = dict.fromkeys(TOKEN_FIELDS, 0)
    estimated = False
    price_version: str | None = None
    for attempt in tried:
        usage = attempt.usage
        if usage is None:
            continue
        tokens["prompt_tokens"] += usage.prompt_tokens
        tokens["cached_tokens"] += usage.cached_tokens
        tokens["cache_write_tokens"] += usage.cache_write_tokens
        tokens["completion_tokens"] += usage.completion_tokens
        tokens["reasoning_tokens"] += usage.reasoning_tokens
        tokens["total_tokens"] += usage.total
        estimated = estimated or usage.estimated
        if attempt.price is not None:
            price_version = attempt.price.version
    last = tried[-1] if tried else None
    provider, model = record.provider, record.model
    if provider is None and last is not None:
        provider, _, model = last.target.partition("/")
    alias = record.alias or (record.attempts[0].alias if record.attempts else None)
    team = record.team
    if team is None and team_from_metadata:
        team = record.metadata.get(team_from_metadata)
    cost = record.cost
    ttft = (record.first_token_mono - record.started_mono) if record.first_token_mono is not None else None
    return UsageRow(
        request_id=record.request_id,
        started_at=record.started_at,
        ended_at=record.started_at + total_s,
        day=utc_day(record.started_at),
        first_token_at=record.started_at + ttft if ttft is not None else None,
        key_id=record.key_id,
        team=team,
        user=record.user,
        metadata=dict(record.metadata),
        tags=list(record.tags),
        operation=record.operation,
        requested_model=record.requested_models[0] if record.requested_models else None,
        alias=alias,
        provider=provider,
        model=model,
        attempts=len(tried),
        retries=len(tried) - len(targets_tried),
        failovers=max(0, len(targets_tried) - 1),
        status=record.status_label,
        error_class=record.error_class,
        stream=record.stream,
        client_disconnected=record.client_disconnected,
        cost_micro_usd=record.cost_micro,  # every attempt that consumed tokens, the failed ones too
        cost_micro_usd_exact=exact_text(cost),
        price_version=price_version,
        usage_estimated=estimated,
        latency_ms=total_s * 1000,
        upstream_ms=upstream_s * 1000 if upstream_s is not None else None,
        ttft_ms=ttft * 1000 if ttft is not None else None,
        overhead_ms=max(0.0, total_s - (upstream_s or 0.0)) * 1000,
        **tokens,
    )


# --------------------------------------------------------------------------
# Grouping, for sinks that aggregate in Python (Redis) and for tests.


class BadQuery(ValueError):
    pass


def check_group_by(keys: list[str]) -> list[str]:
    for key in keys:
        if key in GROUP_KEYS:
            continue
        if key.startswith("tag:") and TAG_KEY.match(key[4:]):
            continue
        raise BadQuery(f"cannot group by {key!r}; use any of {', '.join(GROUP_KEYS)} or tag:<metadata key>")
    return keys


def group_value(row: UsageRow, key: str) -> str:
    if key.startswith("tag:"):
        return row.metadata.get(key[4:], "")
    value = getattr(row, key)
    return "" if value is None else str(value)


def empty_totals() -> dict[str, int]:
    return {"requests": 0, **dict.fromkeys(SUM_FIELDS, 0)}


def aggregate(rows: Any, group_by: list[str]) -> list[dict[str, Any]]:
    """Sum rows into one result row per distinct group, sorted by cost (largest first)."""
    groups: dict[tuple[str, ...], dict[str, int]] = {}
    for row in rows:
        key = tuple(group_value(row, k) for k in group_by)
        totals = groups.get(key)
        if totals is None:
            totals = groups[key] = empty_totals()
        totals["requests"] += 1
        for name in SUM_FIELDS:
            totals[name] += getattr(row, name)
    return finish_groups(((dict(zip(group_by, key, strict=True)), totals) for key, totals in groups.items()))


def finish_groups(groups: Any) -> list[dict[str, Any]]:
    out = [{**keys, **totals, "cost_usd": format_usd(totals["cost_micro_usd"])} for keys, totals in groups]
    out.sort(key=lambda r: (-r["cost_micro_usd"], tuple(str(v) for v in r.values())))
    return out


def format_usd(micro: int) -> str:
    """Exact dollars as a string: 1234567 micro-dollars -> "1.234567"."""
    return str((Decimal(micro) / 1_000_000).quantize(Decimal("0.000001")))
