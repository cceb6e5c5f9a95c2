"""What one Redis round trip costs on this machine, the floor under every shared-state check.

    python -m bench.redis_rtt [--url redis://127.0.0.1:6379/0] [--count 3000]

Prints the median of a raw asyncio PING over one connection, a redis-py PING
and a redis-py EVALSHA of a trivial script, so the Redis share of the
gateway's added latency can be told from its CPU share.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse

import redis.asyncio as aioredis
import uvloop


async def _median_us(call: Callable[[], Awaitable[object]], count: int) -> float:
    for _ in range(min(200, count)):
        await call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


async def measure(url: str, count: int) -> dict[str, float]:
    parsed = urlparse(url)
    reader, writer = await asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 6379)

    async def raw_ping() -> bytes:
        writer.write(b"PING\r\n")
        return await reader.readline()

    client = aioredis.from_url(url)
    sha = await client.script_load("return 1")
    try:
        return {
            "raw asyncio PING": await _median_us(raw_ping, count),
            "redis-py PING": await _median_us(client.ping, count),
            "redis-py EVALSHA": await _median_us(lambda: client.evalsha(sha, 0), count),
        }
    finally:
        writer.close()
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_rtt")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    for name, micros in uvloop.run(measure(args.url, args.count)).items():
        print(f"{name:20s} p50 {micros:7.1f} µs")


if __name__ == "__main__":
    main()
