"""Where usage rows are stored.  Every sink is idempotent by request id.

    sqlite.py   the embedded default: one file, WAL mode, queried with SQL
    redis.py    Redis Streams + per-day roll-up counters, for many replicas
    postgres.py one PostgreSQL table shared by every replica, for finance's SQL (asyncpg)
    jsonl.py    one JSON object per line, for log shippers (write-only)

A sink raises ``SinkUnavailable`` when it cannot take a batch; the ledger
then journals the batch and replays it later, so a write may be repeated and
must never count twice.
"""

from __future__ import annotations

from typing import Any, Protocol

from router.accounting.usage import UsageRow
from router.config import SinkSettings

# The kinds that answer queries: /v1/usage and ``llm-router usage`` read the first of these in ``ledger.sinks``.
QUERYABLE_KINDS = ("sqlite", "redis", "postgres")


class SinkUnavailable(Exception):
    pass


class Sink(Protocol):
    name: str
    queryable: bool

    async def open(self) -> None: ...

    async def write(self, rows: list[UsageRow]) -> int:
        """Store rows; return how many were new.  Raise ``SinkUnavailable`` when it cannot."""
        ...

    async def query(self, start: float, end: float, group_by: list[str]) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


def build_sink(settings: SinkSettings) -> Sink:
    if settings.kind == "sqlite":
        from router.accounting.sinks.sqlite import SqliteSink

        return SqliteSink(settings)
    if settings.kind == "redis":
        from router.accounting.sinks.redis import RedisSink

        return RedisSink(settings)
    if settings.kind == "postgres":
        from router.accounting.sinks.postgres import PostgresSink

        return PostgresSink(settings)
    if settings.kind == "jsonl":
        from router.accounting.sinks.jsonl import JsonlSink

        return JsonlSink(settings)
    raise ValueError(f"unknown sink kind {settings.kind!r}")
