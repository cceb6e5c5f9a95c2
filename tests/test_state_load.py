"""The state store under load and through Redis trouble, against real Redis servers (issue 10).

A full pool waits, a script error fails one call, a busy event loop is not an
outage, a frozen Redis leaves no slot and no money held once it thaws, the
request's entry is all or nothing on both stores, and an rpm limit holds
exactly across two store instances sharing one Redis.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from router.config import HealthPolicy, StateSettings
from router.outcome import HealthEffect
from router.state.connect import open_redis
from router.state.limiter import Reserve, ScopeLimit
from router.state.memory import MemoryStore
from router.state.redis_store import RedisStore
from router.state.store import Claim, Entry, Outcome, StateStore
from tests.conftest import free_port, start_redis_server, wait_for

TARGET = Claim("prov/model", (ScopeLimit("target:prov/model"),), 10, HealthPolicy())


def entry(prefix: str, *, rpm: int | None = None, concurrency: int | None = None, amount: int | None = None, bound: int = 10**12) -> Entry:
    reserve = Reserve((f"{prefix}auth:spend:key:k:total",), amount, (bound,), (0,)) if amount is not None else None
    return Entry((ScopeLimit("key:k", rpm=rpm, concurrency=concurrency),), 10, reserve)


def settings(url: str, prefix: str, **extra: Any) -> StateSettings:
    return StateSettings(backend="redis", url=url, prefix=prefix, **extra)


@pytest.fixture
async def throwaway_redis() -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    port = free_port()
    proc = await start_redis_server(port)
    yield f"redis://127.0.0.1:{port}/0", proc
    if proc.returncode is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        await proc.wait()


@pytest.fixture
async def store_for() -> AsyncIterator[Any]:
    made: list[tuple[StateStore, Any]] = []

    def make(url: str, prefix: str, **extra: Any) -> RedisStore:
        s = settings(url, prefix, **extra)
        client = open_redis(s)
        store = RedisStore(client, s)
        made.append((store, client))
        return store

    yield make
    for store, client in made:
        await store.close()
        await client.aclose()


async def test_a_full_pool_makes_calls_wait_and_never_reads_as_an_outage(store_for, redis_url, redis_prefix):
    store = store_for(redis_url, redis_prefix, pool_size=2, pool_timeout=5.0)
    admissions = await asyncio.gather(*(store.admit([TARGET], 30, entry(redis_prefix, concurrency=1000)) for _ in range(200)))
    assert all(a.index == 0 and a.entry_grant is not None and not a.grant.local for a in admissions)
    assert (store.degraded, store.redis_errors) == (False, 0)


async def test_a_script_error_fails_its_one_call_and_never_the_store(store_for, redis_url, redis_prefix):
    store = store_for(redis_url, redis_prefix)
    client = aioredis.from_url(redis_url)
    try:
        # A budget counter holding text: Redis answers this call with an error (a bug or bad data).
        bad = entry(redis_prefix, amount=5)
        await client.set(bad.reserve.keys[0], "not a number")
        with pytest.raises(Exception, match="budget store"):
            await store.admit([TARGET], 30, bad)
        good = await store.admit([TARGET], 30, entry(redis_prefix, concurrency=10))
        assert good.index == 0 and not good.grant.local
        assert store.degraded is False and store.probes_failed == 0
    finally:
        await client.delete(bad.reserve.keys[0])
        await client.aclose()


async def test_a_busy_event_loop_is_not_an_outage(store_for, redis_url, redis_prefix):
    store = store_for(redis_url, redis_prefix, timeout=0.05)
    calls = [asyncio.ensure_future(store.admit([TARGET], 30, entry(redis_prefix, concurrency=100))) for _ in range(20)]
    await asyncio.sleep(0)  # the pipeline leaves; then this loop is blocked well past state.timeout
    time.sleep(0.3)  # noqa: ASYNC251 -- blocking the loop on purpose: the busy loop is what is tested
    await asyncio.gather(*calls)
    await wait_for(lambda: store._prober is None or store._prober.done(), timeout=5)
    assert store.degraded is False and store.probes_failed == 0


async def test_a_frozen_redis_leaves_no_slot_and_no_reservation_held_once_it_thaws(store_for, throwaway_redis, redis_prefix):
    url, proc = throwaway_redis
    store = store_for(url, redis_prefix, timeout=0.2)
    spend_key = f"{redis_prefix}auth:spend:key:k:total"
    settled = 0

    async def one(i: int) -> int:
        admission = await store.admit([TARGET], 30, entry(redis_prefix, concurrency=1000, amount=100))
        if admission.entry_grant is None:
            return 0
        if admission.grant is not None:
            store.report(TARGET, admission.grant, Outcome(HealthEffect.OK, actual_tokens=5))
        store.release(admission.entry_grant, 5, settle=7)
        return 7

    first = await asyncio.gather(*(one(i) for i in range(50)))
    proc.send_signal(signal.SIGSTOP)
    frozen = asyncio.gather(*(one(i) for i in range(100)), return_exceptions=True)
    await asyncio.sleep(2.0)  # Redis stays frozen this long: the freeze itself is the test
    proc.send_signal(signal.SIGCONT)
    during = await frozen
    settled = sum(first) + sum(r for r in during if isinstance(r, int))
    client = aioredis.from_url(url)
    try:

        async def nothing_held() -> bool:
            leases = [await client.zcard(store.key("l", scope)) for scope in ("key:k", "target:prov/model")]
            spent = int(await client.get(spend_key) or 0)
            return leases == [0, 0] and spent == settled

        await wait_for(nothing_held, timeout=15, interval=0.1)
        assert store._kept == deque_empty()
    finally:
        await client.aclose()


def deque_empty() -> Any:
    from collections import deque

    return deque()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_the_entry_is_all_or_nothing_and_its_release_settles_once(backend, store_for, redis_url, redis_prefix):
    store: StateStore = MemoryStore() if backend == "memory" else store_for(redis_url, redis_prefix)
    key = f"{redis_prefix}auth:spend:key:k:total"
    # A budget that cannot cover the request: refused, nothing counted.
    refused = await store.admit([TARGET], 30, entry(redis_prefix, rpm=5, amount=50, bound=40))
    assert refused.refusal is not None and refused.refusal.limit == "reserve" and refused.refusal.scope == key
    assert refused.index is None and refused.entry_grant is None
    # No admissible claim: nothing counted nor reserved either.
    closed = Claim("prov/closed", (ScopeLimit("target:prov/closed", rpm=1),), 10, HealthPolicy())
    first = await store.admit([closed], 30)
    store.report(closed, first.grant, Outcome(HealthEffect.OK))
    none = await store.admit([closed], 30, entry(redis_prefix, rpm=5, amount=10, bound=40))
    assert none.index is None and none.entry_grant is None and none.skips
    assert await store.spent([key]) == [0]
    # Admitted: counted and reserved; the release settles to the real cost once, however often it is sent.
    ok = await store.admit([TARGET], 30, entry(redis_prefix, rpm=5, amount=30, bound=40))
    assert ok.index == 0 and ok.entry_grant is not None and ok.entry_grant.counts[0].requests == 1
    assert await store.spent([key]) == [30]
    for _ in range(3):
        store.release(ok.entry_grant, 5, settle=12)
    await store.tasks.drain()
    assert await store.spent([key]) == [12]
    # The key's rpm counted the admitted request only: 4 more fit, the fifth is refused by the limit.
    for _ in range(4):
        assert (await store.admit([TARGET], 30, entry(redis_prefix, rpm=5))).entry_grant is not None
    over = await store.admit([TARGET], 30, entry(redis_prefix, rpm=5))
    assert over.refusal is not None and over.refusal.limit == "rpm" and over.index is None
    if backend == "redis":
        client = aioredis.from_url(redis_url)
        await client.delete(key)
        await client.aclose()


async def test_an_rpm_limit_holds_exactly_across_two_replicas_under_concurrent_load(store_for, redis_url, redis_prefix):
    a, b = store_for(redis_url, redis_prefix), store_for(redis_url, redis_prefix)
    for run in range(5):
        limit = 40 + run
        scoped = Entry((ScopeLimit(f"key:run{run}", rpm=limit),), 10, None)
        results = await asyncio.gather(*(store.admit([TARGET], 30, scoped) for store in (a, b) for _ in range(64)))
        assert sum(r.entry_grant is not None for r in results) == limit, run
        assert sum(r.refusal is not None for r in results) == 128 - limit
        assert not a.degraded and not b.degraded
