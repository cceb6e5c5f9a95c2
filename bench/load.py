"""Driving one target: wrk for JSON calls, a small aiohttp client for streams.

wrk (Debian's package) measures what a Python client could not without
becoming the bottleneck; ``post.lua`` gives it the POST body and prints the
latency distribution as JSON.  wrk cannot see inside a response, so the
stream scenario uses ``stream_client``: bounded in streams and in time, it
times the first content chunk of each stream and counts chunks per second.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import aiohttp
import orjson
import uvloop

POST_LUA = Path(__file__).with_name("post.lua")


@dataclass
class WrkResult:
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int  # wrk's "status errors": answers with status >= 400
    socket_errors: int  # connect + read + write errors and timeouts

    @property
    def ok_rps(self) -> float:
        """Answers below 400 per second: a fast 503 is not throughput."""
        return round((self.requests - self.non_2xx) / self.seconds, 1) if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok_rps": self.ok_rps}


def run_wrk(url: str, body: bytes, *, connections: int, seconds: float, authorization: str = "", threads: int = 1) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("bench: wrk not found (ensure_tools installs it)")
    env = {**os.environ, "BENCH_BODY": body.decode(), "BENCH_AUTHORIZATION": authorization}
    cmd = [wrk, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(POST_LUA), url]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}) on {url}:\n{done.stdout}\n{done.stderr}")
    raw = orjson.loads(line.removeprefix("BENCH_RESULT "))
    secs = raw["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        requests=raw["requests"],
        seconds=round(secs, 2),
        rps=round(raw["requests"] / secs, 1) if secs else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        non_2xx=raw["non_2xx"],
        socket_errors=raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"],
    )


def combine_rounds(rounds: list[WrkResult]) -> WrkResult:
    """One figure from several rounds of the same scenario: total rate, median percentiles, summed errors.

    The rounds of every target alternate, so load from elsewhere on a shared
    machine falls on all targets alike instead of on whichever ran during it.
    """
    requests = sum(r.requests for r in rounds)
    seconds = sum(r.seconds for r in rounds)
    return WrkResult(
        connections=rounds[0].connections,
        requests=requests,
        seconds=round(seconds, 2),
        rps=round(requests / seconds, 1) if seconds else 0.0,
        p50_ms=median(r.p50_ms for r in rounds),
        p99_ms=median(r.p99_ms for r in rounds),
        non_2xx=sum(r.non_2xx for r in rounds),
        socket_errors=sum(r.socket_errors for r in rounds),
    )


@dataclass
class StreamResult:
    streams: int
    ttfc_p50_ms: float  # request sent -> first content chunk, one stream at a time
    chunks_per_s: float  # chunks relayed per second with ``concurrency`` streams in flight
    chunks_per_stream: float
    non_2xx: int
    socket_errors: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StreamTarget:
    url: str
    body: bytes
    authorization: str = ""
    ttfc: list[float] = field(default_factory=list)
    chunks: int = 0
    streams: int = 0
    seconds: float = 0.0
    non_2xx: int = 0
    socket_errors: int = 0

    def result(self) -> StreamResult:
        return StreamResult(
            streams=len(self.ttfc) + self.streams,
            ttfc_p50_ms=round(median(self.ttfc) * 1000, 3) if self.ttfc else float("nan"),
            chunks_per_s=round(self.chunks / self.seconds, 1) if self.seconds else 0.0,
            chunks_per_stream=round(self.chunks / self.streams, 1) if self.streams else 0.0,
            non_2xx=self.non_2xx,
            socket_errors=self.socket_errors,
        )


async def _one_stream(session: aiohttp.ClientSession, target: StreamTarget) -> tuple[float, int] | None:
    """(seconds to the first content chunk, content chunks seen), or None after counting an error."""
    headers = {"Content-Type": "application/json", **({"Authorization": target.authorization} if target.authorization else {})}
    started = time.perf_counter()
    first = 0.0
    chunks = 0
    try:
        async with session.post(target.url, data=target.body, headers=headers) as response:
            if response.status >= 300:
                await response.read()
                target.non_2xx += 1
                return None
            async for line in response.content:
                if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                    if not chunks:
                        first = time.perf_counter() - started
                    chunks += 1
    except (aiohttp.ClientError, TimeoutError):
        target.socket_errors += 1
        return None
    return first, chunks


async def _drive_streams(targets: dict[str, StreamTarget], latency_streams: int, load_streams: int, concurrency: int, rounds: int, budget_s: float) -> None:
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        # Time to first chunk: one stream at a time, nothing queued in front of it, the targets taking turns.
        for _ in range(latency_streams):
            if time.monotonic() - started >= budget_s / 2:
                break
            for target in targets.values():
                timing = await _one_stream(session, target)
                if timing is not None:
                    target.ttfc.append(timing[0])
        # Chunks per second: ``concurrency`` streams in flight, in rounds that alternate between targets.
        per_round = max(1, load_streams // rounds)
        round_budget = (budget_s - (time.monotonic() - started)) / (rounds * len(targets))
        for _ in range(rounds):
            for target in targets.values():
                await _stream_load(session, target, per_round, concurrency, time.monotonic() + max(round_budget, 0.5))


async def _stream_load(session: aiohttp.ClientSession, target: StreamTarget, streams: int, concurrency: int, deadline: float) -> None:
    remaining = streams

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            timing = await _one_stream(session, target)
            if timing is not None:
                target.chunks += timing[1]
                target.streams += 1

    begun = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    target.seconds += time.perf_counter() - begun


def run_streams(
    targets: dict[str, tuple[str, bytes, str]],
    *,
    latency_streams: int = 200,
    load_streams: int = 1000,
    concurrency: int = 16,
    rounds: int = 1,
    budget_s: float = 60.0,
) -> dict[str, StreamResult]:
    """Both stream figures for every target (url, body, Authorization header or ""), bounded by stream counts and by ``budget_s`` in all."""
    state = {name: StreamTarget(url, body, authorization) for name, (url, body, authorization) in targets.items()}
    uvloop.run(_drive_streams(state, latency_streams, load_streams, concurrency, rounds, budget_s))
    return {name: target.result() for name, target in state.items()}
