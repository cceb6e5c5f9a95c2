"""llm-router: an OpenAI-compatible gateway that routes, retries, fails over and accounts.

Where a request goes, by file:
    app.py              HTTP surface: endpoints and middlewares
    request.py          the client's body, parsed and checked once
    routing/            which targets, in which order: strategies, health, max_price, trace
    state/              routing state shared by replicas (memory or Redis), the limiter
    pipeline.py         fallback -> retries -> one attempt -> stream relay
    retry.py            backoff, Retry-After, deadline
    transport.py        all upstream I/O
    accounting/         usage records, prices, the ledger
    ../providers/       one adapter per upstream API, pure translation
"""

__version__ = "0.1.0"
