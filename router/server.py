"""Running the app on a socket: one code path for the CLI and the tests.

Handlers are cancelled when their client disconnects (``handler_cancellation``),
which is how a streaming client that goes away cancels its upstream call at once.

``RunningServer.stop`` is the graceful shutdown: report not-ready, close the
listening socket, let requests and streams in flight finish for up to
``server.shutdown_grace`` seconds, then run the gateway's shutdown hooks and
close Redis and the upstream sessions (``Gateway.stop``, via cleanup_ctx).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import LineTooLong

from router.app import create_app
from router.auth.settings import unsafe_listen
from router.config import ConfigError, RouteTable
from router.errors import InvalidRequest
from router.gateway import Gateway
from router.keys import GATEWAY, RELOADER
from router.reload import Reloader

PROTOCOL_LOG = logging.getLogger("router.http")


class JsonErrorHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse in OpenAI's error shape.

    A request aiohttp cannot read (a 100 KB header, 2,000 headers, a long
    request line, bad chunk framing, Content-Length with Transfer-Encoding)
    never reaches a handler or a middleware; aiohttp answers it here, with a
    text/plain page and a traceback in the log.  This answers it as JSON with
    the status the problem deserves (431 for headers, 414 for the request
    line, else 400) and logs one line, no traceback.
    """

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response had begun; the connection is closed instead")
        status, text = _protocol_status(status, exc)
        PROTOCOL_LOG.info("could not read a request from %s: %s (%d)", request.remote, text, status)
        error = InvalidRequest(f"the request could not be read: {text}", code="bad_request" if status == 400 else "request_too_large")
        response = web.Response(status=status, body=error.to_body(), content_type="application/json")
        response.force_close()
        return response


def _protocol_status(status: int, exc: BaseException | None) -> tuple[int, str]:
    if status >= 500:  # not a parse error: a bug, said without its details
        return 500, "the gateway failed to handle this request; it has been logged"
    if isinstance(exc, LineTooLong):
        return 431, "the request line or a header is too long"
    text = getattr(exc, "message", None) or str(exc or "") or "bad request"
    if "too many headers" in text.lower():
        return 431, "too many request headers"
    return 400, text[:200]


class JsonErrorServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


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


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening TCP socket on ``host:port``; raises OSError (EADDRINUSE: the port is taken)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return socket.create_server(address, family=family, backlog=1024, reuse_port=reuse_port)


async def start_server(
    table: RouteTable, host: str | None = None, port: int | None = None, *, reuse_port: bool = False, sock: socket.socket | None = None
) -> RunningServer:
    bind_host = str(sock.getsockname()[0]) if sock is not None else (host or table.server.host)
    refusal = unsafe_listen(table.auth, bind_host)
    if refusal is not None:
        raise ConfigError(table.source, [("auth.enabled", refusal)])
    if sock is None:
        # The socket before anything else: a port in use (OSError) then leaves nothing started to undo.
        sock = listening_socket(bind_host, table.server.port if port is None else port, reuse_port=reuse_port)
    app = create_app(table)
    # lingering_time: after answering a request whose body never came, how long aiohttp still reads
    # it before closing; short, or a client trickling its body holds the connection past body_timeout.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=table.server.shutdown_grace, lingering_time=1.0)
    await runner.setup()
    assert runner.server is not None
    runner.server.__class__ = JsonErrorServer  # aiohttp has no hook for its protocol-level error page
    await web.SockSite(runner, sock).start()
    bound = runner.addresses[0]
    return RunningServer(runner, bound[0], bound[1])
