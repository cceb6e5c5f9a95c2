"""Routing through one gateway: retries and backoff, Retry-After, the deadline, max_price, the trace, /admin/targets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.conftest import ADMIN_HEADERS, provider_entry, wait_for
from tests.fakes.upstream import Behaviour, FakeUpstream

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def config(targets: list[tuple[FakeUpstream, dict[str, Any]]], **alias: Any) -> dict[str, Any]:
    providers = {f"up{i}": provider_entry(u, **extra.pop("provider", {})) for i, (u, extra) in enumerate(targets)}
    return {
        "providers": providers,
        "models": {"chat": {"targets": [{"provider": f"up{i}", "model": f"m{i}", **extra} for i, (_, extra) in enumerate(targets)], **alias}},
    }


async def post(url: str, **body: Any) -> tuple[int, dict[str, Any], Any]:
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json={"model": "chat", **CHAT, **body}) as r:
        return r.status, await r.json(), r.headers


def gaps(upstream: FakeUpstream) -> list[float]:
    times = [r.at for r in upstream.received]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


async def test_backoff_grows_between_retries(make_upstream, start_gateway):
    up = (await make_upstream("openai")).then(Behaviour(500), Behaviour(500), Behaviour(500))
    gw = await start_gateway(config([(up, {})], retry={"attempts": 4, "backoff_initial": 0.05, "backoff_max": 2}))
    status, body, headers = await post(gw.url)
    assert status == 200, body
    assert len(up.received) == 4
    g = gaps(up)
    assert g[0] >= 0.05 and g[1] >= 0.1 and g[2] >= 0.2  # initial * 2**n, plus jitter
    assert g[2] > g[0]
    assert headers["x-router-attempts"] == "4"


async def test_retry_after_is_honoured_in_both_forms(make_upstream, start_gateway):
    up = (await make_upstream("openai")).then(Behaviour(503, headers={"Retry-After": "0.4"}), Behaviour(429, headers={"retry-after-ms": "300"}))
    gw = await start_gateway(config([(up, {})], retry={"attempts": 3, "backoff_initial": 0.01, "retry_after_cap": 5}))
    status, body, _ = await post(gw.url)
    assert status == 200, body
    g = gaps(up)
    assert g[0] >= 0.4 and g[1] >= 0.3


async def test_a_callers_400_is_never_retried_nor_failed_over(make_upstream, start_gateway):
    up = (await make_upstream("openai")).then(Behaviour(400))
    other = await make_upstream("openai")
    gw = await start_gateway(config([(up, {}), (other, {"priority": 1})], strategy="priority", retry={"attempts": 5}))
    status, body, _ = await post(gw.url)
    assert status == 400, body
    assert len(up.received) == 1 and other.received == []


async def test_the_deadline_is_never_exceeded(make_upstream, start_gateway):
    slow = await make_upstream("openai")
    slow.default = Behaviour(500, delay=0.3)
    gw = await start_gateway(config([(slow, {})], retry={"attempts": 20, "backoff_initial": 0.05, "deadline": 1.0}))
    started = time.monotonic()
    status, body, _ = await post(gw.url)
    elapsed = time.monotonic() - started
    assert status in (502, 504), body
    assert elapsed < 1.0 + 0.25, elapsed  # the deadline, plus the time to render the error
    assert 2 <= len(slow.received) < 20


async def test_same_target_false_moves_on_at_once(make_upstream, start_gateway):
    flaky = (await make_upstream("openai")).then(Behaviour(500))
    other = await make_upstream("openai")
    gw = await start_gateway(config([(flaky, {}), (other, {"priority": 1})], strategy="priority", retry={"attempts": 3, "same_target": False}))
    status, _, headers = await post(gw.url)
    assert status == 200
    assert len(flaky.received) == 1 and len(other.received) == 1
    assert headers["x-router-trace"] == "up0/m0=status 500, up1/m1=ok"


async def test_max_price_keeps_fallback_under_the_ceiling(make_upstream, start_gateway):
    cheap = await make_upstream("openai")
    cheap.default = Behaviour(500)
    dear = await make_upstream("openai")
    gw = await start_gateway(
        config([(cheap, {"price": {"input": 0.5, "output": 1.5}}), (dear, {"price": {"input": 5, "output": 15}, "priority": 1})], strategy="priority")
    )
    status, body, headers = await post(gw.url, max_price={"input": 1, "output": 2})
    assert status == 502, body
    assert dear.received == []
    assert "up1/m1=skipped: over price (input $5/M > $1/M)" in headers["x-router-trace"]
    # without a ceiling the dear target answers
    status, _, headers = await post(gw.url)
    assert status == 200 and headers["x-router-provider"] == "up1"


async def test_max_price_with_nothing_under_it_names_the_ceiling(make_upstream, start_gateway):
    dear = await make_upstream("openai")
    gw = await start_gateway(config([(dear, {"price": {"input": 5, "output": 15}})]))
    status, body, _ = await post(gw.url, max_price={"input": 1, "output": 2})
    assert status == 400
    assert body["error"]["code"] == "price_ceiling_exceeded"
    assert body["error"]["param"] == "max_price"
    assert "max_price input $1/M, output $2/M" in body["error"]["message"]
    assert dear.received == []
    status, body, _ = await post(gw.url, max_price="cheap")
    assert status == 400 and body["error"]["param"] == "max_price"


async def test_admin_targets_shows_live_state(make_upstream, start_gateway):
    up = (await make_upstream("openai")).then(Behaviour(429, headers={"Retry-After": "30"}))
    other = await make_upstream("openai")
    other.default = Behaviour(headers={"x-ratelimit-remaining-requests": "41", "x-ratelimit-reset-requests": "20s"})
    gw = await start_gateway(config([(up, {"price": {"input": 1, "output": 2}, "limits": {"rpm": 100}}), (other, {"priority": 1})], strategy="priority"))
    status, _, headers = await post(gw.url)
    assert status == 200
    assert headers["x-router-trace"] == "up0/m0=status 429, up1/m1=ok"

    async def targets() -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/admin/targets", headers=ADMIN_HEADERS) as r:
            return {t["target"]: t for t in (await r.json())["targets"]}

    async def reported() -> dict[str, Any] | None:
        t = await targets()
        return t if t["up1/m1"]["provider_remaining"]["requests"] == 41 else None

    t = await wait_for(reported)
    assert 25 < t["up0/m0"]["cooldown_for"] <= 30
    assert t["up0/m0"]["limits"][0] == {
        "scope": "target:up0/m0",
        "requests": 1,
        "rpm": 100,
        "tokens": t["up0/m0"]["limits"][0]["tokens"],
        "tpm": None,
        "in_flight": 0,
        "concurrency": None,
    }
    assert t["up0/m0"]["price"]["input"] == "1"
    assert t["up1/m1"]["latency_ms"] is not None
    # while it cools down the strategy puts it last, so the next request does not call it; the trace still names it
    status, _, headers = await post(gw.url)
    assert status == 200 and headers["x-router-trace"] == "up0/m0=skipped: cooldown 30.0s, up1/m1=ok"
    assert len(up.received) == 1


async def _targets(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(url + "/admin/targets", headers=ADMIN_HEADERS) as r:
        return {t["target"]: t for t in (await r.json())["targets"]}


async def test_tokens_are_estimated_before_the_call_and_corrected_after(make_upstream, start_gateway):
    up = await make_upstream("openai")  # reports 25 total tokens per answer
    gw = await start_gateway(config([(up, {"limits": {"tpm": 600}})]))
    status, _, _ = await post(gw.url, max_tokens=500)
    assert status == 200

    async def corrected() -> bool:
        return (await _targets(gw.url))["up0/m0"]["limits"][0]["tokens"] == 25

    await wait_for(corrected)
    # 25 + ~501 fits under 600; had the estimate stayed, 501 + 501 would not
    status, body, _ = await post(gw.url, max_tokens=500)
    assert status == 200, body
    await wait_for(lambda: _tokens_are(gw.url, 50))
    # while a call is counted at its estimate, another that would pass the limit is refused
    slow = Behaviour(delay=0.5)
    up.then(slow)
    first = asyncio.create_task(post(gw.url, max_tokens=500))
    await wait_for(lambda: _in_flight(gw.url, 1))
    status, body, headers = await post(gw.url, max_tokens=500)
    assert status == 429 and "skipped: over limit target:up0/m0 tpm" in headers["x-router-trace"]
    assert body["error"]["code"] == "rate_limit_exceeded" and int(headers["Retry-After"]) >= 1
    assert (await first)[0] == 200


async def _tokens_are(url: str, expected: int) -> bool:
    return (await _targets(url))["up0/m0"]["limits"][0]["tokens"] == expected


async def _in_flight(url: str, expected: int) -> bool:
    return (await _targets(url))["up0/m0"]["in_flight"] == expected


async def test_a_provider_account_limit_is_shared_by_its_models(make_upstream, start_gateway):
    up = await make_upstream("openai")
    gw = await start_gateway(
        {
            "providers": {"acct": provider_entry(up, limits={"rpm": 2})},
            "models": {
                "chat": {"targets": [{"provider": "acct", "model": "small"}, {"provider": "acct", "model": "big", "priority": 1}], "strategy": "priority"}
            },
        }
    )
    assert (await post(gw.url))[0] == 200
    assert (await post(gw.url))[0] == 200
    status, body, headers = await post(gw.url)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"  # rate, not ill health: Retry-After says when
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert headers["x-router-trace"] == "acct/small=skipped: over limit account:acct rpm, acct/big=skipped: over limit account:acct rpm"


async def test_streaming_records_time_to_first_token(make_upstream, start_gateway):
    up = await make_upstream("openai")
    gw = await start_gateway(config([(up, {})]))
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json={"model": "chat", **CHAT, "stream": True}) as r:
        assert r.status == 200
        await r.read()
        assert r.headers["x-router-trace"] == "up0/m0=ok"

    async def measured() -> bool:
        return (await _targets(gw.url))["up0/m0"]["ttft_ms"] is not None

    await wait_for(measured)
