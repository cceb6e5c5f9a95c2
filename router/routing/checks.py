"""Active health checks: a cheap request to each target of a provider that sets ``health.check_interval``.

A check is a one-token, non-streamed call with no client behind it.  Its
outcome goes into the shared state exactly like a half-open probe's: a
success closes an open circuit at once (a recovered target comes back
before its cooldown ends), a failure counts like any other and re-opens an
open circuit.  Checks take no limiter lease and are not counted against
rpm/tpm: they are the operator's own traffic.  With Redis, every replica
runs its checks; their outcomes land in the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from providers import ADAPTERS
from router.config import RouteTable, Target
from router.errors import UpstreamError, upstream_status_error
from router.operations import Operation
from router.outcome import HealthEffect
from router.request import new_request_id
from router.retry import retry_after
from router.routing.engine import RoutingEngine
from router.routing.health import read_quota
from router.state.limiter import Grant
from router.state.store import Claim, Outcome
from router.transport import Transport

log = logging.getLogger("router.health")

CHECK_BODY = {"messages": [{"role": "user", "content": "ping"}], "prompt": "ping", "max_tokens": 1}
NO_LEASE = Grant(lease="health-check", scopes=(), second=0, tokens=0)


def checked_targets(table: RouteTable) -> list[Target]:
    seen: dict[str, Target] = {}
    for alias in table.aliases.values():  # wildcard targets have no model of their own to check
        for target in alias.targets:
            if target.provider.health.check_interval is not None:
                seen.setdefault(target.key, target)
    return list(seen.values())


async def check_once(engine: RoutingEngine, transport: Transport, target: Target) -> str:
    """Send one check to ``target`` and report it; returns the outcome kind."""
    adapter = ADAPTERS[target.provider.kind].configured(target.provider.options)
    op = Operation.CHAT if Operation.CHAT in adapter.capabilities.operations else Operation.COMPLETION
    body = {k: v for k, v in CHECK_BODY.items() if k != ("prompt" if op is Operation.CHAT else "messages")}
    call = adapter.build_call(op, body, target.model, False)
    call.connect_timeout = target.timeouts.connect
    started = time.monotonic()
    outcome = Outcome(HealthEffect.OK, probe=True)
    try:
        response = await transport.send(target.provider, call, new_request_id())
        read_quota(response.headers, outcome)
        if response.status >= 400:
            response.close()
            raise upstream_status_error(target.provider.name, response.status, "health check failed", retry_after=retry_after(response.headers))
        await response.read()
    except UpstreamError as exc:
        outcome.kind = exc.health
        outcome.retry_after = exc.retry_after
    outcome.latency_ms = (time.monotonic() - started) * 1000
    engine.store.report(Claim(target.key, (), 0, target.provider.health), NO_LEASE, outcome)
    return outcome.kind


class HealthChecks:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self, engine: RoutingEngine, transport: Transport, table: RouteTable) -> None:
        targets = checked_targets(table)
        if targets:
            self._task = asyncio.get_running_loop().create_task(self._run(engine, transport, targets))

    async def _run(self, engine: RoutingEngine, transport: Transport, targets: list[Target]) -> None:
        due = {t.key: 0.0 for t in targets}
        while True:
            now = time.monotonic()
            for target in targets:
                if due[target.key] <= now:
                    interval = target.provider.health.check_interval or 60.0
                    due[target.key] = now + interval
                    try:
                        async with asyncio.timeout(max(interval, target.timeouts.connect)):
                            await check_once(engine, transport, target)
                    except Exception as exc:  # a check must never take the checker down
                        log.warning("health check of %s failed to run: %r", target.key, exc)
            await asyncio.sleep(max(0.01, min(due.values()) - time.monotonic()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
