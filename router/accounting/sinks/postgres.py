"""The PostgreSQL sink: one ``usage`` table, shared by every replica, that finance queries with SQL.

Why asyncpg: it is pure asyncio (no thread per connection, nothing blocks
the event loop the requests run on), it speaks PostgreSQL's binary protocol
(a batch of 500 rows goes as a handful of typed arrays in one round trip, and
prepared statements are cached per connection), it batches natively
(``executemany``, ``COPY``, and arrays for ``unnest``, used here), and it is
well kept (MagicStack, releases for every new Python and PostgreSQL).
psycopg 3 would do too; asyncpg is the faster of the two and has no libpq to
install.

Off the request path like every sink: the ledger's writer task calls
``write`` with a batch, and when PostgreSQL is down (refused, frozen, a
failover in progress) the call raises ``SinkUnavailable`` within
``timeout`` seconds and the ledger journals the batch and replays it later.
A batch is one statement::

    INSERT INTO usage (...) SELECT ... FROM unnest($1::float8[], ...) ON CONFLICT (request_id) DO NOTHING

so it is atomic, and a replay that repeats rows counts nothing twice.

The schema is migrated by the gateway at start (and by ``llm-router ledger
migrate``): ``schema_version`` records each migration applied, and
``MIGRATIONS`` below is the list of them, as data; a migration runs in a
transaction under an advisory lock, so replicas starting together apply it
once.  If PostgreSQL is down at start, the first write that reaches it
migrates first.

Compact rows: only what the request did is stored, fixed-width columns first
(no alignment padding); ``day`` and ``first_token_at`` are not stored (they
are ``started_at`` in UTC and ``started_at + ttft_ms``); metadata and tags
are ``jsonb``; no model map or price table is repeated per row (the price
that applied is named by ``price_version``).  Indexes: a BRIN on
``started_at`` (tiny, for time ranges over an append-mostly table) and
B-trees on ``(team, started_at)`` and ``(model, started_at)``.

The DSN is a ``Secret`` (write ``${LEDGER_DSN}`` in routes.yaml): every
message this module produces names the host, port and database, never the
password, and driver errors are scrubbed of it before they are raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from router.accounting.sinks import SinkUnavailable
from router.accounting.usage import SUM_FIELDS, UsageRow, check_group_by, exact_text, finish_groups, utc_day
from router.config import SinkSettings
from router.secrets import Secret, scrub

log = logging.getLogger("router.ledger")

# What a PostgreSQL outage looks like from asyncpg: a server error, a dropped or
# refused connection, a connect or statement timeout.
DOWN = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

# (column, type, nullable): the table's columns in order, fixed-width first.  Each is a UsageRow field.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("started_at", "timestamptz", False),
    ("ended_at", "timestamptz", False),
    ("cost_micro_usd", "bigint", False),
    ("prompt_tokens", "integer", False),
    ("cached_tokens", "integer", False),
    ("cache_write_tokens", "integer", False),
    ("completion_tokens", "integer", False),
    ("reasoning_tokens", "integer", False),
    ("total_tokens", "integer", False),
    ("latency_ms", "real", False),
    ("overhead_ms", "real", False),
    ("upstream_ms", "real", True),
    ("ttft_ms", "real", True),
    ("status", "text", False),  # the HTTP status as text, or stream_error
    ("attempts", "smallint", False),
    ("retries", "smallint", False),
    ("failovers", "smallint", False),
    ("stream", "boolean", False),
    ("client_disconnected", "boolean", False),
    ("usage_estimated", "boolean", False),
    ("request_id", "text", False),
    ("team", "text", True),
    ("key_id", "text", True),
    ("user", "text", True),
    ("operation", "text", False),
    ("requested_model", "text", True),
    ("alias", "text", True),
    ("provider", "text", True),
    ("model", "text", True),
    ("error_class", "text", True),
    ("price_version", "text", True),
    ("cost_micro_usd_exact", "numeric", True),
    ("metadata", "jsonb", False),
    ("tags", "jsonb", False),
)
NAMES = tuple(name for name, _, _ in COLUMNS)
TYPES = {name: kind for name, kind, _ in COLUMNS}
# How each column travels in the INSERT's arrays, and how the SELECT turns the array element into the column.
_PARAM = {"timestamptz": "float8", "jsonb": "text", "numeric": "text", "smallint": "int2", "integer": "int4", "bigint": "int8", "real": "float4"}
_FROM_PARAM = {"timestamptz": "to_timestamp(u.{c})", "jsonb": "u.{c}::jsonb", "numeric": "u.{c}::numeric"}
_TO_PYTHON = {"timestamptz": "extract(epoch FROM {c})::float8", "numeric": "{c}::text", "jsonb": "{c}::text"}


def q(name: str) -> str:
    """A quoted identifier (``user`` is a reserved word in PostgreSQL)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]  # ``{s}`` is the quoted schema


