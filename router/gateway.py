"""The ``Gateway``: what one running instance holds.

The route table, the upstream transport, the routing engine over its state
store, access control, the ledger and the record listeners hang off one
object, stored under ``router.keys.GATEWAY`` in the aiohttp app.  Each
resource is opened and closed by its own ``cleanup_ctx`` in
``router/app.py``; nothing here is a module-level global, and this module
imports nothing that reads the app's keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from router.accounting.ledger import Ledger
from router.accounting.record import RequestRecord
from router.auth.service import AuthService
from router.config import RouteTable
from router.logs import remember_secrets
from router.routing.checks import HealthChecks
from router.routing.engine import RoutingEngine
from router.state.memory import MemoryStore
from router.transport import Transport

log = logging.getLogger("router")


class Gateway:
    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.transport = Transport()
        self.transport.follow(table.server)
        self.ready = False
        self.in_flight = 0  # client requests being handled now (app.overload_middleware)
        self.overloaded = 0  # requests refused because in_flight had reached server.max_in_flight
        self.redis: Any = None  # redis.asyncio.Redis when state.backend is redis
        self.auth = AuthService()  # keys, teams, budgets (router/auth)
        # Orders and admits candidates over the state store (memory, or Redis once started).
        self.routing = RoutingEngine(MemoryStore())
        self.health_checks = HealthChecks()  # only for providers with health.check_interval
        self.ledger: Ledger | None = Ledger(table.ledger) if table.ledger is not None else None
        # Called with every finished request, exactly once each (the request log, the ledger, metrics).
        self.record_listeners: list[Callable[[RequestRecord], None]] = []
        remember_secrets(table.secrets())

    def swap_table(self, table: RouteTable) -> None:
        """Atomically replace the route table; requests in flight keep the one they started with."""
        self.table = table
        self.transport.follow(table.server)

    def account(self, record: RequestRecord) -> None:
        for listener in self.record_listeners:
            try:
                listener(record)
            except Exception:  # a broken listener must not fail the request it describes
                log.exception("record listener %r failed for request %s", listener, record.request_id)
