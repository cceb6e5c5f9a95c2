"""Two gateway processes sharing one real Redis: circuits, limits, cooldowns and quotas are one state.

Each test spawns two ``llm-router serve`` processes with the same route table
(state in Redis under the test's own prefix) in front of fake upstreams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN_HEADERS, free_port, provider_entry, start_redis_server, wait_for
from tests.fakes.upstream import Behaviour, FakeUpstream

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def routes(targets: list[tuple[FakeUpstream, dict[str, Any]]], state: dict[str, Any], provider: dict[str, Any] | None = None, **alias: Any) -> dict[str, Any]:
    return {
        "state": {"backend": "redis", "timeout": 1.0, **state},
        "providers": {f"up{i}": provider_entry(u, **(provider or {})) for i, (u, _) in enumerate(targets)},
        "models": {"chat": {"targets": [{"provider": f"up{i}", "model": f"m{i}", **extra} for i, (_, extra) in enumerate(targets)], **alias}},
    }


async def chat(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str]]:
    async with session.post(url + "/v1/chat/completions", json=CHAT) as r:
        await r.read()
        return r.status, dict(r.headers)


async def admin(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/admin/targets", headers=ADMIN_HEADERS) as r:
        return await r.json()


def target(view: dict[str, Any], key: str) -> dict[str, Any]:
    return next(t for t in view["targets"] if t["target"] == key)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_a_circuit_opened_through_replica_a_is_skipped_by_replica_b(make_upstream, spawn_gateway, redis_url, redis_prefix, session):
    bad, good = await make_upstream("openai"), await make_upstream("openai")
    bad.default = Behaviour(500)
    cfg = routes(
        [(bad, {}), (good, {"priority": 1})],
        {"url": redis_url, "prefix": redis_prefix},
        provider={"health": {"failure_threshold": 3, "cooldown": 60}},
        strategy="priority",
    )
    a, b = await spawn_gateway(cfg), await spawn_gateway(cfg)
    for _ in range(3):
        status, headers = await chat(session, a.url)
        assert status == 200 and headers["x-router-trace"] == "up0/m0=status 500, up1/m1=ok"
    assert len(bad.received) == 3

    async def open_on_b() -> bool:
        return target(await admin(session, b.url), "up0/m0")["circuit"] == "open"

    await wait_for(open_on_b)
    status, headers = await chat(session, b.url)
    assert status == 200
    assert headers["x-router-trace"] == "up0/m0=skipped: open circuit, up1/m1=ok"  # B never saw it fail
    for _ in range(4):
        assert (await chat(session, b.url))[0] == 200
    assert len(bad.received) == 3


async def test_a_shared_rpm_limit_holds_across_replicas_under_concurrent_load(make_upstream, spawn_gateway, redis_url, redis_prefix, session):
    limit = 15
    up = await make_upstream("openai")
    up.default = Behaviour(delay=0.02)
    cfg = routes([(up, {"limits": {"rpm": limit}})], {"url": redis_url, "prefix": redis_prefix})
    a, b = await spawn_gateway(cfg), await spawn_gateway(cfg)
    results = await asyncio.gather(*(chat(session, (a, b)[i % 2].url) for i in range(60)))
    admitted = [h for s, h in results if s == 200]
    refused = [h for s, h in results if s != 200]
    # Stated bound: 0 over the limit while Redis answers (one atomic script admits and counts).
    assert len(up.received) <= limit + 0
    assert len(admitted) == len(up.received) == limit
    assert {s for s, _ in results if s != 200} == {429}  # every candidate over its rate: 429 with Retry-After
    assert all(1 <= int(h["Retry-After"]) <= 60 for h in refused)
    assert all("skipped: over limit target:up0/m0 rpm" in h["x-router-trace"] for h in refused)
    for replica in (a, b):
        state = (await admin(session, replica.url))["state"]
        assert state == {"backend": "redis", "degraded": False, "redis_errors": 0}


async def test_a_429_with_retry_after_moves_both_replicas_away_until_the_cooldown_ends(make_upstream, spawn_gateway, redis_url, redis_prefix, session):
    first, second = await make_upstream("openai"), await make_upstream("openai")
    first.then(Behaviour(429, headers={"Retry-After": "2"}))
    cfg = routes([(first, {}), (second, {"priority": 1})], {"url": redis_url, "prefix": redis_prefix}, strategy="priority")
    a, b = await spawn_gateway(cfg), await spawn_gateway(cfg)
    status, headers = await chat(session, a.url)
    assert status == 200 and headers["x-router-trace"] == "up0/m0=status 429, up1/m1=ok"
    throttled_at = first.received[0].at
    for replica in (a, b, a, b):
        status, headers = await chat(session, replica.url)
        assert status == 200 and headers["x-router-provider"] == "up1"
    assert len(first.received) == 1

    async def back_on_first() -> bool:
        status, headers = await chat(session, b.url)
        return status == 200 and headers["x-router-provider"] == "up0"

    await wait_for(back_on_first, timeout=8, interval=0.1)
    assert first.received[1].at - throttled_at >= 2.0 - 0.05  # not before the Retry-After
    status, headers = await chat(session, a.url)
    assert headers["x-router-provider"] == "up0"


async def test_falling_remaining_requests_shift_traffic_before_any_429(make_upstream, spawn_gateway, redis_url, redis_prefix, session):
    first, second = await make_upstream("openai"), await make_upstream("openai")
    plan = [Behaviour(headers={"x-ratelimit-remaining-requests": str(left), "x-ratelimit-reset-requests": "30s"}) for left in (5, 4, 3, 2, 1, 0)]
    first.then(*plan)
    first.default = Behaviour(429, headers={"x-ratelimit-remaining-requests": "0"})  # what it would answer once out
    cfg = routes([(first, {}), (second, {"priority": 1})], {"url": redis_url, "prefix": redis_prefix}, strategy="priority")
    a, b = await spawn_gateway(cfg), await spawn_gateway(cfg)
    traces = []
    for i in range(20):
        status, headers = await chat(session, (a, b)[i % 2].url)
        assert status == 200
        traces.append(headers["x-router-trace"])
    assert len(first.received) <= len(plan)  # so it never answered 429
    assert not any("429" in t for t in traces)
    assert len(second.received) >= 20 - len(plan)
    assert traces[0] == "up0/m0=ok" and traces[-1].endswith("up1/m1=ok")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await proc.wait()


async def test_redis_stopped_mid_run_keeps_traffic_flowing_and_shared_state_resumes(make_upstream, spawn_gateway, redis_prefix, session):
    port = free_port()  # a throwaway Redis: the shared one on 6379 is never stopped
    redis_proc = await start_redis_server(port)
    try:
        up = await make_upstream("openai")
        cfg = routes([(up, {"limits": {"rpm": 1000}})], {"url": f"redis://127.0.0.1:{port}/0", "prefix": redis_prefix, "timeout": 0.2})
        a, b = await spawn_gateway(cfg), await spawn_gateway(cfg)

        async def requests_seen_by(replica: Any) -> int:
            return int(target(await admin(session, replica.url), "up0/m0")["limits"][0]["requests"])

        for _ in range(3):
            assert (await chat(session, a.url))[0] == 200
        assert await requests_seen_by(b) == 3  # B counts A's requests: the state is shared

        await _stop(redis_proc)
        for i in range(10):
            status, _ = await chat(session, (a, b)[i % 2].url)
            assert status == 200
        for replica in (a, b):
            # A failed call fails that call; the replica's prober calls Redis out after state.outage_probes pings.
            async def degraded(replica: Any = replica) -> bool:
                return (await admin(session, replica.url))["state"]["degraded"] is True

            await wait_for(degraded, timeout=10, interval=0.1)
            state = (await admin(session, replica.url))["state"]
            assert state["degraded"] is True and state["redis_errors"] > 0
            # Logged once (log lines reach the output in batches, so wait for the first).
            await wait_for(lambda replica=replica: any("Redis state unavailable" in line for line in replica.output))
            assert sum("Redis state unavailable" in line for line in replica.output) == 1

        redis_proc = await start_redis_server(port)

        async def both_back() -> bool:
            states = [(await admin(session, r.url))["state"]["degraded"] for r in (a, b)]
            return not any(states)

        await wait_for(both_back, timeout=10, interval=0.1)
        for _ in range(2):
            assert (await chat(session, a.url))[0] == 200
        # The restarted Redis is empty: B sees exactly A's two new requests, through it.
        await wait_for(lambda: _equals(requests_seen_by(b), 2), timeout=5)
        await wait_for(lambda: all(any("Redis state is back" in line for line in r.output) for r in (a, b)))
    finally:
        await _stop(redis_proc)


async def _equals(value: Any, expected: int) -> bool:
    return await value == expected
