"""``llm-router serve --workers N``: N processes on one port, sharing state through Redis.

Each test pins a keep-alive connection to each worker (a session with one
connection, identified by the pid ``/readyz`` reports) so it knows which
process answered every request.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import pytest

from tests.conftest import wait_for

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def one_session_per_worker(url: str, workers: int, timeout: float = 15.0) -> AsyncIterator[dict[int, aiohttp.ClientSession]]:
    """Open single-connection sessions until one is pinned to each of ``workers`` distinct pids.

    The gateway counts as ready when its first worker answers; the others may
    still be starting, and until a worker has bound the port the kernel sends
    it nothing.  So keep drawing, on a deadline, instead of a fixed number of times.
    """
    async with AsyncExitStack() as stack:
        pinned: dict[int, aiohttp.ClientSession] = {}

        async def draw() -> bool:
            # SO_REUSEPORT spreads new connections by their 4-tuple: a fresh source port is a fresh draw.
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)))
            async with session.get(url + "/readyz") as r:
                assert r.status == 200
                pid = (await r.json())["pid"]
            if pid in pinned:
                await session.close()
            else:
                pinned[pid] = session
            return len(pinned) == workers

        try:
            await wait_for(draw, timeout=timeout, interval=0.02)
        except AssertionError:
            raise AssertionError(f"only pids {sorted(pinned)} answered on {url} within {timeout}s; expected {workers} workers") from None
        yield pinned


def _config(redis_url: str, redis_prefix: str, limits: dict[str, int] | None = None) -> dict:
    target = {"provider": "mock", "model": "m", **({"limits": limits} if limits else {})}
    return {
        "state": {"backend": "redis", "url": redis_url, "prefix": redis_prefix},
        "providers": {"mock": {"kind": "mock"}},
        "models": {"chat": {"targets": [target]}},
    }


async def test_two_workers_answer_on_one_port(spawn_gateway, redis_url, redis_prefix):
    gp = await spawn_gateway(_config(redis_url, redis_prefix), args=("--workers", "2"))
    async with one_session_per_worker(gp.url, 2) as pinned:
        assert len(pinned) == 2, f"only pids {sorted(pinned)} answered on port {gp.port}"
        assert gp.proc.pid not in pinned  # the parent supervises; the workers serve
        for pid, session in pinned.items():
            async with session.post(gp.url + "/v1/chat/completions", json=CHAT) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["choices"][0]["message"]["content"]
            async with session.get(gp.url + "/readyz") as r:
                assert (await r.json())["pid"] == pid  # the same keep-alive connection, the same worker


async def test_workers_stop_together_on_sigterm(spawn_gateway, redis_url, redis_prefix):
    import signal

    gp = await spawn_gateway(_config(redis_url, redis_prefix), args=("--workers", "2"))
    async with one_session_per_worker(gp.url, 2) as pinned:
        worker_pids = sorted(pinned)
    gp.send_signal(signal.SIGTERM)
    assert await gp.wait_exit() == 0
    for pid in worker_pids:
        assert _process_state(pid) in (None, "Z"), f"worker {pid} outlived its parent"


def _process_state(pid: int) -> str | None:
    """The state letter in /proc/<pid>/stat ("Z" for a zombie), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


@pytest.mark.skipif(
    importlib.util.find_spec("router.state") is None,
    reason="needs the shared limiter (router/state, the routing branch, issue 3): until it merges, target limits are not enforced",
)
async def test_workers_share_a_limit_through_redis(spawn_gateway, redis_url, redis_prefix):
    rpm = 4
    gp = await spawn_gateway(_config(redis_url, redis_prefix, {"rpm": rpm}), args=("--workers", "2"))
    async with one_session_per_worker(gp.url, 2) as pinned:
        assert len(pinned) == 2
        statuses: dict[int, list[int]] = {pid: [] for pid in pinned}
        # Alternate between the workers: with a limit per process, each would admit rpm on its own.
        for _ in range(rpm):
            for pid, session in pinned.items():
                async with session.post(gp.url + "/v1/chat/completions", json=CHAT) as r:
                    await r.read()
                    statuses[pid].append(r.status)
    admitted = sum(s == 200 for seq in statuses.values() for s in seq)
    assert admitted == rpm, f"{admitted} admitted across two workers with a shared limit of {rpm}/min: {statuses}"
    assert all(any(s == 200 for s in seq) for seq in statuses.values()), statuses  # both workers admitted some
    assert all(s in (200, 429, 503) for seq in statuses.values() for s in seq), statuses
