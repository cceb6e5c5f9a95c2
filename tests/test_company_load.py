"""The configuration a company runs, under load on one process, while Redis is healthy (issue 10).

Client keys with key limits and a team budget, ``state.backend: redis``, the
SQLite ledger, metrics and the request log at info.  Under a concurrent
burst every request of a well-behaved key is answered 200, a key sending an
absurd ``max_tokens`` gets a 400 naming the field and troubles nobody else,
the store never reads the gateway's own load as a Redis outage, no
traceback is logged, and once the burst is over no concurrency lease is
held and the team's budget counter holds exactly what the ledger charged.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from tests.conftest import wait_for

KEY_GOOD = "company-good-key-0123456789abcdef"
KEY_ABSURD = "company-absurd-key-0123456789abcd"
CONCURRENCY = 128
REQUESTS = 1500  # bounded: the burst ends by itself
PRICE = {"input": 0.5, "output": 1.5}


def company_config(redis_url: str, prefix: str, ledger_path: Path) -> dict[str, Any]:
    generous = {"rpm": 10_000_000, "tpm": 10_000_000_000, "concurrency": 10_000}
    return {
        "state": {"backend": "redis", "url": redis_url, "prefix": prefix},
        "logging": {"level": "info", "format": "text"},
        "providers": {"one": {"kind": "mock"}, "two": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "one", "model": "m1", "price": PRICE}, {"provider": "two", "model": "m2", "price": PRICE}]}},
        "auth": {
            "teams": {"eng": {"budget": {"usd": 1_000_000, "period": "day"}, "limits": generous}},
            "keys": {
                "good": {"key": KEY_GOOD, "team": "eng", "limits": generous, "budget": {"usd": 1_000_000, "period": "day"}},
                "absurd": {"key": KEY_ABSURD, "team": "eng"},
            },
        },
        "ledger": {"sinks": [{"kind": "sqlite", "path": str(ledger_path)}], "flush_interval": 0.05},
    }


async def burst(url: str) -> Counter[tuple[str, int, str | None]]:
    results: Counter[tuple[str, int, str | None]] = Counter()
    queue = list(range(REQUESTS))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:

        async def worker() -> None:
            while queue:
                i = queue.pop()
                absurd = i % 10 == 0
                body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 2**63 - 1 if absurd else 64}
                key = KEY_ABSURD if absurd else KEY_GOOD
                async with session.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
                    payload = await r.json()
                    param = payload.get("error", {}).get("param") if r.status != 200 else None
                    results[("absurd" if absurd else "good", r.status, param)] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results


async def test_company_config_answers_every_request_under_a_burst_and_leaks_nothing(spawn_gateway, redis_url, redis_prefix, tmp_path):
    ledger = tmp_path / "usage.db"
    gw = await spawn_gateway(company_config(redis_url, redis_prefix, ledger))
    results = await burst(gw.url)
    assert results == Counter({("good", 200, None): REQUESTS - REQUESTS // 10, ("absurd", 400, "max_tokens"): REQUESTS // 10}), results

    output = "\n".join(gw.output)
    for sign in ("Traceback", "unhandled error", "Redis state unavailable", "could not settle"):
        assert sign not in output, f"{sign!r} in the gateway's log:\n{output[-4000:]}"

    client = aioredis.from_url(redis_url)
    try:
        leases = [key async for key in client.scan_iter(match=f"*{redis_prefix}*:l:*")]

        async def no_lease_held() -> bool:
            return [await client.zcard(key) for key in leases] == [0] * len(leases)

        await wait_for(no_lease_held, timeout=10)
        spend_keys = [key async for key in client.scan_iter(match=f"*{redis_prefix}*spend:team:eng:*")]
        assert len(spend_keys) == 1, spend_keys

        def charged() -> int:
            with sqlite3.connect(ledger) as db:
                row = db.execute("SELECT COUNT(*), COALESCE(SUM(cost_micro_usd), 0) FROM usage WHERE status = 200").fetchone()
            return row[1] if row[0] == REQUESTS - REQUESTS // 10 else -1

        async def settled() -> bool:
            value = await client.get(spend_keys[0])
            return value is not None and charged() > 0 and int(value) == charged()

        # Every reservation settled to what the ledger charged: not a micro-dollar held back.
        deadline = time.monotonic() + 10
        await wait_for(settled, timeout=max(0.1, deadline - time.monotonic()))
    finally:
        await client.aclose()
