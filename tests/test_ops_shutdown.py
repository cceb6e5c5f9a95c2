"""Graceful shutdown: SIGTERM stops new connections, lets requests in flight finish, accounts them, exits 0."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from router.app import create_app
from router.keys import GATEWAY
from tests.conftest import _ready, table_from, wait_for
from tests.fakes.upstream import Behaviour
from tests.ops_support import JSON_LOGS, chat, events, routes


async def test_sigterm_drains_twenty_requests_in_flight(make_upstream, spawn_gateway, tmp_path):
    upstream = await make_upstream("openai")
    gate = asyncio.Event()
    upstream.default = Behaviour(gate=gate)  # every answer waits for the gate: all 20 are in flight at SIGTERM
    grace = 20.0
    db = tmp_path / "usage.db"
    # A long flush interval: the records reach SQLite only through the shutdown flush.
    ledger = {"sinks": [{"kind": "sqlite", "path": str(db)}], "journal_dir": str(tmp_path / "journal"), "flush_interval": 60}
    gp = await spawn_gateway({**routes(upstream, "m", shutdown_grace=grace), "ledger": ledger}, env=JSON_LOGS)
    ids = [f"drain-{i:02d}" for i in range(20)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        calls = [asyncio.create_task(chat(session, gp.url, stream=i % 2 == 0, request_id=rid)) for i, rid in enumerate(ids)]
        await wait_for(lambda: len(upstream.received) == 20)

        gp.send_signal(signal.SIGTERM)
        draining = (await wait_for(lambda: events(gp, "draining")))[0]
        assert draining["open_connections"] >= 20 and draining["grace_seconds"] == grace
        assert not await _ready(gp.url)  # no new connection is taken
        assert not any(call.done() for call in calls)

        gate.set()
        results = await asyncio.gather(*calls)
    for i, (status, headers, text) in enumerate(results):
        assert status == 200, text
        assert headers["x-request-id"] == ids[i]
        if i % 2 == 0:
            assert text.rstrip().endswith("data: [DONE]")
    assert await gp.wait_exit(timeout=grace) == 0
    assert gp.reader is not None
    await gp.reader

    # Accounted: one ledger record and one request log line each, with its usage.
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT request_id, completion_tokens FROM usage"))
    assert sorted(rows) == ids and all(tokens > 0 for tokens in rows.values())
    accounted = {line["request_id"]: line for line in events(gp, "request")}
    assert sorted(accounted) == ids
    assert all(line["status"] == 200 and line["completion_tokens"] > 0 for line in accounted.values())
    order = [line["event"] for line in events(gp, "draining") + events(gp, "stopped") + events(gp, "shutdown")]
    assert order == ["draining", "stopped", "shutdown"]


async def test_a_stream_that_outlives_the_grace_is_cut_and_the_process_still_exits_0(make_upstream, spawn_gateway):
    upstream = await make_upstream("openai")
    upstream.default = Behaviour(gate=asyncio.Event())  # never set
    gp = await spawn_gateway(routes(upstream, "m", shutdown_grace=0.3), env=JSON_LOGS)
    async with aiohttp.ClientSession() as session:
        stuck = asyncio.create_task(chat(session, gp.url, stream=True, request_id="stuck"))
        await wait_for(upstream.stream_started.is_set)
        gp.send_signal(signal.SIGTERM)
        assert await gp.wait_exit(timeout=10) == 0
        try:
            status, _, text = await stuck
        except aiohttp.ClientPayloadError:
            pass  # the connection was closed under a chunked body: also a cut stream
        else:
            assert status == 200 and "[DONE]" not in text
    assert gp.reader is not None
    await gp.reader
    assert [line["request_id"] for line in events(gp, "request")] == ["stuck"]


async def test_each_resource_closes_in_its_own_context_after_those_that_need_it_even_past_a_failing_one():
    # aiohttp closes cleanup contexts in reverse: what opened last closes first.
    app = create_app(table_from({"providers": {"m": {"kind": "mock"}}, "models": {"chat": {"targets": [{"provider": "m", "model": "x"}]}}}))
    gateway = app[GATEWAY]
    seen: list[str] = []

    async def needs_the_session(app: web.Application) -> AsyncIterator[None]:
        yield
        seen.append(f"flush, session open: {gateway.transport.is_open}")

    async def failing(app: web.Application) -> AsyncIterator[None]:
        yield
        raise RuntimeError("a broken context")

    app.cleanup_ctx.extend([needs_the_session, failing])
    runner = web.AppRunner(app)
    await runner.setup()
    assert gateway.ready and gateway.transport.is_open
    with pytest.raises(Exception, match="broken context"):
        await runner.cleanup()
    assert seen == ["flush, session open: True"]
    assert not gateway.transport.is_open and not gateway.ready  # the others still closed
