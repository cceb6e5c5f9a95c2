"""Every aiohttp ``AppKey`` and ``RequestKey`` the gateway uses, in one place.

A leaf: it imports only the types it names, and nothing it imports comes
back here, so handlers and middlewares anywhere can read the app's objects
without an import cycle.
"""

from __future__ import annotations

from aiohttp import web

from router.auth.keys import Principal
from router.gateway import Gateway
from router.metrics import Metrics
from router.reload import Reloader

GATEWAY = web.AppKey("gateway", Gateway)  # the route table, transport, routing, auth, ledger of one process
METRICS = web.AppKey("metrics", Metrics)  # its Prometheus registry
RELOADER = web.AppKey("reloader", Reloader)  # swaps the route table (SIGHUP, --watch, POST /admin/reload)
REQUEST_ID = web.RequestKey("request_id", str)  # the client's x-request-id, or one we made
PRINCIPAL = web.RequestKey("principal", Principal)  # who is asking, once auth_middleware has checked the key
RATELIMIT_HEADERS = web.RequestKey("ratelimit_headers", dict[str, str])  # x-ratelimit-* for whatever response follows
