"""The gateway's routes.yaml for the benchmark: every feature the schema accepts, switched on.

The base is what exists on every branch: a route (``bench``) with two
targets, each its own ``openai``-kind provider pointing at nginx, a second
route for streams, and ``state.backend: redis`` on a unique prefix.  Features
that arrive with other branches (virtual keys, the usage ledger, Prometheus
metrics) are *optional fragments*: each is merged into the config and kept
only if ``router.config.parse_table`` accepts it, so the benchmark runs before
and after those merges and says which features it had on.  When a feature's
real schema differs from every candidate here, add its shape to
``OPTIONAL_FEATURES``; nothing else needs to change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from router.config import ConfigError, parse_table

# The client key the benchmark presents when virtual keys exist.
BENCH_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-bench"  # nginx ignores it; the transport still sets the header, as in production


@dataclass
class Feature:
    name: str
    # Candidate config fragments, tried in order; the first the schema accepts wins.
    fragments: list[dict[str, Any]]
    # Whether the request needs the client key (an auth fragment).
    needs_key: bool = False
    # A path that, when the gateway answers it with 200, shows the feature is on without config.
    probe: str | None = None
    enabled: bool = False
    chosen: dict[str, Any] = field(default_factory=dict)


def optional_features() -> list[Feature]:
    key_entry = {"name": "bench", "key": BENCH_KEY}
    return [
        Feature(
            "virtual keys",
            [
                # The auth branch's shape (router/auth/settings.py there): keys by name, a team each.
                {"auth": {"enabled": True, "teams": {"bench": {}}, "keys": {"bench": {"key": BENCH_KEY, "team": "bench"}}}},
                {"auth": {"enabled": True, "keys": {"bench": {"key": BENCH_KEY}}}},
                {"auth": {"keys": [key_entry]}},
                {"keys": [key_entry]},
            ],
            needs_key=True,
        ),
        # `ledger: {}` is the ledger on its default sink (SQLite, usage.db beside the routes file: the run's temp dir).
        Feature("usage ledger (default sink)", [{"ledger": {}}, {"ledger": {"enabled": True}}]),
        # Metrics need no config where the gateway serves /metrics; the run probes for it.
        Feature("prometheus metrics", [{"metrics": {"enabled": True}}], probe="/metrics"),
    ]


def _merge(base: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_config(port: int, upstream_url: str, redis_url: str, redis_prefix: str) -> dict[str, Any]:
    def provider(path: str) -> dict[str, Any]:
        return {"kind": "openai", "base_url": upstream_url + path, "api_key": UPSTREAM_KEY, "timeouts": {"connect": 5, "read": 30, "total": 60}}

    def route(prefix: str) -> dict[str, Any]:
        return {"operations": ["chat"], "targets": [{"provider": f"{prefix}a", "model": "bench-model"}, {"provider": f"{prefix}b", "model": "bench-model"}]}

    return {
        "version": 1,
        "server": {"host": "127.0.0.1", "port": port},
        "state": {"backend": "redis", "url": redis_url, "prefix": redis_prefix},
        "providers": {
            "nginx-a": provider("/v1"),
            "nginx-b": provider("/v1"),
            "nginx-stream-a": provider("/stream/v1"),
            "nginx-stream-b": provider("/stream/v1"),
        },
        "models": {"bench": route("nginx-"), "bench-stream": route("nginx-stream-")},
    }


def _accepted(config: dict[str, Any]) -> bool:
    try:
        parse_table(config, "bench-routes.yaml", {})
    except ConfigError:
        return False
    return True


def gateway_config(port: int, upstream_url: str, redis_url: str, redis_prefix: str) -> tuple[dict[str, Any], list[Feature]]:
    """The config with every optional feature the schema accepts, and what was (not) switched on."""
    config = base_config(port, upstream_url, redis_url, redis_prefix)
    if not _accepted(config):
        parse_table(config, "bench-routes.yaml", {})  # raise with the schema's own message
    features = optional_features()
    for feature in features:
        for fragment in feature.fragments:
            candidate = _merge(config, fragment)
            if _accepted(candidate):
                config, feature.enabled, feature.chosen = candidate, True, fragment
                break
    return config, features
