"""Reading the ledger: ``GET /v1/usage`` and the time-window parsing it shares with ``llm-router usage``.

    GET /v1/usage?from=2026-11-01&to=2026-12-01&group_by=team,model,tag:project[&format=csv]

``from``/``to`` take an ISO date or date-time (UTC unless it says otherwise),
unix seconds, or a span back from now (``7d``, ``24h``, ``30m``); ``to`` is
exclusive and defaults to now, ``from`` to 30 days back.  Each result row
carries its group keys, ``requests``, every token count, ``cost_micro_usd``
(exact integer) and ``cost_usd`` (the same, as a decimal string); ``total``
sums them all.
"""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from router.accounting.ledger import Ledger
from router.accounting.sinks import SinkUnavailable
from router.accounting.usage import SUM_FIELDS, BadQuery, check_group_by, format_usd
from router.errors import InvalidRequest, LedgerNotConfigured, LedgerUnavailable

_SPAN = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DEFAULT_WINDOW = 30 * 86400


def parse_time(value: str, now: float | None = None) -> float:
    now = time.time() if now is None else now
    value = value.strip()
    span = _SPAN.match(value)
    if span:
        return now - int(span.group(1)) * _UNITS[span.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"cannot read {value!r} as a time; use 2026-11-01, 2026-11-01T12:00:00Z, unix seconds, or 7d / 24h") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_window(start: str | None, end: str | None, now: float | None = None) -> tuple[float, float]:
    now = time.time() if now is None else now
    to = parse_time(end, now) if end else now + 1  # +1: a request that started this second is included
    frm = parse_time(start, now) if start else to - DEFAULT_WINDOW
    if frm >= to:
        raise BadQuery("'from' must be before 'to'")
    return frm, to


def parse_group_by(value: str | None) -> list[str]:
    keys = [k.strip() for k in (value or "").split(",") if k.strip()]
    return check_group_by(keys)


COLUMNS_AFTER_KEYS = ("requests", *SUM_FIELDS, "cost_usd")


def to_csv(rows: list[dict[str, Any]], group_by: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = [*group_by, *COLUMNS_AFTER_KEYS]
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    return out.getvalue()


async def usage_response(ledger: Ledger | None, request: web.Request) -> web.Response:
    """GET /v1/usage: spend grouped as asked, as JSON or CSV (the admin token is checked by auth_middleware)."""
    sink = ledger.query_sink() if ledger is not None else None
    if sink is None:
        raise LedgerNotConfigured("this gateway keeps no queryable ledger; add a sqlite, redis or postgres sink under 'ledger:' in routes.yaml")
    q = request.query
    try:
        start, end = parse_window(q.get("from"), q.get("to"))
        group_by = parse_group_by(q.get("group_by"))
    except BadQuery as exc:
        raise InvalidRequest(str(exc), param="group_by" if "group" in str(exc) else "from") from None
    try:
        rows = await sink.query(start, end, group_by)
    except SinkUnavailable as exc:
        raise LedgerUnavailable(f"the usage store did not answer ({type(exc).__name__}); try again shortly") from exc
    if q.get("format") == "csv":
        return web.Response(text=to_csv(rows, group_by), content_type="text/csv")
    total: dict[str, Any] = {name: sum(int(r[name]) for r in rows) for name in ("requests", *SUM_FIELDS)}
    total["cost_usd"] = format_usd(total["cost_micro_usd"])
    body = {"object": "usage", "from": start, "to": end, "group_by": group_by, "data": rows, "total": total}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