def _create_usage() -> str:
    cols = [f"{q(name)} {kind}{'' if nullable else ' NOT NULL'}" for name, kind, nullable in COLUMNS]
    return "CREATE TABLE {s}.usage (" + ", ".join(cols) + ", PRIMARY KEY (request_id))"


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the usage table; indexes for time range, time range + team, time range + model",
        (
            _create_usage(),
            "CREATE INDEX usage_started_at_brin ON {s}.usage USING brin (started_at)",
            "CREATE INDEX usage_team_started_at ON {s}.usage (team, started_at)",
            "CREATE INDEX usage_model_started_at ON {s}.usage (model, started_at)",
        ),
    ),
)
LATEST = MIGRATIONS[-1].version


def _insert_sql(schema: str) -> str:
    arrays = ", ".join(f"${i + 1}::{_PARAM.get(kind, kind)}[]" for i, (_, kind, _) in enumerate(COLUMNS))
    values = ", ".join(_FROM_PARAM.get(kind, "u.{c}").format(c=q(name)) for name, kind, _ in COLUMNS)
    return (
        f"INSERT INTO {schema}.usage ({', '.join(q(n) for n in NAMES)}) "
        f"SELECT {values} FROM unnest({arrays}) AS u({', '.join(q(n) for n in NAMES)}) "
        "ON CONFLICT (request_id) DO NOTHING"
    )


def _no_nul(value: Any) -> Any:
    """PostgreSQL's text and jsonb refuse U+0000; a client's metadata may hold one.  Dropped, so one
    such row never blocks its batch (and the journal behind it) for good."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    return value


def _arrays(rows: list[UsageRow]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for name, kind, _ in COLUMNS:
        values = [getattr(r, name) for r in rows]
        if kind == "jsonb":
            values = [orjson.dumps(_no_nul(v)).decode() for v in values]
        elif kind == "text":
            values = [_no_nul(v) for v in values]
        out.append(values)
    return out


def _group_expr(key: str, params: list[Any]) -> str:
    if key.startswith("tag:"):
        params.append(key[4:])
        return f"COALESCE(metadata ->> ${len(params)}::text, '')"
    if key == "day":
        return "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    if key == "status":
        return "status::text"
    return f"COALESCE({q(key)}, '')"


def describe(dsn: str) -> str:
    """host:port/database of a DSN, for messages: never its user or password."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        host = parts.hostname or "localhost"
        return f"{host}:{parts.port or 5432}{parts.path or '/'}"
    except ValueError:  # several hosts, or a port that is not a number
        return "postgres"


