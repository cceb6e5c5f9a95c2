"""Per-key and per-team rpm, tpm and concurrency on one gateway (router/auth/limits.py over the shared limiter)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from providers.base import estimate_prompt_tokens
from router.auth.budget import period_window
from router.state.memory import MemoryStore
from router.state.redis_store import RedisStore
from tests.conftest import provider_entry, wait_for
from tests.fakes.redis_proxy import RedisProxy
from tests.fakes.upstream import Behaviour

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}
ESTIMATE = estimate_prompt_tokens(CHAT) + 40  # what admission counts before the call
KEY_A = "limits-key-a-0123456789abcdef"
KEY_B = "limits-key-b-0123456789abcdef"
RATELIMIT = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
TOKEN_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


def limited(upstream: Any, *, key: dict[str, Any] | None = None, team: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Two keys on team ``web``; ``key`` limits go on key A, ``team`` limits on the team."""
    return {
        "providers": {"forii": provider_entry(upstream)},
        "models": {"chat": {"targets": [{"provider": "forii", "model": "forii/deepseek-v3"}]}},
        "auth": {
            "teams": {"web": {"limits": team} if team else {}},
            "keys": {"a": {"key": KEY_A, "team": "web", **({"limits": key} if key else {})}, "b": {"key": KEY_B, "team": "web"}},
        },
        **(extra or {}),
    }


async def chat(session: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], Any]:
    async with session.post(url + "/v1/chat/completions", json=body or CHAT, headers={"Authorization": f"Bearer {key}"}) as r:
        payload = await r.json(content_type=None) if r.content_type == "application/json" else await r.text()
        return r.status, dict(r.headers), payload


