"""The ``Gateway``: what one running instance holds, and the typed keys it lives under.

Shared resources (route table, upstream transport, later the state store,
ledger and metrics) hang off one object under ``GATEWAY`` in the aiohttp
app, opened and closed by ``create_app``'s cleanup context.  Nothing here is
a module-level global.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.accounting.record import RequestRecord
from router.auth.service import AuthService
from router.config import RouteTable
from router.logs import RequestLog, log_event, remember_secrets
from router.reload import Reloader
from router.routing.checks import HealthChecks
from router.routing.engine import RoutingEngine
from router.state import open_redis, open_store
from router.state.memory import MemoryStore
from router.transport import Transport

if TYPE_CHECKING:
    from router.accounting.ledger import Ledger
    from router.metrics import Metrics

log = logging.getLogger("router")


class Gateway:
    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.transport = Transport()
        self.ready = False
        self.in_flight = 0  # client requests being handled now (app.overload_middleware)
        self.overloaded = 0  # requests refused because in_flight had reached server.max_in_flight
        self.redis: Any = None  # redis.asyncio.Redis when state.backend is redis
        self.auth = AuthService()  # keys, teams, budgets (router/auth)
        # Orders and admits candidates over the state store (memory, or Redis once started).
        self.routing = RoutingEngine(MemoryStore())
        self.health_checks = HealthChecks()  # only for providers with health.check_interval
        # Called with every finished request, exactly once each (the ledger, metrics, logs).
        self.record_listeners: list[Callable[[RequestRecord], None]] = [RequestLog(self)]
        # startup_hooks run by start() in order; shutdown_hooks by stop() in reverse, after
        # requests in flight have finished and before Redis and the upstream session close
        # (the ledger's writer and flush, for one).
        self.startup_hooks: list[Callable[[], Awaitable[None]]] = []
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self.metrics: Metrics | None = None
        self.ledger: Ledger | None = None
        self.reloader = Reloader(self)
        remember_secrets(table.secrets())

    def swap_table(self, table: RouteTable) -> None:
        """Atomically replace the route table; requests in flight keep the one they started with."""
        self.table = table

    def account(self, record: RequestRecord) -> None:
        for listener in self.record_listeners:
            try:
                listener(record)
            except Exception:  # a broken listener must not fail the request it describes
                log.exception("record listener %r failed for request %s", listener, record.request_id)

    async def start(self) -> None:
        await self.transport.open()
        if self.table.state.backend == "redis":
            self.redis = open_redis(self.table.state)
            self.auth.use_redis(self.redis, self.table.state.prefix)
        self.routing = RoutingEngine(open_store(self.table.state, self.redis))
        self.auth.use_store(self.routing.store, self.table.state.prefix if self.redis is not None else None)
        self.health_checks.start(self.routing, self.transport, self.table)
        for hook in self.startup_hooks:
            await hook()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.health_checks.stop()
        await self.auth.drain()  # settle every budget reservation before the store goes away
        await self.reloader.wait_idle()
        for hook in reversed(self.shutdown_hooks):
            try:
                await hook()
            except Exception:  # one failing hook must not keep the others (or the closes below) from running
                log.exception("shutdown hook %r failed", hook)
        await self.transport.close()
        await self.routing.store.close()  # the last state reports reach Redis before it closes
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        log_event(log, "gateway stopped", event="stopped")


GATEWAY = web.AppKey("gateway", Gateway)
REQUEST_ID = web.RequestKey("request_id", str)
