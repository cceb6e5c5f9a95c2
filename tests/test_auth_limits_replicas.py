"""Key and team rpm, tpm and concurrency across two gateway processes sharing one real Redis.

Stated bound (README, Access control): while Redis answers, no limit is
exceeded by even one request: one Lua call checks and counts every scope of
a request, so concurrent requests on different replicas cannot both take the
last slot.  Each test runs both scopes on one pair of replicas: key A's own
limit, then team ``web``'s limit shared by keys B and C.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.conftest import provider_entry, wait_for
from tests.fakes.upstream import Behaviour
from tests.test_auth_limits import CHAT, ESTIMATE, KEY_A, KEY_B, RATELIMIT, TOKEN_HEADERS, chat

KEY_C = "limits-key-c-0123456789abcdef"
SCOPES = ("key", "team")


def replicas_config(upstream: Any, redis_url: str, redis_prefix: str, limits: dict[str, int]) -> dict[str, Any]:
    """Key A carries ``limits`` itself (alone on its team); team ``web`` carries them for keys B and C."""
    return {
        # Generous timeout: two processes and a burst on a 2-core box must not drop to local state.
        "state": {"backend": "redis", "url": redis_url, "prefix": redis_prefix, "timeout": 2.0},
        "providers": {"forii": provider_entry(upstream)},
        "models": {"chat": {"targets": [{"provider": "forii", "model": "forii/deepseek-v3"}]}},
        "auth": {
            "teams": {"solo": {}, "web": {"limits": limits}},
            "keys": {"a": {"key": KEY_A, "team": "solo", "limits": limits}, "b": {"key": KEY_B, "team": "web"}, "c": {"key": KEY_C, "team": "web"}},
        },
    }


async def two_replicas(spawn_gateway: Any, cfg: dict[str, Any]) -> tuple[Any, Any]:
    a, b = await asyncio.gather(spawn_gateway(cfg), spawn_gateway(cfg))
    return a, b


def keys_for(scope: str, n: int) -> list[str]:
    # A key limit is tested with key A alone; the team's with B and C taking turns.
    return [KEY_A if scope == "key" else (KEY_B, KEY_C)[i % 2] for i in range(n)]


def assert_refusals_carry_headers(results: list[tuple[int, dict[str, str], Any]], limit_kind: str, window: tuple[str, ...] = RATELIMIT) -> None:
    for status, headers, body in results:
        if status == 429:
            assert all(h in headers for h in ("Retry-After", *window)), headers
            assert int(headers["Retry-After"]) >= 1
            assert f"({limit_kind} " in body["error"]["message"]


async def test_rpm_holds_across_two_replicas_under_a_concurrent_burst(make_upstream, spawn_gateway, redis_url, redis_prefix):
    limit = 8
    forii = await make_upstream("forii")
    forii.default = Behaviour(delay=0.02)
    a, b = await two_replicas(spawn_gateway, replicas_config(forii, redis_url, redis_prefix, {"rpm": limit}))
    async with aiohttp.ClientSession() as s:
        for scope in SCOPES:
            sent_before = len(forii.received)
            results = await asyncio.gather(*(chat(s, (a, b)[i % 2].url, key) for i, key in enumerate(keys_for(scope, 30))))
            statuses = [r[0] for r in results]
            assert statuses.count(200) == limit, (scope, statuses)  # bound 0: not one over
            assert statuses.count(429) == 30 - limit
            assert len(forii.received) - sent_before == limit
            assert_refusals_carry_headers(results, "rpm")
            assert all(r[1]["x-ratelimit-limit-requests"] == str(limit) for r in results)
            assert all(f"{scope}:" in r[2]["error"]["message"] for r in results if r[0] == 429)


async def test_tpm_holds_across_two_replicas_and_counts_real_usage(make_upstream, spawn_gateway, redis_url, redis_prefix):
    fits = 5
    forii = await make_upstream("forii")
    # Each answer uses exactly what was estimated, so the corrections change nothing mid-burst.
    forii.default = Behaviour(delay=0.02, usage={"prompt_tokens": ESTIMATE - 40, "completion_tokens": 40, "total_tokens": ESTIMATE})
    a, b = await two_replicas(spawn_gateway, replicas_config(forii, redis_url, redis_prefix, {"tpm": fits * ESTIMATE}))
    async with aiohttp.ClientSession() as s:
        for scope in SCOPES:
            sent_before = len(forii.received)
            results = await asyncio.gather(*(chat(s, (a, b)[i % 2].url, key) for i, key in enumerate(keys_for(scope, 20))))
            statuses = [r[0] for r in results]
            assert statuses.count(200) == fits, (scope, statuses)
            assert len(forii.received) - sent_before == fits
            assert_refusals_carry_headers(results, "tpm", TOKEN_HEADERS)
            assert all(r[1]["x-ratelimit-limit-tokens"] == str(fits * ESTIMATE) for r in results)
            # A smaller request still does not fit, on either replica: the window is shared.
            for replica in (a, b):
                status, headers, _ = await chat(s, replica.url, keys_for(scope, 1)[0], {**CHAT, "max_tokens": 1})
                assert status == 429 and headers["x-ratelimit-remaining-tokens"] == "0"


async def test_concurrency_holds_across_two_replicas_and_frees_when_requests_end(make_upstream, spawn_gateway, redis_url, redis_prefix):
    limit = 3
    forii = await make_upstream("forii")
    # rpm too, far off: a concurrency refusal reports the request window (OpenAI has no concurrency header).
    a, b = await two_replicas(spawn_gateway, replicas_config(forii, redis_url, redis_prefix, {"concurrency": limit, "rpm": 1000}))
    async with aiohttp.ClientSession() as s:
        for scope in SCOPES:
            await concurrency_burst(s, (a.url, b.url), forii, keys_for(scope, 10), limit)


async def concurrency_burst(s: aiohttp.ClientSession, urls: tuple[str, str], forii: Any, keys: list[str], limit: int) -> None:
    gate = asyncio.Event()
    forii.default = Behaviour(gate=gate)
    sent_before = len(forii.received)
    tasks = [asyncio.create_task(chat(s, urls[i % 2], key)) for i, key in enumerate(keys)]
    # The refusals come back at once; the admitted ones wait at the upstream's gate.
    await wait_for(lambda: sum(t.done() for t in tasks) == len(keys) - limit and len(forii.received) - sent_before == limit, timeout=10)
    assert all(t.result()[0] == 429 for t in tasks if t.done())  # only the refusals came back
    gate.set()
    results = await asyncio.gather(*tasks)
    statuses = [r[0] for r in results]
    assert statuses.count(200) == limit and statuses.count(429) == len(keys) - limit, statuses
    assert_refusals_carry_headers(results, "concurrency")

    forii.default = Behaviour()

    async def all_slots_back() -> bool:
        # Released in the background after each answer: wait until every slot is free again.
        answers = await asyncio.gather(*(chat(s, urls[i % 2], key) for i, key in enumerate(keys[:limit])))
        return all(status == 200 for status, _, _ in answers)

    await wait_for(all_slots_back, timeout=5, interval=0.05)


async def test_rpm_holds_exactly_in_every_run_with_64_clients_on_each_of_two_replicas(make_upstream, spawn_gateway, redis_url, redis_prefix):
    """Issue 10: rpm N admits exactly N in every run (5 runs), with 64 concurrent clients on each replica."""
    limit, runs = 40, 5
    forii = await make_upstream("forii")
    keys = {f"run{i}": {"key": f"rpm-run-{i}-key-0123456789abcdef", "limits": {"rpm": limit}} for i in range(runs)}
    cfg = {
        "state": {"backend": "redis", "url": redis_url, "prefix": redis_prefix},
        "providers": {"forii": provider_entry(forii)},
        "models": {"chat": {"targets": [{"provider": "forii", "model": "forii/deepseek-v3"}]}},
        "auth": {"keys": keys},
    }
    a, b = await two_replicas(spawn_gateway, cfg)
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector) as s:
        for i in range(runs):
            key = keys[f"run{i}"]["key"]
            results = await asyncio.gather(*(chat(s, (a, b)[j % 2].url, key) for j in range(128)))
            statuses = [r[0] for r in results]
            assert (statuses.count(200), statuses.count(429)) == (limit, 128 - limit), (i, statuses)
    for replica in (a, b):
        assert not any("Redis state unavailable" in line for line in replica.output)
