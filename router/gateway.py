"""The ``Gateway``: what one running instance holds, and the typed keys it lives under.

Shared resources (route table, upstream transport, later the state store,
ledger and metrics) hang off one object under ``GATEWAY`` in the aiohttp
app, opened and closed by ``create_app``'s cleanup context.  Nothing here is
a module-level global.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from router.accounting.record import RequestRecord
from router.config import RouteTable
from router.transport import Transport

log = logging.getLogger("router")


class Gateway:
    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.transport = Transport()
        self.ready = False
        # Called with every finished request, exactly once each (the ledger, metrics, logs).
        self.record_listeners: list[Callable[[RequestRecord], None]] = []

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
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.transport.close()


GATEWAY = web.AppKey("gateway", Gateway)
REQUEST_ID = "router.request_id"
