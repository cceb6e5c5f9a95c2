"""What access control and operations export: /metrics counters read at scrape time, and spend per team."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from router.config import load_table
from tests.conftest import ADMIN_HEADERS, provider_entry, wait_for
from tests.fakes.upstream import closed_port
from tests.test_auth_limits import CHAT, KEY_A, KEY_B, chat

PRICE = {"input": 1, "output": 2}  # USD per million tokens


def config(upstream: Any, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {"forii": provider_entry(upstream)},
        "models": {"chat": {"targets": [{"provider": "forii", "model": "forii/deepseek-v3", "price": PRICE}]}},
        "auth": {"teams": {"web": {}, "data": {}}, "keys": {"a": {"key": KEY_A, "team": "web"}, "b": {"key": KEY_B, "team": "data"}}, "failure_threshold": 1},
        **extra,
    }


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from /metrics."""
    async with session.get(url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def test_metrics_export_auth_failures_state_store_health_and_reloads(make_upstream, start_gateway, tmp_path: Path):
    forii = await make_upstream("forii")
    path = tmp_path / "routes.yaml"
    # A Redis that refuses every connection: the store counts the errors and routes and limits locally.
    cfg = config(forii, state={"backend": "redis", "url": f"redis://127.0.0.1:{closed_port()}/0", "timeout": 0.2})
    cfg["auth"]["keys"]["a"]["limits"] = {"rpm": 100}
    path.write_text(yaml.safe_dump(cfg))
    gw = await start_gateway(load_table(path))
    async with aiohttp.ClientSession() as s:
        before = await scrape(s, gw.url)
        assert before["llm_router_auth_failures_total"][()] == 0
        assert before["llm_router_config_reloads_total"][()] == 0
        assert before["llm_router_state_degraded"][(("backend", "redis"),)] == 0

        for _ in range(3):
            assert (await chat(s, gw.url, "short"))[0] == 401  # malformed: refused without asking the store
        status, headers, _ = await chat(s, gw.url, KEY_A)  # key limits counted on local state while Redis is out
        assert status == 200 and headers["x-ratelimit-remaining-requests"] == "99"

        async with s.post(gw.url + "/admin/reload", headers=ADMIN_HEADERS) as r:
            assert r.status == 200, await r.text()
        path.write_text("models: [not, a, mapping]\n")
        async with s.post(gw.url + "/admin/reload", headers=ADMIN_HEADERS) as r:
            assert r.status == 422, await r.text()

        # A refused connection fails the call at once; the store is called out only by its prober.
        await wait_for(lambda: gw.gateway.routing.store.degraded, timeout=10)
        assert gw.gateway.routing.store.probes_failed >= 3  # state.outage_probes
        after = await scrape(s, gw.url)
    assert after["llm_router_auth_failures_total"][()] == 3
    assert after["llm_router_auth_failures_slowed_total"][()] == 2  # beyond failure_threshold: 1
    assert after["llm_router_state_redis_errors_total"][(("backend", "redis"),)] >= 1
    assert after["llm_router_state_degraded"][(("backend", "redis"),)] == 1
    assert after["llm_router_config_reloads_total"][()] == 1
    assert after["llm_router_config_reload_failures_total"][()] == 1
    store = gw.gateway.routing.store
    assert (store.degraded, store.redis_errors) == (True, after["llm_router_state_redis_errors_total"][(("backend", "redis"),)])


async def test_a_keys_team_shows_in_v1_usage_and_in_the_cost_metric(make_upstream, start_gateway, tmp_path: Path):
    forii = await make_upstream("forii")  # answers with 18 prompt + 156 completion tokens
    gw = await start_gateway(config(forii, ledger={"sinks": [{"kind": "sqlite", "path": str(tmp_path / "usage.db")}], "flush_interval": 0.02}))
    async with aiohttp.ClientSession() as s:
        for key in (KEY_A, KEY_A, KEY_B):
            assert (await chat(s, gw.url, key, CHAT))[0] == 200
        ledger = gw.gateway.ledger
        assert ledger is not None
        await wait_for(lambda: ledger.accepted == 3)
        await ledger.flush()
        async with s.get(gw.url + "/v1/usage?from=1d&group_by=team", headers=ADMIN_HEADERS) as r:
            assert r.status == 200, await r.text()
            usage = await r.json()
        metrics = await scrape(s, gw.url)
    per_request = 18 * 1 + 156 * 2  # micro-USD
    by_team = {row["team"]: row for row in usage["data"]}
    assert set(by_team) == {"web", "data"}
    assert (by_team["web"]["requests"], by_team["data"]["requests"]) == (2, 1)
    cost = {dict(labels)["team"]: value for labels, value in metrics["llm_router_cost_usd_total"].items()}
    assert round(cost["web"] * 1_000_000) == 2 * per_request
    assert round(cost["data"] * 1_000_000) == per_request
