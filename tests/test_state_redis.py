"""RedisStore against real sockets: key layout and expiry on the real Redis, and a Redis that is gone or silent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from router.config import HealthPolicy, StateSettings
from router.outcome import SkipCause
from router.state.limiter import ScopeLimit
from router.state.redis_store import RedisStore
from router.state.store import Claim, Outcome
from tests.conftest import wait_for
from tests.fakes.upstream import closed_port

CLAIM = Claim("prov/model", (ScopeLimit("target:prov/model", rpm=10, concurrency=3), ScopeLimit("account:prov", tpm=1000)), 50, HealthPolicy())


async def test_keys_are_namespaced_hash_tagged_and_expire(redis_url, redis_prefix):
    client = aioredis.from_url(redis_url)
    store = RedisStore(client, StateSettings(backend="redis", prefix=redis_prefix, timeout=2.0))
    try:
        tag = "{" + redis_prefix + "}"

        async def keys() -> list[str]:
            found = sorted([k.decode() async for k in client.scan_iter(match=f"*{redis_prefix}*")])
            for key in found:
                assert await client.pttl(key) > 0, key  # nothing lives forever
            return found

        admission = await store.admit([CLAIM], lease_ttl=5)
        assert admission.index == 0
        # in flight: counted in both windows, a lease in both scopes
        assert await keys() == sorted([f"{tag}:w:target:prov/model", f"{tag}:w:account:prov", f"{tag}:l:target:prov/model", f"{tag}:l:account:prov"])
        store.report(CLAIM, admission.grant, Outcome("fail", remaining_requests=9, reset_requests=20))
        await store.tasks.drain()
        # reported: the leases are gone; the target's state and health window appear
        assert await keys() == sorted([f"{tag}:t:prov/model", f"{tag}:h:prov/model", f"{tag}:w:target:prov/model", f"{tag}:w:account:prov"])
    finally:
        await store.close()
        await client.aclose()


@pytest.fixture
async def silent_redis() -> AsyncIterator[int]:
    """A socket that accepts connections and never answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_redis_that_refuses_never_holds_a_request():
    await _falls_back_to_local_state(closed_port())


async def test_a_redis_that_never_answers_never_holds_a_request(silent_redis):
    await _falls_back_to_local_state(silent_redis)


async def _falls_back_to_local_state(port: int) -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.1, socket_connect_timeout=0.1)
    store = RedisStore(client, StateSettings(backend="redis", prefix="unused", timeout=0.1))
    try:
        started = time.monotonic()
        admission = await store.admit([CLAIM], lease_ttl=5)
        assert time.monotonic() - started < 1.0  # bounded by state.timeout, whatever the socket does
        assert admission.index == 0 and admission.grant is not None and admission.grant.local
        assert store.redis_errors >= 1
        # One failed call fails that call only; the prober, on its own connection, calls Redis out.
        await wait_for(lambda: store.degraded, timeout=10)
        assert store.probes_failed >= store.outage_probes
        # While degraded, requests use local state at once and limits still hold, per replica.
        for _ in range(9):
            got = await store.admit([CLAIM], lease_ttl=5)
            store.report(CLAIM, got.grant, Outcome("ok"))
        refused = await store.admit([CLAIM], lease_ttl=5)
        assert refused.index is None and [(i, s.cause, s.reason) for i, s in refused.skips] == [(0, SkipCause.LIMIT, "over limit target:prov/model rpm")]
        assert 0 < (refused.skips[0][1].wait or 0) <= 60
    finally:
        await store.close()
        await client.aclose()
