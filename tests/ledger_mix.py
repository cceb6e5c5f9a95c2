"""A scripted mix of requests with known usage, and the bill computed independently of the gateway.

Used by the ledger tests: ``build_config`` wires fake upstreams into aliases
whose every request has a known outcome; ``run_mix`` sends the requests
concurrently and returns, per request id, what the ledger must say.  The
expected cost is computed here from the raw token counts and the prices in
this file (``Decimal``, rounded half-up once per request), never with
``router.accounting``.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import aiohttp

from tests.conftest import provider_entry
from tests.fakes.upstream import Behaviour, FakeUpstream

TEAMS = ("alpha", "beta", "gamma")
PROJECTS = ("search", "chat", "ads")

# Usage the fakes report, in their own shapes, and the same numbers as the test reads them.
OA_USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 12,
    "total_tokens": 52,
    "prompt_tokens_details": {"cached_tokens": 10},
    "cache_creation_input_tokens": 6,
    "completion_tokens_details": {"reasoning_tokens": 5},
}
OA = {"prompt": 40, "cached": 10, "cache_write": 6, "completion": 12, "reasoning": 5}
FO = {"prompt": 18, "cached": 0, "cache_write": 0, "completion": 156, "reasoning": 0}  # forii's documented example
FF = {"prompt": 28, "cached": 0, "cache_write": 0, "completion": 10, "reasoning": 0}  # forefront's

PRICES = {
    "gpt-x": {"input": "1.25", "output": "10", "cached_input": "0.125", "cache_write": "1.5625", "reasoning": "12.5", "version": "2026-11-01"},
    "deepseek-v3": {"input": "0.27", "output": "1.1", "version": "forii-2026-10"},
    "ff-small": {"input": "2", "output": "8", "version": "ff-1"},
    "bad-model": {"input": "100", "output": "100", "version": "bad"},
    "err-model": {"input": "100", "output": "100", "version": "err"},
    "hang-model": {"input": "3", "output": "7", "version": "hang"},
    "cut-model": {"input": "0.5", "output": "3.3", "version": "cut"},
    "quiet-model": {"input": "0.75", "output": "2.25", "version": "quiet"},
}
NO_USAGE_ANSWER = {
    "id": "quiet-1",
    "object": "chat.completion",
    "created": 0,
    "model": "quiet-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "no usage in this answer!"}, "finish_reason": "stop"}],
}


def expected_cost(tokens: dict[str, int], model: str) -> int:
    p = {k: Decimal(v) for k, v in PRICES[model].items() if k != "version"}
    fresh = tokens["prompt"] - tokens["cached"] - tokens["cache_write"]
    amount = (
        fresh * p["input"]
        + tokens["cached"] * p.get("cached_input", p["input"])
        + tokens["cache_write"] * p.get("cache_write", p["input"])
        + (tokens["completion"] - tokens["reasoning"]) * p["output"]
        + tokens["reasoning"] * p.get("reasoning", p["output"])
    )
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def estimated_prompt(content: str) -> int:
    return max(1, len(content) // 4)


@dataclass
class Upstreams:
    oa: FakeUpstream
    fo: FakeUpstream
    ff: FakeUpstream
    bad: FakeUpstream
    err: FakeUpstream
    hang: FakeUpstream
    cut: FakeUpstream
    quiet: FakeUpstream
    gate: asyncio.Event


async def make_upstreams(make_upstream: Any) -> Upstreams:
    gate = asyncio.Event()  # never set while requests run: "hang" streams wait after their first chunk
    ups = Upstreams(
        oa=await make_upstream("openai"),
        fo=await make_upstream("forii"),
        ff=await make_upstream("forefront"),
        bad=await make_upstream("openai"),
        err=await make_upstream("openai"),
        hang=await make_upstream("openai"),
        cut=await make_upstream("openai"),
        quiet=await make_upstream("openai"),
        gate=gate,
    )
    ups.oa.default = Behaviour(usage=OA_USAGE)
    ups.bad.default = Behaviour(status=503)
    ups.err.default = Behaviour(status=500)
    ups.hang.default = Behaviour(gate=gate)
    ups.cut.default = Behaviour(drop_after_first=True)
    ups.quiet.default = Behaviour(body=NO_USAGE_ANSWER)
    return ups


def build_config(ups: Upstreams, ledger: dict[str, Any]) -> dict[str, Any]:
    def target(provider: str, model: str) -> dict[str, Any]:
        return {"provider": provider, "model": model, "price": PRICES[model]}

    return {
        "providers": {
            "oa": provider_entry(ups.oa),
            "fo": provider_entry(ups.fo),
            "ff": provider_entry(ups.ff),
            "bad": provider_entry(ups.bad),
            "err": provider_entry(ups.err),
            "hang": provider_entry(ups.hang),
            # The cut stream fails every time by design; its circuit must stay closed so that
            # every one of those requests really reaches it (the breaker has its own tests).
            "cut": provider_entry(ups.cut, health={"failure_threshold": 1_000_000, "min_requests": 1_000_000}),
            "quiet": provider_entry(ups.quiet),
        },
        "models": {
            "gpt": {"targets": [target("oa", "gpt-x")]},
            "deep": {"targets": [target("fo", "deepseek-v3")]},
            "ff": {"targets": [target("ff", "ff-small")]},
            "flaky": {"targets": [target("bad", "bad-model")], "fallbacks": ["gpt"]},
            "broken": {"targets": [target("err", "err-model")]},
            "hang": {"targets": [target("hang", "hang-model")]},
            "cut": {"targets": [target("cut", "cut-model")]},
            "quiet": {"targets": [target("quiet", "quiet-model")]},
        },
        "ledger": {"flush_interval": 0.02, "retry_interval": 0.05, "team_from_metadata": "team", **ledger},
    }


@dataclass
class Expected:
    request_id: str
    team: str
    project: str
    model: str
    cost: int
    estimated: bool
    status: int


# (alias, stream, answering model, expected tokens or None for an estimate, how the client behaves)
SCENARIOS: list[tuple[str, bool, str, dict[str, int] | None, str]] = [
    ("gpt", False, "gpt-x", OA, "read"),
    ("gpt", True, "gpt-x", OA, "read"),
    ("deep", False, "deepseek-v3", FO, "read"),
    ("deep", True, "deepseek-v3", FO, "read"),
    ("ff", True, "ff-small", FF, "read"),
    ("ff", False, "ff-small", FF, "read"),
    ("flaky", False, "gpt-x", OA, "read"),  # a 503 at "bad", then the fallback alias answers
    ("flaky", True, "gpt-x", OA, "read"),
    ("broken", False, "err-model", None, "read"),  # 502, nothing consumed, nothing charged
    ("quiet", False, "quiet-model", None, "read"),  # no usage reported: estimated
    ("hang", True, "hang-model", None, "disconnect"),  # the client leaves after the first chunk
    ("cut", True, "cut-model", None, "read"),  # the upstream cuts the stream after the first chunk
]


def plan(n: int, start: int = 0) -> list[tuple[int, tuple[str, bool, str, dict[str, int] | None, str]]]:
    return [(i, SCENARIOS[i % len(SCENARIOS)]) for i in range(start, start + n)]


async def one_request(session: aiohttp.ClientSession, url: str, i: int, scenario: tuple[str, bool, str, dict[str, int] | None, str]) -> Expected:
    alias, stream, model, tokens, behaviour = scenario
    team, project = TEAMS[i % len(TEAMS)], PROJECTS[(i // 2) % len(PROJECTS)]
    content = "x" * (8 + i % 40)
    request_id = f"mix-{uuid.uuid4().hex}"
    body: dict[str, Any] = {"model": alias, "messages": [{"role": "user", "content": content}], "stream": stream}
    headers = {"x-request-id": request_id, "x-router-tags": f"project:{project},mix"}
    # Half the teams arrive in the body's metadata, half in a header.
    if i % 2:
        body["metadata"] = {"team": team}
    else:
        headers["x-router-metadata-team"] = team
    async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
        if behaviour == "disconnect":
            first = await r.content.readline()
            assert first.startswith(b"data: "), first
            r.close()  # drop the connection mid-stream
            status = 499
        else:
            await r.read()
            status = r.status
    if tokens is not None:
        cost, estimated = expected_cost(tokens, model), False
    elif alias == "broken":
        cost, estimated = 0, False
    elif alias == "quiet":
        text = NO_USAGE_ANSWER["choices"][0]["message"]["content"]  # type: ignore[index]
        est = {"prompt": estimated_prompt(content), "cached": 0, "cache_write": 0, "completion": -(-len(text) // 4), "reasoning": 0}
        cost, estimated = expected_cost(est, model), True
    else:  # hang, cut: one chunk reached the client; the prompt by the documented rule
        est = {"prompt": estimated_prompt(content), "cached": 0, "cache_write": 0, "completion": 1, "reasoning": 0}
        cost, estimated = expected_cost(est, model), True
    return Expected(request_id, team, project, model, cost, estimated, status)


async def run_mix(url: str, items: list[tuple[int, Any]], concurrency: int = 24) -> list[Expected]:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def go(i: int, scenario: Any) -> Expected:
            async with sem:
                return await one_request(session, url, i, scenario)

        return list(await asyncio.gather(*(go(i, s) for i, s in items)))


def totals_by_team_model(expected: list[Expected]) -> dict[tuple[str, str], tuple[int, int]]:
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for e in expected:
        n, cost = out.get((e.team, e.model), (0, 0))
        out[(e.team, e.model)] = (n + 1, cost + e.cost)
    return out