async def test_key_rpm_refuses_with_429_retry_after_and_openai_headers(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    gw = await start_gateway(limited(forii, key={"rpm": 3}))
    async with aiohttp.ClientSession() as s:
        answers = [await chat(s, gw.url, KEY_A) for _ in range(4)]
        other = await chat(s, gw.url, KEY_B)  # key B has no limit of its own, and the team has none
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    assert [a[1]["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
    for _, headers, _ in answers:
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        assert not any(h in headers for h in TOKEN_HEADERS)  # no tpm set, so no token headers
    status, headers, body = answers[-1]
    assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "rate_limit_exceeded"
    assert "key:cfg_a (rpm 3)" in body["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert other[0] == 200 and not any(h in other[1] for h in RATELIMIT)
    assert len(forii.received) == 4  # three for A, one for B: the refusal never reached the upstream


async def test_team_rpm_is_shared_by_its_keys(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    gw = await start_gateway(limited(forii, key={"rpm": 100}, team={"rpm": 3}))
    async with aiohttp.ClientSession() as s:
        statuses = [(await chat(s, gw.url, key))[0] for key in (KEY_A, KEY_B, KEY_A, KEY_B)]
        status, headers, body = await chat(s, gw.url, KEY_A)
    assert statuses == [200, 200, 200, 429]
    assert status == 429 and "team:web (rpm 3)" in body["error"]["message"]
    # Key A's own window (100) has more room than the team's (3): the tightest is reported.
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("3", "0")
    assert "Retry-After" in headers
    assert len(forii.received) == 3


async def test_key_tpm_counts_the_estimate_then_the_real_usage(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    tpm = 3 * ESTIMATE
    # The first answer uses far fewer tokens than estimated, the second far more.
    forii.then(
        Behaviour(usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
        Behaviour(usage={"prompt_tokens": 1, "completion_tokens": tpm - 5, "total_tokens": tpm - 4}),
    )
    gw = await start_gateway(limited(forii, key={"tpm": tpm}))
    async with aiohttp.ClientSession() as s:
        first = await chat(s, gw.url, KEY_A)
        assert first[0] == 200
        assert first[1]["x-ratelimit-remaining-tokens"] == str(tpm - ESTIMATE)  # the estimate, counted before the call
        second = await chat(s, gw.url, KEY_A)
        assert second[0] == 200
        assert second[1]["x-ratelimit-remaining-tokens"] == str(tpm - 2 - ESTIMATE)  # the first was corrected to 2
        status, headers, body = await chat(s, gw.url, KEY_A)
    # Now 2 + (tpm - 4) are used: the next estimate does not fit.
    assert status == 429, body
    assert "key:cfg_a (tpm" in body["error"]["message"]
    assert (headers["x-ratelimit-limit-tokens"], headers["x-ratelimit-remaining-tokens"]) == (str(tpm), "2")
    assert "Retry-After" in headers
    assert len(forii.received) == 2


async def test_concurrency_is_released_on_success_error_stream_end_and_disconnect(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    gw = await start_gateway(limited(forii, team={"concurrency": 2}))
    store = gw.gateway.routing.store
    assert isinstance(store, MemoryStore)

    def in_flight() -> int:
        return store.limiter.usage("team:web")[2]

    async with aiohttp.ClientSession() as s:
        gate = asyncio.Event()
        forii.default = Behaviour(gate=gate)
        held = [asyncio.create_task(chat(s, gw.url, key)) for key in (KEY_A, KEY_B)]
        await wait_for(lambda: len(forii.received) == 2)
        status, headers, body = await chat(s, gw.url, KEY_B)
        assert status == 429 and "team:web (concurrency 2)" in body["error"]["message"]
        assert headers["Retry-After"] == "1"
        gate.set()
        assert [(await t)[0] for t in held] == [200, 200]
        assert in_flight() == 0  # released on success

        forii.then(Behaviour(status=400))  # a caller's error, returned as is
        assert (await chat(s, gw.url, KEY_A))[0] == 400
        assert in_flight() == 0  # released on error

        forii.default = Behaviour()
        async with s.post(gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers={"Authorization": f"Bearer {KEY_A}"}) as r:
            assert r.status == 200
            await r.read()
        await wait_for(lambda: in_flight() == 0)  # released at the stream's end

        stream_gate = asyncio.Event()
        forii.default = Behaviour(gate=stream_gate)
        r = await s.post(gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers={"Authorization": f"Bearer {KEY_A}"})
        await r.content.readline()  # the first chunk arrived; the upstream now holds the stream
        assert in_flight() == 1
        r.close()  # the client goes away mid-stream
        stream_gate.set()
        await wait_for(lambda: in_flight() == 0)  # released on disconnect
        forii.default = Behaviour()
        assert [(await chat(s, gw.url, key))[0] for key in (KEY_A, KEY_B)] == [200, 200]


# -- limits and budgets together: both or neither, one Redis round trip --------------------


async def requests_counted(gw: Any, scope: str) -> int:
    store = gw.gateway.routing.store
    if isinstance(store, MemoryStore):
        return store.limiter.usage(scope)[0]
    window = await store.client.hgetall(store.key("w", scope))
    return sum(int(v) for f, v in window.items() if f.startswith(b"r"))


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_budget_refusal_uses_no_rpm_and_a_limit_refusal_reserves_no_budget(make_upstream, start_gateway, redis_url, redis_prefix, backend):
    forii = await make_upstream("forii")
    forii.default = Behaviour(usage={"prompt_tokens": 1, "completion_tokens": 40, "total_tokens": 41})  # costs its whole reservation
    cfg = limited(forii)
    cfg["models"]["chat"]["targets"][0]["price"] = {"input": 0, "output": 2}  # 40 tokens at most: 80 micro-USD a request
    cfg["auth"]["keys"]["a"].update(limits={"rpm": 5}, budget={"usd": 0.00016, "period": "day"})  # two requests fit
    cfg["auth"]["keys"]["b"].update(limits={"rpm": 1}, budget={"usd": 1, "period": "day"})
    if backend == "redis":
        cfg["state"] = {"backend": "redis", "url": redis_url, "prefix": redis_prefix}  # the one-round-trip path
    gw = await start_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        assert [(await chat(s, gw.url, KEY_A))[0] for _ in range(3)] == [200, 200, 402]
        await gw.gateway.auth.drain()
        assert await requests_counted(gw, "key:cfg_a") == 2  # the 402 took no request from the rpm window

        assert [(await chat(s, gw.url, KEY_B))[0] for _ in range(2)] == [200, 429]
        await gw.gateway.auth.drain()
        assert await gw.gateway.auth.book.spent(["spend:key:cfg_b:" + period_window("day", time.time())[0]]) == [80]  # the 429 reserved nothing
    assert len(forii.received) == 3


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[RedisProxy]:
    proxy = await RedisProxy().start()
    yield proxy  # set up before start_gateway, so torn down after the gateway has closed its connections
    await proxy.stop()


async def test_a_request_with_key_limits_and_a_budget_costs_one_redis_round_trip_before_the_upstream(redis_proxy, make_upstream, start_gateway, redis_prefix):
    forii = await make_upstream("forii")
    cfg = limited(forii, key={"rpm": 100, "tpm": 100_000, "concurrency": 4}, team={"rpm": 100})
    cfg["models"]["chat"]["targets"][0]["price"] = {"input": 1, "output": 2}
    cfg["auth"]["keys"]["a"]["budget"] = {"usd": 1, "period": "day"}
    cfg["auth"]["teams"]["web"]["budget"] = {"usd": 1, "period": "month"}
    cfg["state"] = {"backend": "redis", "url": redis_proxy.url, "prefix": redis_prefix}
    gw = await start_gateway(cfg)
    store = gw.gateway.routing.store
    assert isinstance(store, RedisStore)
    async with aiohttp.ClientSession() as s:
        assert (await chat(s, gw.url, KEY_A))[0] == 200  # scripts loaded, the key's record cached
        await gw.gateway.auth.drain()
        await store.tasks.drain()
        gate = asyncio.Event()
        forii.default = Behaviour(gate=gate)
        redis_proxy.commands.clear()
        held = asyncio.create_task(chat(s, gw.url, KEY_A))
        await wait_for(lambda: len(forii.received) == 2)
        before_upstream = [c for c in redis_proxy.commands if c != ("EVALSHA", store._snapshot.sha)]  # a background refresh, never awaited
        gate.set()
        assert (await held)[0] == 200
    # Key and team limits, key and team budgets and routing's admit: one script, one round trip.
    assert before_upstream == [("EVALSHA", store._admit.sha)]
