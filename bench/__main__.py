"""``python -m bench``: run the benchmark and print the table (see bench/run.py)."""

from __future__ import annotations

import argparse
import sys

from bench.run import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="the lean and company gateway scenarios against a bare aiohttp forwarder, all over nginx"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds: every scenario, tiny counts (numbers mean little)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target and concurrency, split over the rounds (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per scenario, so drift on a shared machine hits every target alike (default 3)"
    )
    parser.add_argument(
        "--long-run", type=int, default=None, help="requests in the gateway's long run between the RSS samples (default 200000; 2000 with --quick)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each gateway scenario (default 1, as the targets assume)")
    parser.add_argument("--results", default=None, help="directory for the JSON report (default: bench/results)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="the Redis the company scenario's state lives in")
    parser.add_argument("--redis-prefix", default=None, help="the company scenario's state.prefix (default: a fresh llmrbench:<id>:); deleted afterwards")
    args = parser.parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
