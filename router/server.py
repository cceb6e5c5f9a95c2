"""Running the app on a socket: one code path for the CLI and the tests.

Handlers are cancelled when their client disconnects (``handler_cancellation``),
which is how a streaming client that goes away cancels its upstream call at once.

``RunningServer.stop`` is the graceful shutdown: report not-ready, close the
listening socket, let requests and streams in flight finish for up to
``server.shutdown_grace`` seconds, then run the gateway's shutdown hooks and
close Redis and the upstream sessions (``Gateway.stop``, via cleanup_ctx).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from aiohttp import web

from router.app import create_app
from router.auth.settings import unsafe_listen
from router.config import ConfigError, RouteTable
from router.gateway import Gateway
from router.keys import GATEWAY, RELOADER
from router.reload import Reloader


@dataclass
class RunningServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def gateway(self) -> Gateway:
        return self.runner.app[GATEWAY]

    @property
    def reloader(self) -> Reloader:
        return self.runner.app[RELOADER]

    @property
    def open_connections(self) -> int:
        """Client connections still open (in flight or idle keep-alive); for the drain's log line."""
        server = self.runner.server
        return len(server.connections) if server is not None else 0

    async def stop(self) -> None:
        gateway = self.gateway
        gateway.ready = False  # /readyz says so at once, to any connection still open
        # aiohttp reads the grace only at cleanup and has no public setter; take the
        # value from the table in service, so a reload can change it.
        self.runner._shutdown_timeout = gateway.table.server.shutdown_grace
        await self.runner.cleanup()


async def start_server(
    table: RouteTable, host: str | None = None, port: int | None = None, *, reuse_port: bool = False, sock: socket.socket | None = None
) -> RunningServer:
    bind_host = str(sock.getsockname()[0]) if sock is not None else (host or table.server.host)
    refusal = unsafe_listen(table.auth, bind_host)
    if refusal is not None:
        raise ConfigError(table.source, [("auth.enabled", refusal)])
    app = create_app(table)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=table.server.shutdown_grace)
    await runner.setup()
    site: web.BaseSite
    if sock is not None:
        site = web.SockSite(runner, sock)
    else:
        site = web.TCPSite(runner, host or table.server.host, table.server.port if port is None else port, reuse_port=reuse_port or None, backlog=1024)
    await site.start()
    bound = runner.addresses[0]
    return RunningServer(runner, bound[0], bound[1])
