from __future__ import annotations

import aiohttp

from tests.conftest import provider_entry


async def test_chat_through_forii(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    gw = await start_gateway(
        {"providers": {"forii": provider_entry(forii)}, "models": {"chat": {"targets": [{"provider": "forii", "model": "forii/deepseek-v3"}]}}}
    )
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}) as r:
            body = await r.json()
            assert r.status == 200, body
            assert body["model"] == "forii/deepseek-v3"
            assert r.headers["x-router-provider"] == "forii"
    assert forii.received[0].body["model"] == "forii/deepseek-v3"


async def test_gateway_as_a_process_serves_the_mock(spawn_gateway):
    gp = await spawn_gateway({"providers": {"mock": {"kind": "mock"}}, "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}]}}})
    async with aiohttp.ClientSession() as s:
        async with s.post(gp.url + "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200
            assert (await r.json())["choices"][0]["message"]["content"]


async def test_wildcard_alias_sends_the_requested_model_on(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    gw = await start_gateway({"providers": {"forii": provider_entry(forii)}, "models": {"forii/*": {"targets": [{"provider": "forii"}]}}})
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/chat/completions", json={"model": "forii/qwen3-32b", "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200
            assert r.headers["x-router-model"] == "forii/qwen3-32b"
    assert forii.received[0].body["model"] == "forii/qwen3-32b"


async def test_forefront_serves_text_completions_with_a_bare_prompt(make_upstream, start_gateway):
    ff = await make_upstream("forefront")
    gw = await start_gateway(
        {"providers": {"ff": provider_entry(ff)}, "models": {"text": {"operations": ["completion"], "targets": [{"provider": "ff", "model": "ff-1"}]}}}
    )
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/completions", json={"model": "text", "prompt": "What is 42?", "max_tokens": 3}) as r:
            body = await r.json()
            assert r.status == 200, body
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "Hello from forefront"
    assert ff.received[0].body == {"model": "ff-1", "prompt": "What is 42?", "max_tokens": 3}


async def test_target_that_cannot_take_a_parameter_is_skipped(make_upstream, start_gateway):
    ff, forii = await make_upstream("forefront"), await make_upstream("forii")
    gw = await start_gateway(
        {
            "providers": {"ff": provider_entry(ff), "forii": provider_entry(forii)},
            "models": {"chat": {"targets": [{"provider": "ff", "model": "a"}, {"provider": "forii", "model": "b"}]}},
        }
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/chat/completions", json={"model": "chat", "tools": tools, "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200
            assert r.headers["x-router-provider"] == "forii"
    assert ff.received == []
