"""Access control across replicas: two real gateway processes sharing one real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.conftest import provider_entry, wait_for
from tests.fakes.upstream import Behaviour

ADMIN = "replica-admin-token-0123456789"
PRICE = {"input": 0, "output": 2}  # 2 micro-USD per output token; prompts are free so the bound is exact
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}  # at most 100 micro-USD


def replica_config(upstream: Any, redis_prefix: str) -> dict[str, Any]:
    return {
        # A generous Redis timeout: two processes and 50 requests on a 2-core CI box must not fail closed.
        "state": {"backend": "redis", "prefix": redis_prefix, "timeout": 2.0},
        "providers": {"forii": provider_entry(upstream)},
        "models": {"chat": {"targets": [{"provider": "forii", "model": "forii/deepseek-v3", "price": PRICE}]}},
        # No slow-down here: these tests expect 401s on purpose and time the revocation.
        "auth": {"teams": {"web": {}}, "failure_threshold": 100000},
    }


async def status_of(session: aiohttp.ClientSession, url: str, key: str) -> int:
    async with session.post(url + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}) as r:
        await r.read()
        return r.status


async def admin(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    async with session.request(method, url, headers={"Authorization": f"Bearer {ADMIN}"}, **kwargs) as r:
        body = await r.json()
        assert r.status in (200, 201), body
        return dict(body)


async def test_fifty_concurrent_requests_on_two_replicas_never_overspend(make_upstream, spawn_gateway, redis_prefix):
    forii = await make_upstream("forii")
    # Every answer costs exactly its reservation, so no settlement frees room mid-test: at most 10 fit.
    forii.default = Behaviour(usage={"prompt_tokens": 7, "completion_tokens": 50, "total_tokens": 57})
    cfg = replica_config(forii, redis_prefix)
    a, b = await asyncio.gather(*(spawn_gateway(cfg, env={"ROUTER_ADMIN_TOKEN": ADMIN}) for _ in range(2)))
    async with aiohttp.ClientSession() as s:
        created = await admin(s, "POST", a.url + "/admin/keys", json={"team": "web", "budget": {"usd": 0.001, "period": "day"}})
        statuses = await asyncio.gather(*(status_of(s, (a if i % 2 else b).url, created["key"]) for i in range(50)))
        assert sorted(set(statuses)) == [200, 402], statuses
        assert statuses.count(200) == 10, statuses
        assert len(forii.received) == 10  # refusals never reached the upstream

        async def settled_spend() -> int | None:
            spend = (await admin(s, "GET", b.url + f"/admin/keys/{created['id']}"))["spend"][0]
            return spend["spent_micro_usd"] if spend["spent_micro_usd"] == 10 * 100 else None

        assert await wait_for(settled_spend, timeout=5) <= 1000  # the budget, in micro-USD


async def test_admin_keys_work_at_once_everywhere_and_revocation_reaches_every_replica_within_a_second(make_upstream, spawn_gateway, redis_prefix):
    forii = await make_upstream("forii")
    cfg = replica_config(forii, redis_prefix)
    a, b = await asyncio.gather(*(spawn_gateway(cfg, env={"ROUTER_ADMIN_TOKEN": ADMIN}) for _ in range(2)))
    async with aiohttp.ClientSession() as s:
        created = await admin(s, "POST", a.url + "/admin/keys", json={"team": "web"})
        key = created["key"]
        assert await status_of(s, b.url, key) == 200  # created on A, at once on B
        assert await status_of(s, a.url, key) == 200  # both now hold it in their caches

        rotated = (await admin(s, "POST", b.url + f"/admin/keys/{created['id']}/rotate"))["key"]
        assert await status_of(s, a.url, rotated) == 200

        async def old_key_refused_everywhere() -> bool:
            return all([await status_of(s, gw.url, key) == 401 for gw in (a, b)])

        await wait_for(old_key_refused_everywhere, timeout=1.0)

        await admin(s, "POST", b.url + f"/admin/keys/{created['id']}/revoke")

        async def revoked_everywhere() -> bool:
            return all([await status_of(s, gw.url, rotated) == 401 for gw in (a, b)])

        await wait_for(revoked_everywhere, timeout=1.0)
        listing = await admin(s, "GET", a.url + "/admin/keys")
        assert [k["revoked"] for k in listing["data"]] == [True]
    output = "\n".join(a.output + b.output)
    for secret in (key, rotated, ADMIN, forii.api_key):
        assert secret not in output
