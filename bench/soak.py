"""The soak check: a scenario under sustained load, then its log read for errors.

    python -m bench.soak [--seconds 30] [--scenario company] [--concurrency 16,64,128,256] [--replicas 1]

Serves one scenario (bench/scenarios.py; limits and budget far above what
wrk can send) in front of nginx, and drives it with wrk for ``--seconds`` at
each concurrency in turn.  With ``--replicas 2``, two gateway processes share
one Redis (the same ``state.prefix``), each loaded by its own wrk at the same
time.  ``/metrics`` is scraped after each level.  When the load is over the
gateways are stopped (the drain is part of the check) and each log is read:
ERROR and CRITICAL records, and records carrying a ``Traceback`` or
``unhandled error``, are attributed by their timestamps to the level they
were written in.  It prints, per replica and concurrency: requests, req/s,
non-2xx, socket errors, ERROR lines and tracebacks, and exits 1 if any of
those is not zero (2 if the setup failed).

This is the reproducible form of issue 10's "company config, one process,
sustained 30 s each at c=16, 64, 128, 256: zero non-2xx, zero tracebacks":

    python -m bench.soak --seconds 30 --scenario company --concurrency 16,64,128,256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.gateway import LogScan, Process, delete_prefix, post, scan_log, scrape, start_gateway
from bench.load import WrkResult, run_wrk
from bench.run import json_body
from bench.scenarios import SCENARIOS, Scenario, scenario
from bench.upstream import Nginx, ensure_tools, free_port


@dataclass
class Level:
    """One concurrency on one replica: what wrk saw, and what the gateway logged meanwhile."""

    replica: int
    connections: int
    wrk: WrkResult
    metrics_status: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    window: str = ""  # the name of this level's load window in the log scan
    log: LogScan = field(default_factory=LogScan)

    @property
    def failures(self) -> int:
        return self.wrk.non_2xx + self.wrk.socket_errors + self.log.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "connections": self.connections,
            "wrk": self.wrk.to_json(),
            "metrics_status": self.metrics_status,
            "metrics": self.metrics,
            "log": self.log.to_json(),
        }


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected connection counts like 16,64,128,256, got {text!r}") from None
    if not levels or any(c < 1 for c in levels):
        raise argparse.ArgumentTypeError(f"expected positive connection counts like 16,64,128,256, got {text!r}")
    return levels


def render(levels: list[Level], outside: list[LogScan], exit_codes: list[int | None], args: argparse.Namespace) -> str:
    head = f"{'replica':>7}  {'conns':>5}  {'requests':>9}  {'req/s':>8}  {'p99 ms':>8}  {'non-2xx':>7}  {'sock err':>8}  {'ERROR':>5}  {'tracebacks':>10}  {'warnings':>8}"
    lines = [f"soak: scenario {args.scenario}, {args.replicas} replica(s) x {args.workers} worker(s), {args.seconds:g}s per concurrency", head]
    for lv in levels:
        w = lv.wrk
        lines.append(
            f"{lv.replica:>7}  {lv.connections:>5}  {w.requests:>9,}  {w.rps:>8,.0f}  {w.p99_ms:>8.1f}  {w.non_2xx:>7}  {w.socket_errors:>8}  "
            f"{lv.log.errors:>5}  {lv.log.tracebacks:>10}  {lv.log.warnings:>8}"
        )
    for replica, scan in enumerate(outside):
        lines.append(
            f"replica {replica}, outside the load (start-up, shutdown; exit {exit_codes[replica]}): "
            f"{scan.errors} ERROR, {scan.tracebacks} tracebacks, {scan.warnings} warnings, {scan.other} lines that are not log records"
        )
    watched = {f"replica {lv.replica} c={lv.connections}": lv.metrics for lv in levels if lv.metrics}
    if watched:
        lines.append("metrics after each level: " + "; ".join(f"{k} {v}" for k, v in watched.items()))
    noisy: dict[str, int] = {}
    for scan in [lv.log for lv in levels] + outside:
        for count, message in scan.top():
            noisy[message] = noisy.get(message, 0) + count
    if noisy:
        lines.append("most repeated WARNING-or-worse lines:")
        lines += [f"  {count:>6} x {message}" for message, count in sorted(noisy.items(), key=lambda kv: -kv[1])[:8]]
    return "\n".join(lines)


def soak(args: argparse.Namespace) -> int:
    ensure_tools()
    prefix = args.redis_prefix or f"llmrsoak:{uuid.uuid4().hex[:12]}:"
    gateways: list[Process] = []
    nginx: Nginx | None = None
    levels: list[Level] = []
    windows: list[list[tuple[str, float, float]]] = [[] for _ in range(args.replicas)]
    chosen: list[Scenario] = []
    with tempfile.TemporaryDirectory(prefix="llmr-soak-") as tmp:
        work = Path(tmp)
        try:
            nginx = Nginx(work).start()
            for replica in range(args.replicas):
                port = free_port()
                chosen.append(scenario(args.scenario, port, nginx.url, work, args.redis_url, prefix, replica))
                gateways.append(start_gateway(chosen[replica], port, work, workers=args.workers, label=f"{args.scenario}-{replica}"))
            body = json_body("bench")
            for replica, gateway in enumerate(gateways):
                headers = {"Authorization": chosen[replica].authorization} if chosen[replica].authorization else {}
                status, answer = post(gateway.url + "/v1/chat/completions", body, headers)
                if status != 200:
                    print(f"soak: replica {replica} answered {status}: {answer[:500]!r}", file=sys.stderr)
                    return 2
            print(f"soak: nginx {nginx.url}, {', '.join(g.url for g in gateways)}; {chosen[0].summary}", flush=True)
            with ThreadPoolExecutor(max_workers=args.replicas) as pool:
                for index, connections in enumerate(args.concurrency):
                    print(f"soak: {connections} connections for {args.seconds:g}s on each of {args.replicas} replica(s)", flush=True)
                    started = time.time()
                    futures = [
                        pool.submit(
                            run_wrk,
                            gateway.url + "/v1/chat/completions",
                            body,
                            connections=connections,
                            seconds=args.seconds,
                            authorization=chosen[replica].authorization,
                        )
                        for replica, gateway in enumerate(gateways)
                    ]
                    results = [f.result() for f in futures]
                    ended = time.time()
                    for replica, result in enumerate(results):
                        windows[replica].append((str(index), started, ended))
                        status, watched = scrape(gateways[replica].url)
                        levels.append(Level(replica, connections, result, status, watched, window=str(index)))
        finally:
            exit_codes = [gateway.stop() for gateway in gateways]
            if nginx is not None:
                nginx.stop()
            if args.scenario == "company":
                try:
                    delete_prefix(args.redis_url, prefix)
                except Exception as exc:  # cleanup must not hide the run's own error
                    print(f"soak: could not delete Redis keys under {prefix}: {exc}", file=sys.stderr)
        # Read after the gateways stopped: a traceback on the way out counts as much as one under load.
        scans = [scan_log(gateway.log, windows[replica]) for replica, gateway in enumerate(gateways)]
        if args.keep_logs:
            keep = Path(args.keep_logs)
            keep.mkdir(parents=True, exist_ok=True)
            for gateway in gateways:
                (keep / gateway.log.name).write_bytes(gateway.log.read_bytes())
    for level in levels:
        level.log = scans[level.replica][level.window]
    outside = [scan["outside"] for scan in scans]
    print()
    print(render(levels, outside, exit_codes, args))
    failures = sum(lv.failures for lv in levels) + sum(s.problems for s in outside)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "scenario": args.scenario,
                    "replicas": args.replicas,
                    "workers": args.workers,
                    "seconds": args.seconds,
                    "levels": [lv.to_json() for lv in levels],
                    "outside": [s.to_json() for s in outside],
                    "exit_codes": exit_codes,
                    "failures": failures,
                },
                indent=2,
            )
        )
    print(f"\nsoak: {'PASSED' if not failures else 'FAILED'}: {failures} non-2xx answers, socket errors and ERROR-or-traceback log records in all")
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description="a scenario under sustained wrk load; fails on any non-2xx, socket error or logged error"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of load at each concurrency (default 30)")
    parser.add_argument("--scenario", choices=SCENARIOS, default="company")
    parser.add_argument("--concurrency", type=parse_concurrency, default=[16, 64, 128, 256], help="connections per level, in order (default 16,64,128,256)")
    parser.add_argument("--replicas", type=int, default=1, help="gateway processes on one Redis, each driven by its own wrk (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per replica (default 1)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-prefix", default=None, help="state.prefix for the company scenario (default: a fresh llmrsoak:<id>:); deleted afterwards")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--keep-logs", default=None, help="copy the gateways' logs into this directory")
    args = parser.parse_args(argv)
    if args.replicas < 1 or args.workers < 1:
        parser.error("--replicas and --workers must be at least 1")
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
