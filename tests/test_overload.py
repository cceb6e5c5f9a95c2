"""A saturated process says so at once: 503 overloaded with Retry-After, counted, never a queue (issue 10)."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import provider_entry, wait_for
from tests.fakes.upstream import Behaviour

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


async def test_requests_beyond_max_in_flight_get_503_overloaded_at_once_and_health_still_answers(make_upstream, start_gateway):
    up = await make_upstream("openai")
    gate = asyncio.Event()
    up.default = Behaviour(gate=gate)
    gw = await start_gateway(
        {"server": {"max_in_flight": 2}, "providers": {"up": provider_entry(up)}, "models": {"chat": {"targets": [{"provider": "up", "model": "m"}]}}}
    )
    async with aiohttp.ClientSession() as s:

        async def chat() -> tuple[int, str | None, dict]:
            async with s.post(gw.url + "/v1/chat/completions", json=CHAT) as r:
                return r.status, r.headers.get("Retry-After"), await r.json()

        held = [asyncio.create_task(chat()) for _ in range(2)]
        await wait_for(lambda: len(up.received) == 2)  # both are in hand, waiting on the upstream
        refused = await asyncio.gather(*(chat() for _ in range(4)))  # answered while the two are still held
        assert [(status, retry, body["error"]["code"]) for status, retry, body in refused] == [(503, "1", "overloaded")] * 4
        async with s.get(gw.url + "/healthz") as r:
            assert r.status == 200
        async with s.get(gw.url + "/metrics") as r:
            assert "llm_router_overloaded_total 4.0" in await r.text()
        gate.set()
        assert [status for status, _, _ in await asyncio.gather(*held)] == [200, 200]
        assert (await chat())[0] == 200  # room again
