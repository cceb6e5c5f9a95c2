"""Failover before the first byte: the next candidate answers; a caller's 4xx is returned as is."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import provider_entry
from tests.fakes.upstream import Behaviour, FakeUpstream, closed_port

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


def two_targets(first: dict, second: FakeUpstream) -> dict:
    return {
        "providers": {"first": first, "second": provider_entry(second)},
        "models": {"chat": {"targets": [{"provider": "first", "model": "m1"}, {"provider": "second", "model": "m2"}]}},
    }


async def post(url: str, body: dict) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body) as r:
        return r.status, dict(r.headers), await r.json()


async def test_connection_refused_fails_over(make_upstream, start_gateway):
    second = await make_upstream("openai")
    dead = {"kind": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1", "api_key": "k"}
    gw = await start_gateway(two_targets(dead, second))
    status, headers, body = await post(gw.url, CHAT)
    assert status == 200, body
    assert headers["x-router-attempts"] == "2"
    assert headers["x-router-provider"] == "second"
    assert body["choices"][0]["message"]["content"] == "Hello from openai"


async def test_timeout_fails_over(make_upstream, start_gateway):
    slow, second = await make_upstream("openai"), await make_upstream("forii")
    slow.then(Behaviour(delay=3))
    gw = await start_gateway(two_targets(provider_entry(slow, timeouts={"read": 0.2, "connect": 1}), second))
    status, headers, body = await post(gw.url, CHAT)
    assert status == 200, body
    assert headers["x-router-attempts"] == "2"
    assert body["provider"] == "second"


@pytest.mark.parametrize("failure", [503, 429, 500])
async def test_retryable_status_fails_over(make_upstream, start_gateway, failure):
    first, second = await make_upstream("openai"), await make_upstream("openai")
    first.then(Behaviour(status=failure))
    gw = await start_gateway(two_targets(provider_entry(first), second))
    status, headers, body = await post(gw.url, CHAT)
    assert status == 200, body
    assert headers["x-router-attempts"] == "2"
    assert len(first.received) == 1 and len(second.received) == 1


async def test_caller_fault_400_is_returned_as_is_and_not_failed_over(make_upstream, start_gateway):
    first, second = await make_upstream("openai"), await make_upstream("openai")
    first.then(
        Behaviour(
            status=400, body={"error": {"message": "temperature is out of range", "type": "invalid_request_error", "param": "temperature", "code": "bad_temp"}}
        )
    )
    gw = await start_gateway(two_targets(provider_entry(first), second))
    status, headers, body = await post(gw.url, CHAT)
    assert status == 400
    assert body["error"]["param"] == "temperature"
    assert "temperature is out of range" in body["error"]["message"]
    assert second.received == []
    assert headers["x-router-attempts"] == "1"


async def test_every_candidate_failing_gives_one_line_per_attempt(make_upstream, start_gateway):
    first, second = await make_upstream("openai"), await make_upstream("openai")
    first.then(Behaviour(status=503))
    second.then(Behaviour(status=502))
    gw = await start_gateway(two_targets(provider_entry(first), second))
    status, _, body = await post(gw.url, CHAT)
    assert status == 502
    message = body["error"]["message"]
    assert "first/m1: status 503" in message and "second/m2: status 502" in message
    assert body["error"]["code"] == "all_upstreams_failed"


async def test_all_timeouts_give_504(make_upstream, start_gateway):
    slow = await make_upstream("openai")
    slow.default = Behaviour(delay=3)
    gw = await start_gateway(
        {"providers": {"slow": provider_entry(slow, timeouts={"read": 0.2})}, "models": {"chat": {"targets": [{"provider": "slow", "model": "m"}]}}}
    )
    status, _, body = await post(gw.url, CHAT)
    assert status == 504
    assert body["error"]["type"] == "upstream_error"


async def test_fallback_aliases_then_request_models_in_order(make_upstream, start_gateway):
    a, b, c = await make_upstream("openai"), await make_upstream("openai"), await make_upstream("openai")
    a.default = Behaviour(status=503)
    b.default = Behaviour(status=503)
    gw = await start_gateway(
        {
            "providers": {"a": provider_entry(a), "b": provider_entry(b), "c": provider_entry(c)},
            "models": {
                "first": {"targets": [{"provider": "a", "model": "ma"}], "fallbacks": ["backup"]},
                "backup": {"targets": [{"provider": "b", "model": "mb"}]},
                "other": {"targets": [{"provider": "c", "model": "mc"}]},
            },
        }
    )
    status, headers, body = await post(gw.url, {"model": "first", "models": ["other"], "messages": [{"role": "user", "content": "x"}]})
    assert status == 200, body
    assert headers["x-router-attempts"] == "3"
    assert headers["x-router-model"] == "mc"
    assert [len(u.received) for u in (a, b, c)] == [1, 1, 1]


async def test_models_list_without_model_uses_first_of_models(make_upstream, start_gateway):
    up = await make_upstream("openai")
    gw = await start_gateway({"providers": {"p": provider_entry(up)}, "models": {"x": {"targets": [{"provider": "p", "model": "mx"}]}}})
    status, headers, _ = await post(gw.url, {"models": ["x"], "messages": [{"role": "user", "content": "x"}]})
    assert status == 200
    assert up.received[0].body["model"] == "mx"
    assert "models" not in up.received[0].body


async def test_provider_key_never_reaches_the_client(make_upstream, start_gateway):
    up = await make_upstream("openai", api_key="sk-right-key-000000000000")
    wrong = "sk-wrong-key-1234567890abcdef"
    gw = await start_gateway(
        {"providers": {"p": {"kind": "openai", "base_url": up.base_url, "api_key": wrong}}, "models": {"chat": {"targets": [{"provider": "p", "model": "m"}]}}}
    )
    status, headers, body = await post(gw.url, CHAT)
    assert status == 502  # our key is wrong: not the caller's fault
    text = str(body) + str(headers)
    assert wrong not in text and wrong[:12] not in text and wrong[-8:] not in text
    assert "status 401" in body["error"]["message"]
