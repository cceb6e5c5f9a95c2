"""Which feature costs what: the gateway's throughput with features switched on one at a time.

    python -m bench.ablation [--seconds 5] [--connections 64]

Every variant answers from the in-process ``mock`` provider (no upstream on
the network), so the figures are the gateway's own cost; each runs as a real
``llm-router serve`` process driven by wrk, one after another in one run.
Variants: the base (memory state, auth off, no ledger; metrics and the
request log are always on), then Redis state, virtual keys, the SQLite
ledger, all of them, and all of them with the request log off.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml

from bench.gateway import BENCH_ENV, Process, delete_prefix
from bench.load import run_wrk
from bench.run import json_body
from bench.scenarios import BENCH_KEY
from bench.upstream import ensure_tools, free_port

PRICE = {"input": 1, "output": 2}


def variant_config(workdir: Path, redis_url: str, prefix: str, *, redis: bool = False, auth: bool = False, ledger: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = {
        "providers": {"a": {"kind": "mock"}, "b": {"kind": "mock"}},
        "models": {"bench": {"targets": [{"provider": "a", "model": "m", "price": PRICE}, {"provider": "b", "model": "m2", "price": PRICE}]}},
        "auth": {"enabled": False},
    }
    if redis:
        config["state"] = {"backend": "redis", "url": redis_url, "prefix": prefix}
    if auth:
        config["auth"] = {"enabled": True, "teams": {"bench": {}}, "keys": {"bench": {"key": BENCH_KEY, "team": "bench"}}}
    if ledger:
        config["ledger"] = {"sinks": [{"kind": "sqlite", "path": str(workdir / f"usage-{uuid.uuid4().hex[:6]}.db")}], "journal_dir": str(workdir / "journal")}
    return config


def measure(label: str, config: dict[str, Any], workdir: Path, args: argparse.Namespace, log_level: str = "info") -> float:
    path = workdir / f"{label.replace(' ', '_').replace(',', '')}.yaml"
    path.write_text(yaml.safe_dump({**config, "logging": {"level": log_level}}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = Process.spawn([sys.executable, "-m", "router", "serve", "--config", str(path), "--port", str(port)], workdir / f"{path.stem}.log", url, BENCH_ENV)
    try:
        proc.wait_ready()
        body = json_body("bench")
        auth = f"Bearer {BENCH_KEY}"
        run_wrk(url + "/v1/chat/completions", body, connections=args.connections, seconds=1, authorization=auth)  # warm-up
        result = run_wrk(url + "/v1/chat/completions", body, connections=args.connections, seconds=args.seconds, authorization=auth)
    finally:
        proc.stop()
    if result.non_2xx or result.socket_errors:
        raise SystemExit(f"bench.ablation: {label}: {result.non_2xx} non-2xx, {result.socket_errors} socket errors")
    return result.rps


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ablation")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    ensure_tools()
    prefix = f"llmr-ablation-{uuid.uuid4().hex[:8]}"
    variants: list[tuple[str, dict[str, bool], str]] = [
        ("base", {}, "info"),
        ("+ redis state", {"redis": True}, "info"),
        ("+ virtual keys", {"auth": True}, "info"),
        ("+ sqlite ledger", {"ledger": True}, "info"),
        ("all", {"redis": True, "auth": True, "ledger": True}, "info"),
        ("all, request log off", {"redis": True, "auth": True, "ledger": True}, "warning"),
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="llm-router-ablation-") as tmp:
            base = None
            print(f"{'variant':24s} {'req/s':>8s}  vs base   ({args.connections} connections, {args.seconds:g}s each, mock provider)")
            for label, switches, level in variants:
                rps = measure(label, variant_config(Path(tmp), args.redis_url, prefix, **switches), Path(tmp), args, level)
                base = base or rps
                print(f"{label:24s} {rps:8.0f}  {rps / base:6.2f}", flush=True)
    finally:
        delete_prefix(args.redis_url, prefix)


if __name__ == "__main__":
    main()
