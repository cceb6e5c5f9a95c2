from __future__ import annotations

import aiohttp

from tests.conftest import provider_entry


async def test_chat_through_forii(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    gw = await start_gateway({"providers": {"forii": provider_entry(forii)}, "models": {"chat": {"targets": [{"provider": "forii", "model": "forii/deepseek-v3"}]}}})
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