class PostgresSink:
    queryable = True

    def __init__(self, settings: SinkSettings) -> None:
        if settings.dsn is None:
            raise ValueError("a postgres sink needs a dsn")
        self.name = settings.name
        self.settings = settings
        self._dsn = settings.dsn
        try:
            password = urllib.parse.urlsplit(self._dsn.reveal()).password
        except ValueError:
            password = None
        secrets = [self._dsn]
        if password:
            secrets += [Secret(password), Secret(urllib.parse.unquote(password))]
        self._secrets = tuple(secrets)
        self.schema = q(settings.db_schema)
        self.where = f"postgres sink {self.name} ({describe(self._dsn.reveal())}, schema {settings.db_schema})"
        self._insert = _insert_sql(self.schema)
        self._pool: asyncpg.Pool | None = None
        self._migrated = False
        self._migrating = asyncio.Lock()

    def _down(self, exc: BaseException) -> SinkUnavailable:
        text = scrub(str(exc) or type(exc).__name__, self._secrets)
        return SinkUnavailable(f"{self.where}: {type(exc).__name__}: {text}")

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            # min_size 0: creating the pool connects nowhere, so a gateway starts while PostgreSQL is down.
            self._pool = await asyncpg.create_pool(
                self._dsn.reveal(),
                min_size=0,
                max_size=self.settings.pool_size,
                timeout=self.settings.timeout,  # connect
                command_timeout=self.settings.timeout,
                max_inactive_connection_lifetime=60.0,
                server_settings={"application_name": "llm-router ledger"},
            )
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, taken and given back within ``timeout`` each: handing back a connection
        whose statement timed out waits for the server, and a frozen one must not hold a write forever
        (past the timeout asyncpg closes that connection instead)."""
        pool = await self._connection_pool()
        conn = await pool.acquire(timeout=self.settings.timeout)
        try:
            yield conn
        finally:
            await pool.release(conn, timeout=self.settings.timeout)

    async def open(self) -> None:
        """Connect and migrate; PostgreSQL down at start is a sink that is down (the ledger journals)."""
        try:
            await self.migrate()
        except SinkUnavailable as exc:
            log.warning("%s: not migrated at start (%s); the first write that reaches it migrates", self.where, exc)

    async def migrate(self) -> tuple[int, int]:
        """Apply every migration the schema lacks; (version before, version after)."""
        try:
            async with self._migrating, self._connection() as conn:
                versions = await self._migrate(conn)
        except DOWN as exc:
            raise self._down(exc) from exc
        self._migrated = True
        return versions

    async def _migrate(self, conn: asyncpg.Connection) -> tuple[int, int]:
        s = self.schema
        timeout = max(self.settings.timeout, self.settings.query_timeout)  # a migration may build indexes
        async with conn.transaction():
            # One replica at a time applies migrations to this schema; the others wait, then find them applied.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"llm-router ledger {self.settings.db_schema}", timeout=timeout)
            if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self.settings.db_schema):
                await conn.execute(f"CREATE SCHEMA {s}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_version "
                "(version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            before = int(await conn.fetchval(f"SELECT COALESCE(max(version), 0) FROM {s}.schema_version"))
            if before > LATEST:
                log.warning("%s: schema version %d is newer than this gateway's %d (a newer gateway migrated it)", self.where, before, LATEST)
            for migration in MIGRATIONS:
                if migration.version <= before:
                    continue
                for statement in migration.statements:
                    await conn.execute(statement.format(s=s), timeout=timeout)
                await conn.execute(f"INSERT INTO {s}.schema_version (version, description) VALUES ($1, $2)", migration.version, migration.description)
                log.info("%s: applied migration %d (%s)", self.where, migration.version, migration.description)
        return before, max(before, LATEST)

    async def write(self, rows: list[UsageRow]) -> int:
        if not rows:
            return 0
        if not self._migrated:
            await self.migrate()
        try:
            async with self._connection() as conn:
                status = await conn.execute(self._insert, *_arrays(rows), timeout=self.settings.timeout)
        except DOWN as exc:
            raise self._down(exc) from exc
        return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <new rows>"

    async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        if not self._migrated:
            await self.migrate()
        try:
            async with self._connection() as conn:
                return list(await conn.fetch(sql, *params, timeout=self.settings.query_timeout))
        except DOWN as exc:
            raise self._down(exc) from exc

    async def query(self, start: float, end: float, group_by: list[str]) -> list[dict[str, Any]]:
        group_by = check_group_by(group_by)
        params: list[Any] = []
        selects = [_group_expr(key, params) for key in group_by]
        sums = ", ".join(f"COALESCE(SUM({q(name)}), 0)::bigint" for name in SUM_FIELDS)
        params += [start, end]
        sql = (
            f"SELECT {''.join(s + ', ' for s in selects)}COUNT(*), {sums} FROM {self.schema}.usage "
            f"WHERE started_at >= to_timestamp(${len(params) - 1}) AND started_at < to_timestamp(${len(params)})"
        )
        if selects:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(selects)))
        groups = []
        for record in await self._fetch(sql, *params):
            values = list(record.values())
            keys = dict(zip(group_by, values[: len(group_by)], strict=True))
            numbers = [int(v) for v in values[len(group_by) :]]
            if not group_by and numbers[0] == 0:
                continue
            groups.append((keys, {"requests": numbers[0], **dict(zip(SUM_FIELDS, numbers[1:], strict=True))}))
        return finish_groups(groups)

    async def rows(self, start: float, end: float) -> list[UsageRow]:
        """Every stored row in the window (for tests and exports)."""
        selects = ", ".join(_TO_PYTHON.get(kind, "{c}").format(c=q(name)) for name, kind, _ in COLUMNS)
        sql = f"SELECT {selects} FROM {self.schema}.usage WHERE started_at >= to_timestamp($1) AND started_at < to_timestamp($2)"
        out = []
        for record in await self._fetch(sql, start, end):
            data = dict(zip(NAMES, record.values(), strict=True))
            data["metadata"], data["tags"] = orjson.loads(data["metadata"]), orjson.loads(data["tags"])
            if data["cost_micro_usd_exact"] is not None:
                data["cost_micro_usd_exact"] = exact_text(Decimal(data["cost_micro_usd_exact"]))
            ttft = data["ttft_ms"]
            out.append(UsageRow(**data, day=utc_day(data["started_at"]), first_token_at=data["started_at"] + ttft / 1000 if ttft is not None else None))
        return out

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.settings.timeout)
        except (TimeoutError, *DOWN):
            pool.terminate()  # a frozen server must not hold the shutdown
