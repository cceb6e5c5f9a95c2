"""The ledger's SIGKILL bound while a sink is down: every answered request is on disk within ``flush_interval``.

A real gateway process writes to a Redis sink that stops answering (a
redis-server frozen with SIGSTOP, so every call hangs until its timeout, or a
port nobody listens on).  Requests keep coming; within 2 x ``flush_interval``
of the last answer every record must be in the sink's journal, the process
is killed with SIGKILL, and the next start replays the journal into Redis.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import free_port, start_redis_server, wait_for

FLUSH_INTERVAL = 0.25


def journaled_ids(journal_dir: Path) -> set[str]:
    ids: set[str] = set()
    for path in journal_dir.glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                ids.add(orjson.loads(line)["request_id"])
            except (ValueError, KeyError):
                pass  # a torn last line: the kill may land mid-write
    return ids


async def send(session: aiohttp.ClientSession, url: str, request_id: str) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(url + "/v1/chat/completions", json=body, headers={"x-request-id": request_id}) as r:
        assert r.status == 200, await r.text()
        await r.read()


async def stream_ids(url: str, key: str) -> set[str]:
    client = aioredis.from_url(url)
    try:
        entries = await client.xrange(key, "-", "+")
    finally:
        await client.aclose()
    return {orjson.loads(fields[b"row"])["request_id"] for _, fields in entries}


@pytest.mark.parametrize("outage", ["frozen", "refused"])
async def test_sigkill_while_the_redis_sink_is_down_loses_nothing_older_than_the_flush_interval(spawn_gateway, tmp_path, outage):
    port = free_port()
    (tmp_path / "redis").mkdir()
    redis = await start_redis_server(port, tmp_path / "redis") if outage == "frozen" else None
    url = f"redis://127.0.0.1:{port}/0"
    journal_dir = tmp_path / "journal"
    config: dict[str, Any] = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "mock", "model": "m", "price": {"input": 1, "output": 2, "version": "v"}}]}},
        # Each call to a frozen Redis hangs for the whole timeout; retries come often, so one is nearly always in flight.
        "ledger": {
            "sinks": [{"kind": "redis", "url": url, "prefix": "killtest", "timeout": 1.0}],
            "journal_dir": str(journal_dir),
            "flush_interval": FLUSH_INTERVAL,
            "retry_interval": 0.05,
        },
    }
    try:
        gp = await spawn_gateway(config)
        ids: list[str] = []
        async with aiohttp.ClientSession() as s:
            if redis is not None:
                await send(s, gp.url, "before-freeze")
                await wait_for(lambda: stream_ids(url, "killtest:usage:stream"), timeout=5)
                redis.send_signal(signal.SIGSTOP)
                # The batch in flight when the sink stops answering: flush_interval in the buffer, flush_interval for the sink.
                ids.append("stops-answering")
                await send(s, gp.url, ids[-1])
                await wait_for(lambda: journaled_ids(journal_dir) >= set(ids), timeout=3 * FLUSH_INTERVAL, interval=0.01)
            # Known down: each record reaches the journal within flush_interval (twice, for scheduling slack),
            # even while a retry of the sink hangs for its whole timeout.
            for i in range(12):
                ids.append(f"down-{i}")
                await send(s, gp.url, ids[-1])
                await wait_for(lambda: journaled_ids(journal_dir) >= set(ids), timeout=2 * FLUSH_INTERVAL, interval=0.01)
            burst = [f"burst-{i}" for i in range(30)]
            await asyncio.gather(*(send(s, gp.url, request_id) for request_id in burst))
            ids += burst
        await wait_for(lambda: journaled_ids(journal_dir) >= set(ids), timeout=2 * FLUSH_INTERVAL, interval=0.01)
        gp.send_signal(signal.SIGKILL)
        assert await gp.wait_exit() == -signal.SIGKILL
        assert journaled_ids(journal_dir) >= set(ids), "a record journaled before the kill is gone after it"

        # The next start replays the journal into Redis once it answers.
        if redis is None:
            redis = await start_redis_server(port, tmp_path / "redis")
        else:
            redis.send_signal(signal.SIGCONT)
        second = await spawn_gateway(config)
        await wait_for(lambda: _has_all(url, set(ids)), timeout=15, interval=0.1)
        await wait_for(lambda: not journaled_ids(journal_dir), timeout=10, interval=0.05)
        second.send_signal(signal.SIGTERM)
        assert await second.wait_exit() == 0
    finally:
        if redis is not None and redis.returncode is None:
            redis.send_signal(signal.SIGCONT)
            redis.terminate()
            await asyncio.wait_for(redis.wait(), 10)


async def _has_all(url: str, ids: set[str]) -> bool:
    return await stream_ids(url, "killtest:usage:stream") >= ids
