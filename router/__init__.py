"""llm-router: an OpenAI-compatible gateway that routes, retries, fails over and accounts.

Where a request goes, by file:
    app.py              HTTP surface: endpoints and middlewares
    request.py          the client's body, parsed and checked once
    routing/            which targets, in which order: strategies, health, max_price, trace
    state/              routing state shared by replicas (memory or Redis), the limiter
    pipeline.py         fallback -> retries -> one attempt -> stream relay
    retry.py            backoff, Retry-After, deadline
    transport.py        all upstream I/O
    accounting/         usage records, prices, the ledger and its sinks, /v1/usage
    metrics.py          Prometheus /metrics
    ../providers/       one adapter per upstream API, pure translation

Running it:
    server.py           the socket, and the graceful drain on SIGTERM
    reload.py           routes.yaml reloaded live (SIGHUP, --watch, POST /admin/reload)
    logs.py             structured logs: one line per request, never a prompt or a key
"""

__version__ = "0.1.0"
