"""CORS: a browser app calling the gateway directly (``server.cors``; off until an origin is allowed).

    cors_middleware        answers a preflight (OPTIONS with Origin and
                           Access-Control-Request-Method) before auth: 204 with
                           the allowed methods and headers for an allowed
                           origin, 403 with no CORS headers for any other
    add_cors_headers       on_response_prepare: an allowed origin's real
                           request gets Access-Control-Allow-Origin and the
                           gateway's headers exposed, on every response,
                           streamed or not, errors too

Auth is still enforced on the real request: CORS only lets the browser send it.
No cookies are read, so no credentials mode is offered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from router.config import CorsSettings
from router.errors import PermissionDenied
from router.keys import GATEWAY

METHODS = "GET, POST, OPTIONS"
EXPOSED = ", ".join(
    (
        "x-request-id",
        "x-router-trace",
        "x-router-attempts",
        "x-router-provider",
        "x-router-model",
        "x-router-cost-usd",
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    )
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def allowed(cors: CorsSettings, origin: str | None) -> bool:
    return origin is not None and ("*" in cors.allow_origins or origin in cors.allow_origins)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A preflight is answered here, before auth (a browser sends no key with it)."""
    cors = request.app[GATEWAY].table.server.cors
    if request.method != "OPTIONS" or not cors.allow_origins or "Access-Control-Request-Method" not in request.headers:
        return await handler(request)
    origin = request.headers.get("Origin")
    if not allowed(cors, origin):
        raise PermissionDenied(f"origin {origin!r} may not call this gateway from a browser (server.cors.allow_origins)")
    asked = request.headers.get("Access-Control-Request-Headers", "")
    headers = {
        "Access-Control-Allow-Origin": origin or "",
        "Access-Control-Allow-Methods": METHODS,
        "Access-Control-Allow-Headers": asked if "*" in cors.allow_headers else ", ".join(cors.allow_headers),
        "Access-Control-Max-Age": str(cors.max_age),
        "Vary": "Origin, Access-Control-Request-Headers",
    }
    return web.Response(status=204, headers=headers)


async def add_cors_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: an allowed origin may read the answer and the gateway's own headers."""
    cors = request.app[GATEWAY].table.server.cors
    origin = request.headers.get("Origin")
    if cors.allow_origins and allowed(cors, origin) and "Access-Control-Allow-Origin" not in response.headers:
        response.headers["Access-Control-Allow-Origin"] = origin or ""
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
        response.headers["Vary"] = "Origin"
