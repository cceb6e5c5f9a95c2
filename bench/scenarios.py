"""The gateway's two benchmark configurations, written for today's routes.yaml schema.

    lean      two ``openai``-kind targets on nginx, memory state, no auth, no
              ledger, request log at warning: the request path with nothing shared
    company   the same targets, and what a company runs: ``state.backend: redis``
              (a unique prefix, deleted afterwards), a client key of a team, key
              rpm/tpm/concurrency limits, a team budget, the SQLite ledger in the
              run's temp dir, ``/metrics`` scraped, the request log at info

Each is a function returning the routes.yaml document, so what a scenario has
on is read here and nowhere else.  The limits and the budget are sized from
the load the benchmark can generate (below), so they are counted on every
request and never refuse one: a non-2xx in the company scenario is the
gateway's failure, never the load tripping a limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The client key the company scenario presents; nginx ignores the upstream key, the transport still sends it.
BENCH_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-bench"
# USD per million tokens: the budget needs a price to reserve against (an unpriced target is never held back).
PRICE = {"input": 1, "output": 2, "version": "bench"}

# Sizing the limits.  The most this benchmark drives is 2 replicas x 256
# connections; on a 2-core box one gateway answers a few thousand req/s, so
# take 20,000 req/s as a ceiling no run here reaches:
#   rpm          20,000 x 60 = 1.2 M requests a minute                   -> 10 M
#   tpm          1.2 M x ~80 estimated tokens (prompt chars / 4 + max_tokens 32)
#                = 96 M tokens a minute                                   -> 10 G
#   concurrency  2 x 256 connections in flight                           -> 10,000
#   budget       each request reserves at most ~160 prompt bytes x $1/M + 32 x $2/M
#                = $0.000224; 1.2 M a minute for a whole day = $390,000   -> $1,000,000 a day
KEY_LIMITS = {"rpm": 10_000_000, "tpm": 10_000_000_000, "concurrency": 10_000}
TEAM_BUDGET = {"usd": 1_000_000, "period": "day"}
SCENARIOS = ("lean", "company")


@dataclass(frozen=True)
class Scenario:
    name: str
    config: dict[str, Any]
    authorization: str  # the Authorization header every request carries ("" without auth)
    scrape_metrics: bool  # scrape /metrics once per round, as a Prometheus server would
    summary: str  # what is on, for the printed report


def _targets(upstream_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def provider(path: str) -> dict[str, Any]:
        return {
            "kind": "openai",
            "base_url": upstream_url + path,
            "api_key": UPSTREAM_KEY,
            "timeouts": {"connect": 5, "first_token": 30, "idle": 30, "total": 60},
        }

    def route(prefix: str) -> dict[str, Any]:
        return {
            "operations": ["chat"],
            "targets": [{"provider": f"{prefix}a", "model": "bench-model", "price": PRICE}, {"provider": f"{prefix}b", "model": "bench-model", "price": PRICE}],
        }

    providers = {
        "nginx-a": provider("/v1"),
        "nginx-b": provider("/v1"),
        "nginx-stream-a": provider("/stream/v1"),
        "nginx-stream-b": provider("/stream/v1"),
    }
    return providers, {"bench": route("nginx-"), "bench-stream": route("nginx-stream-")}


def lean(port: int, upstream_url: str) -> Scenario:
    providers, models = _targets(upstream_url)
    config = {
        "version": 1,
        "server": {"host": "127.0.0.1", "port": port},
        "logging": {"level": "warning", "format": "text"},
        "state": {"backend": "memory"},
        "auth": {"enabled": False},
        "providers": providers,
        "models": models,
    }
    return Scenario("lean", config, "", scrape_metrics=False, summary="2 targets, memory state, no auth, no ledger, log at warning")


def company(port: int, upstream_url: str, workdir: Path, redis_url: str, redis_prefix: str, replica: int = 0) -> Scenario:
    """The company config; ``replica`` gives each gateway process of a multi-replica run its own ledger file."""
    providers, models = _targets(upstream_url)
    config = {
        "version": 1,
        "server": {"host": "127.0.0.1", "port": port},
        "logging": {"level": "info", "format": "text"},
        "state": {"backend": "redis", "url": redis_url, "prefix": redis_prefix},
        "auth": {
            "enabled": True,
            "teams": {"bench": {"budget": TEAM_BUDGET}},
            "keys": {"bench": {"key": BENCH_KEY, "team": "bench", "limits": KEY_LIMITS}},
        },
        "providers": providers,
        "models": models,
        "ledger": {
            "sinks": [{"kind": "sqlite", "path": str(workdir / f"usage-{replica}.db")}],
            "journal_dir": str(workdir / f"ledger-journal-{replica}"),
        },
    }
    return Scenario(
        "company",
        config,
        f"Bearer {BENCH_KEY}",
        scrape_metrics=True,
        summary="2 targets, redis state, key of a team (key rpm/tpm/concurrency, team budget $1M/day), sqlite ledger, /metrics scraped, log at info",
    )


def scenario(name: str, port: int, upstream_url: str, workdir: Path, redis_url: str, redis_prefix: str, replica: int = 0) -> Scenario:
    if name == "lean":
        return lean(port, upstream_url)
    if name == "company":
        return company(port, upstream_url, workdir, redis_url, redis_prefix, replica)
    raise ValueError(f"unknown scenario {name!r}; expected one of: {', '.join(SCENARIOS)}")
