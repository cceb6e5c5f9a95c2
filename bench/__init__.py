"""The benchmark: the gateway against the floor of a bare aiohttp forwarder, both over nginx.

    python -m bench [--quick] [--long-run N] [--workers N]     (or ./dev bench)
    python -m bench.soak [--seconds 30] [--scenario company] [--concurrency 16,64,128,256] [--replicas 1]

Files, by what they own:
    upstream.py    nginx as the fixed-cost upstream: canned chat.completion and SSE stream
    floor.py       the floor: a bare aiohttp forwarder that parses nothing and decides nothing
    scenarios.py   the gateway's two configs: lean (memory state, no auth) and company (keys, budget, Redis, ledger)
    gateway.py     starting a gateway process, scraping it, reading its log for errors
    soak.py        a scenario sustained at each concurrency: zero non-2xx, zero tracebacks, or exit 1
    load.py        driving a target: wrk (post.lua) for JSON calls, an aiohttp client for streams
    run.py         the run: start everything, drive each target, sample RSS, print, write JSON
"""
