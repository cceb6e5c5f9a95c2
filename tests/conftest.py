"""Shared fixtures: fake upstreams, a gateway on a real socket, Redis with a private prefix, PostgreSQL with a private database."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml

from router.config import RouteTable, parse_table
from router.server import RunningServer, start_server
from tests.fakes.upstream import FakeUpstream
from tests.pg_cluster import Cluster, bin_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Every gateway a test starts has an admin API; tests that need it disabled delete the variable.
TEST_ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
ADMIN_HEADERS = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def wait_for(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Wait until ``condition()`` is truthy (awaiting it if it is a coroutine), or fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def without_auth_unless_set(config: dict[str, Any]) -> dict[str, Any]:
    """Tests of other features run with auth off; a test that sets ``auth`` gets exactly what it set."""
    return config if "auth" in config else {**config, "auth": {"enabled": False}}


def table_from(config: dict[str, Any], env: dict[str, str] | None = None) -> RouteTable:
    return parse_table(without_auth_unless_set(config), "test-routes.yaml", env or {})


def provider_entry(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    kind = {"forii": "openai"}.get(upstream.kind, upstream.kind)
    return {"kind": kind, "base_url": upstream.base_url, "api_key": upstream.api_key, **extra}


@pytest.fixture(autouse=True)
def admin_token_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
    return TEST_ADMIN_TOKEN


@pytest.fixture
async def make_upstream() -> AsyncIterator[Callable[..., Awaitable[FakeUpstream]]]:
    started: list[FakeUpstream] = []

    async def make(kind: str, **kwargs: Any) -> FakeUpstream:
        upstream = await FakeUpstream(kind, **kwargs).start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        await upstream.stop()


@pytest.fixture
async def start_gateway() -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    servers: list[RunningServer] = []

    async def start(config: dict[str, Any] | RouteTable, **kwargs: Any) -> RunningServer:
        table = config if isinstance(config, RouteTable) else table_from(config)
        server = await start_server(table, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    if not _redis_answers():
        if os.environ.get("CI") == "true":
            pytest.fail("Redis does not answer on 127.0.0.1:6379 and CI=true: tests that need Redis must not skip")
        pytest.skip("Redis does not answer on 127.0.0.1:6379")
    return REDIS_URL


# One namespace per test run: the end-of-run sweep must never touch another run's keys
# (two checkouts may run their suites against the same Redis at once).
TEST_NAMESPACE = f"llmrtest:{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session", autouse=True)
def sweep_test_keys() -> Iterator[None]:
    """At the end of the run, delete what is left under the tests' own namespace.

    A gateway stopped after its test's ``redis_prefix`` teardown flushes its last
    state reports on the way out, writing a key or two again; they are ours to remove.
    """
    yield
    if not _redis_answers():
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{TEST_NAMESPACE}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; only keys under it are deleted afterwards."""
    import redis.asyncio as aioredis

    prefix = f"{TEST_NAMESPACE}{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayProcess:
    """A real ``llm-router serve`` process, its port and everything it printed."""

    proc: asyncio.subprocess.Process
    port: int
    config_path: Path
    output: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode("utf-8", "replace").rstrip("\n"))


async def _ready(url: str, pid: int | None = None) -> bool:
    """Ready, and (given ``pid``) answered by that process: a free port can be taken by another in between."""
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=1)) as r:
            return r.status == 200 and (pid is None or (await r.json()).get("pid") == pid)
    except (TimeoutError, aiohttp.ClientError):
        return False


