"""``create_app``: the HTTP surface (endpoints and middlewares) over one ``Gateway``.

Middlewares, each with one concern:
    request_id_middleware   echo the client's x-request-id or make one
    error_middleware        render every error in OpenAI's shape, with its status
    cors_middleware         router/cors.py: a browser's preflight answered before auth (server.cors)
    overload_middleware     at most server.max_in_flight client requests at once; the rest 503 overloaded
    auth_middleware         router/auth/middleware.py: admin token on /admin/*, a client key elsewhere
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from router.accounting.usage_api import usage_response
from router.accounting.wiring import install_accounting
from router.auth.admin import ADMIN_ROUTES
from router.auth.middleware import add_ratelimit_headers, auth_middleware
from router.config import Alias, RouteTable
from router.cors import add_cors_headers, cors_middleware
from router.errors import GatewayError, InvalidRequest, Overloaded, UnknownModel
from router.frontdoor.doors import ANTHROPIC, RESPONSES, door_for
from router.gateway import Gateway
from router.keys import GATEWAY, METRICS, PRINCIPAL, RELOADER, REQUEST_ID
from router.lifecycle import CONTEXTS
from router.logs import RequestLog
from router.metrics import metrics_response
from router.operations import Operation
from router.pipeline import handle_completion, read_body
from router.reload import Reloader, admin_reload
from router.request import decode_body, new_request_id
from router.routing.admin import admin_targets

log = logging.getLogger("router")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


ROUTES = web.RouteTableDef()  # each handler below states its method and path


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("x-request-id")
    # Echo a sane client id; never reflect arbitrary bytes into our headers and logs.
    request[REQUEST_ID] = incoming if incoming and len(incoming) <= 128 and incoming.isprintable() else new_request_id()
    return await handler(request)


def error_response(exc: GatewayError, request: web.Request) -> web.Response:
    """The error in the shape of the API the client called (OpenAI's, or Anthropic's on /v1/messages)."""
    headers = dict(exc.headers)
    request_id = request.get(REQUEST_ID)
    if request_id:
        headers["x-request-id"] = request_id
    body = door_for(request.path).error_body(exc)
    response = web.Response(status=exc.status, body=body, content_type="application/json", headers=headers)
    if exc.closes_connection:
        response.force_close()
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = InvalidRequest(f"{request.method} {request.path}: {exc.reason}", code="not_found" if exc.status == 404 else None)
        error.status = exc.status
        return error_response(error, request)
    except Exception:
        log.exception("unhandled error on %s %s (request %s)", request.method, request.path, request.get(REQUEST_ID))
        return error_response(GatewayError("the gateway failed to handle this request; it has been logged"), request)


@web.middleware
async def overload_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A saturated process says so at once (503 overloaded, Retry-After), rather than timing out into a fake outage."""
    if not request.path.startswith("/v1/"):  # health, metrics and the admin API are never refused
        return await handler(request)
    gateway = request.app[GATEWAY]
    if gateway.in_flight >= gateway.table.server.max_in_flight:
        gateway.overloaded += 1
        raise Overloaded(f"this gateway process is handling {gateway.in_flight} requests, its limit; retry in a second")
    gateway.in_flight += 1
    try:
        return await handler(request)
    finally:
        gateway.in_flight -= 1


@ROUTES.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await handle_completion(request, Operation.CHAT)


@ROUTES.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    return await handle_completion(request, Operation.COMPLETION)


@ROUTES.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.StreamResponse:
    return await handle_completion(request, Operation.EMBEDDING)


@ROUTES.post("/v1/messages")
async def messages(request: web.Request) -> web.StreamResponse:
    return await handle_completion(request, Operation.CHAT, ANTHROPIC)


@ROUTES.post("/v1/messages/count_tokens")
async def count_message_tokens(request: web.Request) -> web.Response:
    """Anthropic's token count, as the gateway estimates it (no upstream is called; the model must be one this key may use)."""
    gateway = request.app[GATEWAY]
    body = decode_body(await read_body(request, gateway.table.server))
    counted = ANTHROPIC.count_tokens(body)
    callable_alias(request, str(body["model"]))
    return web.Response(body=orjson.dumps(counted), content_type="application/json")


@ROUTES.post("/v1/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    return await handle_completion(request, Operation.CHAT, RESPONSES)


def callable_alias(request: web.Request, name: str) -> Alias:
    """The alias serving ``name`` for this caller; 404 model_not_found when there is none or its key may not use it."""
    alias, principal = request.app[GATEWAY].table.lookup(name), request.get(PRINCIPAL)
    if alias is None or (principal is not None and not principal.may_use((alias.name,))):
        raise UnknownModel(f"no model {name!r} is served here; GET /v1/models lists those that are", param="model", code="model_not_found")
    return alias


def model_object(name: str, alias: Alias) -> dict[str, Any]:
    """A callable model name in OpenAI's model object shape (``owned_by`` is the gateway: it routes it)."""
    extra = {"description": alias.description} if alias.description else {}
    return {"id": name, "object": "model", "created": 0, "owned_by": "llm-router", "operations": sorted(op.value for op in alias.operations), **extra}


@ROUTES.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    """The names a client may call; a wildcard alias is a pattern, not a name (``llm-router check`` lists patterns)."""
    table, principal = request.app[GATEWAY].table, request.get(PRINCIPAL)
    data = [model_object(name, alias) for name, alias in table.aliases.items() if principal is None or principal.may_use((name,))]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


@ROUTES.get("/v1/models/{model:.+}")
async def retrieve_model(request: web.Request) -> web.Response:
    """One callable name: an alias, or a name a wildcard alias serves (``mock/anything``)."""
    name = request.match_info["model"]
    return web.Response(body=orjson.dumps(model_object(name, callable_alias(request, name))), content_type="application/json")


@ROUTES.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


@ROUTES.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    checks = {"config": gateway.table is not None, "upstream_session": gateway.transport.is_open, "accepting": gateway.ready}
    ready = all(checks.values())
    # pid: which worker answered, when `serve --workers N` runs several on one port.
    return web.json_response({"status": "ready" if ready else "not ready", "checks": checks, "pid": os.getpid()}, status=200 if ready else 503)


def create_app(table: RouteTable, gateway: Gateway | None = None) -> web.Application:
    gateway = gateway or Gateway(table)
    # The body limit is enforced per request from the live table; this is only
    # aiohttp's outer bound, so a reload that raises the limit still works.
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, cors_middleware, overload_middleware, auth_middleware],
        client_max_size=max(table.server.max_body_bytes, 64 * 1024 * 1024),
    )
    app[GATEWAY] = gateway
    app[RELOADER] = Reloader(gateway)
    gateway.record_listeners.append(RequestLog())
    app[METRICS] = install_accounting(gateway, app[RELOADER])
    app.cleanup_ctx.extend(CONTEXTS)
    app.on_response_prepare.append(add_ratelimit_headers)
    app.on_response_prepare.append(add_cors_headers)
    app.add_routes(ROUTES)
    app.add_routes(ADMIN_ROUTES)
    app.router.add_get("/admin/targets", admin_targets)
    return app


@ROUTES.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[METRICS])


@ROUTES.get("/v1/usage")
async def usage(request: web.Request) -> web.Response:
    return await usage_response(request.app[GATEWAY].ledger, request)


@ROUTES.post("/admin/reload")
async def reload_now(request: web.Request) -> web.Response:
    return await admin_reload(request.app[RELOADER])
