"""``llm-router usage``: the ledger's totals in a terminal, read straight from the query sink.

It opens the same sink the gateway writes (the first sqlite, redis or
postgres sink in ``ledger.sinks``, as the gateway's ``/v1/usage`` does) and runs the same grouped query as ``GET /v1/usage``, so
the two always agree.
"""

from __future__ import annotations

import sys

import orjson

from router.accounting.sinks import QUERYABLE_KINDS, SinkUnavailable, build_sink
from router.accounting.usage import SUM_FIELDS, BadQuery, format_usd
from router.accounting.usage_api import parse_group_by, parse_window, to_csv
from router.config import RouteTable

TABLE_COLUMNS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "total_tokens", "cost_usd")


async def print_usage(table: RouteTable, since: str, until: str | None, by: str, fmt: str) -> int:
    ledger = table.ledger
    settings = next((s for s in ledger.sinks if s.kind in QUERYABLE_KINDS), None) if ledger else None
    if settings is None:
        print(f"{table.source}: no sqlite, redis or postgres sink under 'ledger:'; nothing to read", file=sys.stderr)
        return 1
    try:
        start, end = parse_window(since, until)
        group_by = parse_group_by(by)
    except BadQuery as exc:
        print(f"llm-router usage: {exc}", file=sys.stderr)
        return 2
    sink = build_sink(settings)
    try:
        await sink.open()
        rows = await sink.query(start, end, group_by)
    except SinkUnavailable as exc:
        print(f"llm-router usage: the {settings.kind} sink did not answer: {exc}", file=sys.stderr)
        return 1
    finally:
        await sink.close()
    if fmt == "json":
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    elif fmt == "csv":
        print(to_csv(rows, group_by), end="")
    else:
        print(render_table(rows, group_by))
    return 0


def render_table(rows: list[dict[str, object]], group_by: list[str]) -> str:
    columns = [*group_by, *TABLE_COLUMNS]
    cells = [[str(r.get(c, "")) if r.get(c, "") != "" else "-" for c in columns] for r in rows]
    total = {c: sum(int(str(r[c])) for r in rows) for c in ("requests", *SUM_FIELDS)}
    footer = ["TOTAL" if i == 0 else "" for i in range(len(group_by))] + [
        str(total[c]) if c != "cost_usd" else format_usd(total["cost_micro_usd"]) for c in TABLE_COLUMNS
    ]
    widths = [max(len(c), *(len(row[i]) for row in [*cells, footer])) for i, c in enumerate(columns)]
    numeric = set(TABLE_COLUMNS)

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if columns[i] in numeric else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    out += [line(["-" * w for w in widths]), line(footer)]
    return "\n".join(out)
