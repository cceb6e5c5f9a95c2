"""Active health checks open a circuit with no client traffic, and close it as soon as the target recovers."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conftest import ADMIN_HEADERS, provider_entry, wait_for
from tests.fakes.upstream import Behaviour


async def test_active_checks_open_and_close_the_circuit(make_upstream, start_gateway):
    up = await make_upstream("openai")
    up.default = Behaviour(500)
    gw = await start_gateway(
        {
            "providers": {"up": provider_entry(up, health={"check_interval": 0.05, "failure_threshold": 2, "cooldown": 60})},
            "models": {"chat": {"targets": [{"provider": "up", "model": "m"}]}},
        }
    )

    async def circuit() -> str:
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/admin/targets", headers=ADMIN_HEADERS) as r:
            view: dict[str, Any] = await r.json()
            return str(view["targets"][0]["circuit"])

    await wait_for(lambda: _is(circuit(), "open"))
    assert all(r.body["max_tokens"] == 1 for r in up.received)  # the cheapest request there is
    up.default = Behaviour(200)
    await wait_for(lambda: _is(circuit(), "closed"))  # long before the 60 s cooldown


async def _is(value: Any, expected: str) -> bool:
    return await value == expected