@pytest.fixture
async def spawn_gateway(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[GatewayProcess]]]:
    """Start ``python -m router serve`` as a separate process on a free port; wait until ready."""
    started: list[GatewayProcess] = []

    async def spawn(config: dict[str, Any], *, env: dict[str, str] | None = None, args: tuple[str, ...] = (), wait_ready: bool = True) -> GatewayProcess:
        path = tmp_path / f"routes-{len(started)}.yaml"
        path.write_text(yaml.safe_dump(without_auth_unless_set(config)))
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router",
            "serve",
            "--config",
            str(path),
            "--port",
            str(port),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=str(PROJECT_ROOT),
        )
        gp = GatewayProcess(proc, port, path)
        assert proc.stdout is not None
        gp.reader = asyncio.create_task(_collect(proc.stdout, gp.output))
        started.append(gp)
        if wait_ready:
            try:
                # With --workers the answering processes are the parent's children.
                pid = None if "--workers" in args else proc.pid
                await wait_for(lambda: _ready(gp.url, pid), timeout=20, interval=0.05)
            except AssertionError:
                raise AssertionError("gateway process did not become ready; it printed:\n" + "\n".join(gp.output)) from None
        return gp

    yield spawn
    for gp in started:
        if gp.proc.returncode is None:
            gp.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(gp.proc.wait(), 10)
            except TimeoutError:
                gp.proc.kill()
                await gp.proc.wait()
        if gp.reader is not None:
            await gp.reader


async def start_redis_server(port: int, workdir: Path | None = None) -> asyncio.subprocess.Process:
    """A throwaway redis-server of the test's own on ``port``: never the shared one on 6379.

    With ``workdir`` it persists (append-only, fsync always), so a restart keeps its data.
    """
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed and CI=true")
        pytest.skip("redis-server is not installed")
    persistence = ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir)] if workdir else ["--appendonly", "no"]
    proc = await asyncio.create_subprocess_exec(
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        *persistence,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def answers() -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.write(b"PING\r\n")
        ok = (await reader.read(16)).startswith(b"+PONG")
        writer.close()
        await writer.wait_closed()
        return ok

    await wait_for(answers, timeout=10, interval=0.05)
    return proc


# --------------------------------------------------------------------------
# PostgreSQL: ./dev test starts a throwaway server and exports its DSN.


def _without_postgres(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} and CI=true: tests that need PostgreSQL must not skip")
    pytest.skip(reason)


def with_database(dsn: str, database: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


async def _pg_execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The DSN of a database of this test session's own, on the server ./dev test started; dropped at the end."""
    base = os.environ.get("ROUTER_TEST_POSTGRES_DSN")
    if not base:
        _without_postgres("ROUTER_TEST_POSTGRES_DSN is not set (./dev test starts a PostgreSQL and sets it)")
    assert base is not None
    database = f"llmr_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_execute(base, f"CREATE DATABASE {database}"))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _without_postgres(f"PostgreSQL at ROUTER_TEST_POSTGRES_DSN does not answer ({type(exc).__name__})")
    yield with_database(base, database)
    asyncio.run(_pg_execute(base, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))


@dataclass
class PgLedger:
    """A schema of one test's own in the session's database: a postgres sink pointed at it, and a way to look inside."""

    dsn: str
    schema: str

    def sink(self, **extra: Any) -> dict[str, Any]:
        return {"kind": "postgres", "dsn": self.dsn, "db_schema": self.schema, **extra}

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def fetch_in_schema(self, sql: str) -> list[asyncpg.Record]:
        """``sql`` as a person would type it (``FROM usage``), with the test's schema first on the search path."""
        conn = await asyncpg.connect(self.dsn, timeout=10, server_settings={"search_path": self.schema})
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()


@pytest.fixture
async def pg_ledger(postgres_dsn: str) -> AsyncIterator[PgLedger]:
    pg = PgLedger(postgres_dsn, f"t_{uuid.uuid4().hex[:12]}")
    yield pg
    await _pg_execute(postgres_dsn, f'DROP SCHEMA IF EXISTS "{pg.schema}" CASCADE')


@pytest.fixture
async def pg_cluster() -> AsyncIterator[Cluster]:
    """A PostgreSQL server of the test's own (started), for tests that stop and restart it: never the session's."""
    if bin_dir() is None:
        _without_postgres("pg_ctl and initdb are not installed")
    cluster = await asyncio.to_thread(Cluster.create)
    try:
        await asyncio.to_thread(cluster.start)
        yield cluster
    finally:
        await asyncio.to_thread(cluster.remove)
