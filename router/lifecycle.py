"""What opens and closes with the app: one ``cleanup_ctx`` per resource, in the order they depend on each other.

aiohttp runs each context up to its ``yield`` at start-up, in list order,
and the rest at shutdown, in reverse.  So shutdown goes: stop accepting;
stop the health checks; settle budget reservations; let a reload finish;
flush the ledger; close the upstream session; send the state store's last
writes and close it; close Redis.  By then the server has already let the
requests in flight finish (``server.shutdown_grace``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from router.keys import GATEWAY, RELOADER
from router.logs import log_event
from router.routing.engine import RoutingEngine
from router.state.connect import open_redis, open_store

log = logging.getLogger("router")

Context = Callable[[web.Application], AsyncIterator[None]]


async def shared_state(app: web.Application) -> AsyncIterator[None]:
    """Redis (when state.backend is redis) and the state store over it; budgets live in that store."""
    gateway = app[GATEWAY]
    settings = gateway.table.state
    if settings.backend == "redis":
        gateway.redis = open_redis(settings)
        gateway.auth.use_redis(gateway.redis, settings.prefix)
    gateway.routing = RoutingEngine(open_store(settings, gateway.redis))
    gateway.auth.use_store(gateway.routing.store, settings.prefix if gateway.redis is not None else None)
    yield
    await gateway.routing.store.close()  # the last releases and reports reach Redis before it closes
    if gateway.redis is not None:
        await gateway.redis.aclose()
        gateway.redis = None
    log_event(log, "gateway stopped", event="stopped")


async def upstream_session(app: web.Application) -> AsyncIterator[None]:
    transport = app[GATEWAY].transport
    await transport.open()
    yield
    await transport.close()


async def ledger_writer(app: web.Application) -> AsyncIterator[None]:
    ledger = app[GATEWAY].ledger
    if ledger is not None:
        await ledger.start()
    yield
    if ledger is not None:
        await ledger.close()  # every record the requests left reaches a sink or the journal


async def reloads(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[RELOADER].wait_idle()


async def settlements(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[GATEWAY].auth.drain()


async def health_checks(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    gateway.health_checks.start(gateway.routing, gateway.transport, gateway.table)
    yield
    await gateway.health_checks.stop()


async def accepting(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    gateway.ready = True
    yield
    gateway.ready = False


CONTEXTS: tuple[Context, ...] = (shared_state, upstream_session, ledger_writer, reloads, settlements, health_checks, accepting)
