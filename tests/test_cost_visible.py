"""The caller sees what each request cost (issue 17): ``usage.cost`` and ``usage.cost_details`` in every
answer and in a stream's usage chunk, ``x-router-cost-usd`` on whole answers, the same rounded amount as the
ledger row, and nothing of it when ``ledger.expose_cost`` is false."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp
import openai

from tests.conftest import ADMIN_HEADERS, wait_for
from tests.ledger_mix import OA, build_config, expected_cost, make_upstreams

CHAT = [{"role": "user", "content": "what does this cost?"}]


async def seen_cost(client: openai.AsyncOpenAI, alias: str, stream: bool) -> Decimal:
    """The cost the client read from the answer (or from the stream's last chunk), exactly as a decimal."""
    if not stream:
        answer = await client.chat.completions.create(model=alias, messages=CHAT)  # type: ignore[arg-type]
        assert answer.usage is not None
        return Decimal(str(answer.usage.cost))  # type: ignore[attr-defined]
    chunks = [c async for c in await client.chat.completions.create(model=alias, messages=CHAT, stream=True, stream_options={"include_usage": True})]  # type: ignore[arg-type]
    assert chunks[-1].usage is not None
    return Decimal(str(chunks[-1].usage.cost))  # type: ignore[attr-defined]


async def usage_total(url: str, requests: int) -> dict[str, Any]:
    async def total() -> dict[str, Any] | None:
        async with aiohttp.ClientSession() as s, s.get(url + "/v1/usage?from=1d", headers=ADMIN_HEADERS) as r:
            body = await r.json()
            return body["total"] if body["total"]["requests"] == requests else None

    return await wait_for(total)


async def test_the_costs_clients_saw_add_up_to_the_usage_total_exactly(make_upstream, start_gateway, tmp_path):
    ups = await make_upstreams(make_upstream)
    config = build_config(ups, {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j")})
    gw = await start_gateway(config)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    # Every alias that answers, streamed and not, a failover among them (flaky: a 503, then gpt), concurrently.
    mix = [(alias, stream) for alias in ("gpt", "deep", "ff", "flaky", "quiet") for stream in (False, True) if (alias, stream) != ("quiet", True)] * 6
    seen = await asyncio.gather(*(seen_cost(client, alias, stream) for alias, stream in mix))
    total = await usage_total(gw.url, len(mix))
    assert sum(seen) == Decimal(total["cost_usd"]) and all(cost > 0 for cost in seen)
    gpt = Decimal(expected_cost(OA, "gpt-x")) / 1_000_000
    assert seen[0] == gpt  # a non-streamed gpt answer costs what the prices say, rounded once
    await client.close()


async def test_a_whole_answer_carries_the_split_and_the_header(make_upstream, start_gateway, tmp_path):
    ups = await make_upstreams(make_upstream)
    gw = await start_gateway(build_config(ups, {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j")}))
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json={"model": "gpt", "messages": CHAT}) as r:
        body = await r.json()
        header = r.headers["x-router-cost-usd"]
    usage = body["usage"]
    # gpt-x: 40 prompt (10 cached, 6 cache writes) and 12 completion (5 reasoning), at the prices in tests/ledger_mix.py
    assert usage["cost_details"] == {"input": 3e-05, "cached_input": 1e-06, "cache_write": 9e-06, "output": 7e-05, "reasoning": 6.3e-05}
    assert Decimal(header) == Decimal(str(usage["cost"])) == Decimal(expected_cost(OA, "gpt-x")) / 1_000_000


async def test_expose_cost_false_shows_callers_no_price(make_upstream, start_gateway, tmp_path):
    ups = await make_upstreams(make_upstream)
    ledger = {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j"), "expose_cost": False}
    gw = await start_gateway(build_config(ups, ledger))
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(model="gpt", messages=CHAT)  # type: ignore[arg-type]
    answer = raw.parse()
    assert answer.usage is not None and "cost" not in (answer.usage.model_extra or {})
    assert "x-router-cost-usd" not in raw.headers
    chunks = [c async for c in await client.chat.completions.create(model="gpt", messages=CHAT, stream=True, stream_options={"include_usage": True})]  # type: ignore[arg-type]
    assert chunks[-1].usage is not None and "cost" not in (chunks[-1].usage.model_extra or {})
    total = await usage_total(gw.url, 2)
    assert int(total["cost_micro_usd"]) == 2 * expected_cost(OA, "gpt-x")  # the ledger still charges
    await client.close()
