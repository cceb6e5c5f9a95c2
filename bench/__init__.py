"""The benchmark: the gateway against the floor of a bare aiohttp forwarder, both over nginx.

    python -m bench [--quick] [--long-run N]     (or ./dev bench)

Files, by what they own:
    upstream.py    nginx as the fixed-cost upstream: canned chat.completion and SSE stream
    floor.py       the floor: a bare aiohttp forwarder that parses nothing and decides nothing
    features.py    the gateway's routes.yaml, with every feature the schema accepts switched on
    load.py        driving a target: wrk (post.lua) for JSON calls, an aiohttp client for streams
    run.py         the run: start everything, drive each target, sample RSS, print, write JSON
"""
