"""The SQLite sink: the embedded default.  One file, WAL mode, ``INSERT OR IGNORE`` by request id.

sqlite3 blocks, so every call runs on one dedicated worker thread (one
connection, used serially); the event loop only awaits it.  A locked or
unwritable database raises ``SinkUnavailable`` after ``timeout`` seconds.
Queries group in SQL; ``tag:<key>`` reads the JSON metadata column.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from router.accounting.sinks import SinkUnavailable
from router.accounting.usage import SUM_FIELDS, UsageRow, check_group_by, finish_groups
from router.config import SinkSettings

_JSON_COLUMNS = frozenset({"metadata", "tags"})
_BOOL_COLUMNS = frozenset({"stream", "client_disconnected", "usage_estimated"})
_TYPES = {"int": "INTEGER", "float": "REAL", "bool": "INTEGER", "str": "TEXT"}
COLUMNS = [f.name for f in fields(UsageRow)]


def _column_type(annotation: Any) -> str:
    text = str(annotation)
    for name, sql in _TYPES.items():
        if text.startswith(name):
            return sql
    return "TEXT"


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS usage ("
    + ", ".join(f"{f.name} {_column_type(f.type)}{' PRIMARY KEY' if f.name == 'request_id' else ''}" for f in fields(UsageRow))
    + ")"
)


def _params(row: UsageRow) -> tuple[Any, ...]:
    out: list[Any] = []
    for name in COLUMNS:
        value = getattr(row, name)
        out.append(orjson.dumps(value).decode() if name in _JSON_COLUMNS else value)
    return tuple(out)


def _group_expr(key: str) -> tuple[str, list[Any]]:
    if key.startswith("tag:"):
        return "COALESCE(json_extract(metadata, ?), '')", [f'$."{key[4:]}"']
    return f"COALESCE(CAST({key} AS TEXT), '')", []


class SqliteSink:
    queryable = True

    def __init__(self, settings: SinkSettings) -> None:
        self.name = settings.name
        self.path = settings.path
        self.timeout = settings.timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ledger-{self.name}")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, OSError) as exc:
            raise SinkUnavailable(f"sqlite {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash; WAL keeps it consistent
                db.execute(SCHEMA)
                # A file made by an older gateway lacks the columns added since (cost_micro_usd_exact): add them.
                have = {row[1] for row in db.execute("PRAGMA table_info(usage)")}
                for f in fields(UsageRow):
                    if f.name not in have:
                        db.execute(f"ALTER TABLE usage ADD COLUMN {f.name} {_column_type(f.type)}")
                db.execute("CREATE INDEX IF NOT EXISTS usage_started_at ON usage(started_at)")
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        return self._db

    async def open(self) -> None:
        try:
            await self._run(self._connect)
        except SinkUnavailable:
            pass  # a locked file at start-up is a sink that is down: the ledger journals until it answers

    def _write(self, rows: list[UsageRow]) -> int:
        db = self._connect()
        sql = f"INSERT OR IGNORE INTO usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            db.executemany(sql, [_params(r) for r in rows])
            written = db.total_changes - before
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return written

    async def write(self, rows: list[UsageRow]) -> int:
        return int(await self._run(self._write, rows))

    def _query(self, start: float, end: float, group_by: list[str]) -> list[dict[str, Any]]:
        db = self._connect()
        selects, params = [], []
        for key in group_by:
            expr, p = _group_expr(key)
            selects.append(expr)
            params.extend(p)
        sums = ", ".join(f"COALESCE(SUM({name}), 0)" for name in SUM_FIELDS)
        sql = f"SELECT {''.join(s + ', ' for s in selects)}COUNT(*), {sums} FROM usage WHERE started_at >= ? AND started_at < ?"
        params.extend([start, end])
        if selects:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(selects)))
        groups = []
        for values in db.execute(sql, params):
            keys = dict(zip(group_by, values[: len(group_by)], strict=True))
            numbers = values[len(group_by) :]
            if not group_by and numbers[0] == 0:
                continue
            groups.append((keys, {"requests": numbers[0], **dict(zip(SUM_FIELDS, numbers[1:], strict=True))}))
        return finish_groups(groups)

    async def query(self, start: float, end: float, group_by: list[str]) -> list[dict[str, Any]]:
        return list(await self._run(self._query, start, end, check_group_by(group_by)))

    def _rows(self, start: float, end: float) -> list[UsageRow]:
        db = self._connect()
        out = []
        for values in db.execute(f"SELECT {', '.join(COLUMNS)} FROM usage WHERE started_at >= ? AND started_at < ?", (start, end)):
            data = dict(zip(COLUMNS, values, strict=True))
            for name in _JSON_COLUMNS:
                data[name] = orjson.loads(data[name])
            for name in _BOOL_COLUMNS:
                data[name] = bool(data[name])
            out.append(UsageRow(**data))
        return out

    async def rows(self, start: float, end: float) -> list[UsageRow]:
        """Every stored row in the window (for tests and exports)."""
        return list(await self._run(self._rows, start, end))

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def close(self) -> None:
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)
