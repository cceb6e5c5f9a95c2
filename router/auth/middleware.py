"""``auth_middleware``: every request proves who it is before any handler runs.

    /admin and /admin/*         the admin token (ROUTER_ADMIN_TOKEN), always, even with auth off
    auth.public_paths           nothing (default /healthz, /readyz, /metrics)
    everything else             a client key, unless auth.enabled is false

A missing, malformed, unknown or revoked key gets the same 401 and the same
message, so a guesser learns nothing; an expired key gets 403 (its holder is
known and needs a new key, not a retry).  Each failure is counted, and
repeated failures from one address are slowed down (throttle.py).  The
caller's ``Principal`` is left on the request for the pipeline
(admission.py), which checks aliases and budgets once the body is parsed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from aiohttp import web

from router.auth.keys import presented_key
from router.errors import AuthenticationFailed, PermissionDenied
from router.keys import GATEWAY, PRINCIPAL, RATELIMIT_HEADERS, REQUEST_ID

log = logging.getLogger("router.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UNAUTHENTICATED = "invalid or missing API key: send 'Authorization: Bearer <key>' with a key issued by this gateway"
ADMIN_UNAUTHENTICATED = "the admin API needs 'Authorization: Bearer <ROUTER_ADMIN_TOKEN>'"
ADMIN_DISABLED = "the admin API is disabled: start the gateway with ROUTER_ADMIN_TOKEN set (16 characters or more)"


def is_admin_path(path: str) -> bool:
    # /v1/usage reports every team's spend, so it is the admin's, not a client key's.
    return path == "/admin" or path.startswith("/admin/") or path == "/v1/usage"


async def _refuse(request: web.Request, message: str) -> NoReturn:
    gateway = request.app[GATEWAY]
    address = request.remote or "unknown"
    delay = gateway.auth.throttle.record_failure(address, gateway.table.auth.failure_threshold)
    # Never the key itself: only where and how often.
    log.info("authentication failed for %s %s from %s (request %s)", request.method, request.path, address, request.get(REQUEST_ID))
    if delay:
        await asyncio.sleep(delay)
    raise AuthenticationFailed(message)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    settings = gateway.table.auth
    if is_admin_path(request.path):
        if not gateway.auth.admin_enabled:
            raise AuthenticationFailed(ADMIN_DISABLED, code="admin_disabled")
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not gateway.auth.admin_token_ok(token.strip()):
            await _refuse(request, ADMIN_UNAUTHENTICATED)
        return await handler(request)
    if not settings.enabled or request.path in settings.public_paths:
        return await handler(request)
    presented = presented_key(request.headers)
    principal = await gateway.auth.resolver.resolve(settings, presented) if presented else None
    if principal is None:
        await _refuse(request, UNAUTHENTICATED)
    if principal.key.expired():
        raise PermissionDenied("this API key has expired; ask for a new one", code="key_expired")
    request[PRINCIPAL] = principal
    return await handler(request)


async def add_ratelimit_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: the x-ratelimit-* headers go on every response, streamed or not, errors too."""
    headers = request.get(RATELIMIT_HEADERS) if isinstance(request, web.Request) else None
    if headers:
        response.headers.update(headers)
