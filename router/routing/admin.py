"""``GET /admin/targets``: every configured target's live routing state, read from the store now.

Protected with the rest of ``/admin/*`` by the access-control middleware; this
module only renders state.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from router.config import Target
from router.keys import GATEWAY
from router.routing.engine import target_limits
from router.state.store import TargetState


def _targets(table: Any) -> dict[str, tuple[Target, list[str]]]:
    found: dict[str, tuple[Target, list[str]]] = {}
    for alias in (*table.aliases.values(), *table.wildcards):
        for target in alias.targets:
            entry = found.setdefault(target.key, (target, []))
            entry[1].append(alias.name)
    return found


def _render(target: Target, aliases: list[str], state: TargetState, now: float) -> dict[str, Any]:
    limits = []
    for limit in target_limits(target):
        usage = state.usage(limit.scope)
        limits.append(
            {
                "scope": limit.scope,
                "requests": usage.requests,
                "rpm": limit.rpm,
                "tokens": usage.tokens,
                "tpm": limit.tpm,
                "in_flight": usage.in_flight,
                "concurrency": limit.concurrency,
            }
        )
    price = target.price
    return {
        "target": target.key,
        "provider": target.provider.name,
        "model": target.model,
        "aliases": aliases,
        "circuit": state.circuit,
        "open_for": round(max(0.0, state.open_until - now), 3) if state.circuit != "closed" else None,
        "consecutive_failures": state.consecutive_failures,
        "cooldown_for": round(state.cooldown_until - now, 3) if state.cooldown_until > now else None,
        "in_flight": state.usage(f"target:{target.key}").in_flight,
        "limits": limits,
        "provider_remaining": {
            "requests": state.remaining_requests,
            "requests_reset_in": round(state.reset_requests_at - now, 3) if state.remaining_requests is not None else None,
            "tokens": state.remaining_tokens,
            "tokens_reset_in": round(state.reset_tokens_at - now, 3) if state.remaining_tokens is not None else None,
        },
        "latency_ms": None if state.latency_ms is None else round(state.latency_ms, 1),
        "ttft_ms": None if state.ttft_ms is None else round(state.ttft_ms, 1),
        "price": None if price is None else {"input": str(price.input), "output": str(price.output), "version": price.version},
        "weight": target.weight,
        "priority": target.priority,
    }


async def admin_targets(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    targets = _targets(gateway.table)
    states = await gateway.routing.states([t for t, _ in targets.values()])
    now = time.time()
    store = gateway.routing.store
    body = {
        "state": {"backend": store.backend, "degraded": store.degraded, "redis_errors": store.redis_errors},
        "targets": [_render(t, aliases, states.get(key) or TargetState(), now) for key, (t, aliases) in targets.items()],
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")
