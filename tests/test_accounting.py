"""Accounting pieces on their own: pricing rows, attribution headers, the price file, ledger config, metrics labels, the dashboard."""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from providers.base import Usage
from router.accounting.price_file import load_litellm_prices
from router.accounting.record import AttemptRecord, RequestRecord, request_metadata
from router.accounting.usage import row_from_record
from router.config import ConfigError, Price
from router.outcome import AttemptKind
from tests.conftest import ADMIN_HEADERS, PROJECT_ROOT, table_from, wait_for

FIXTURES = Path(__file__).parent / "fixtures"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "llm-router.json"
MOCK = {"providers": {"mock": {"kind": "mock"}}, "models": {"chat": {"targets": [{"provider": "mock", "model": "m", "price": {"input": 1, "output": 2}}]}}}


def test_a_failed_attempt_that_consumed_tokens_is_charged_with_the_answer():
    price = Price(input=Decimal("1.5"), output=Decimal("3"), version="p1")
    record = RequestRecord("r1", "chat", True, ["chat"], metadata={"team": "alpha"})
    record.attempts = [
        AttemptRecord("a/x", "chat", AttemptKind.FAILED, "status 503", price=price),  # consumed nothing
        AttemptRecord("a/x", "chat", AttemptKind.MID_STREAM, "protocol", price=price, usage=Usage(prompt_tokens=3, completion_tokens=1, estimated=True)),
        AttemptRecord("b/y", "chat", AttemptKind.SKIPPED, "circuit open", price=price),
        AttemptRecord("b/y", "chat", AttemptKind.OK, price=price, usage=Usage(prompt_tokens=10, completion_tokens=4, cached_tokens=0)),
    ]
    record.alias, record.provider, record.model = "chat", "b", "y"
    record.finish(200)
    row = row_from_record(record, team_from_metadata="team")
    # (3 + 10) * 1.5 + (1 + 4) * 3 = 34.5 -> 35 micro-dollars, rounded once for the request.
    assert row.cost_micro_usd == 35
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (13, 5, 18)
    assert row.usage_estimated and row.price_version == "p1"
    assert (row.attempts, row.retries, row.failovers) == (3, 1, 1)
    assert row.team == "alpha"


def test_attribution_headers_join_the_body_metadata():
    metadata, tags = request_metadata(
        {"team": "body-team", "feature": "search"},
        {"X-Router-Metadata-Team": "header-team", "x-router-tags": "project:ads, nightly ,", "Authorization": "Bearer sk-secret"},
    )
    assert metadata == {"team": "header-team", "feature": "search", "project": "ads"}
    assert tags == ["project:ads", "nightly"]


def test_litellm_price_file_prices_targets_exactly(tmp_path):
    prices = load_litellm_prices(FIXTURES / "litellm_prices.json")
    assert set(prices) == {"gpt-4o", "deepseek-v3"}  # no sample_spec, no image models
    deepseek = prices["deepseek-v3"]
    assert (deepseek.input, deepseek.output, deepseek.cached_input, deepseek.cache_write, deepseek.reasoning) == (
        Decimal("0.27"),
        Decimal("1.1"),
        Decimal("0.07"),
        Decimal("0.27"),
        Decimal("2.19"),
    )
    assert deepseek.version.startswith("litellm:")
    shutil.copy(FIXTURES / "litellm_prices.json", tmp_path / "prices.json")
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "providers: {mock: {kind: mock}}\n"
        "models:\n"
        "  a: {targets: [{provider: mock, model: openai/gpt-4o}]}\n"
        "  b: {targets: [{provider: mock, model: gpt-4o, price: {input: 9, output: 9, version: mine}}]}\n"
        "ledger: {prices_file: prices.json, sinks: [{kind: jsonl}]}\n"
    )
    from router.config import load_table

    table = load_table(routes)
    assert table.aliases["a"].targets[0].price == prices["gpt-4o"]  # found under its bare name, path relative to routes.yaml
    assert table.aliases["b"].targets[0].price is not None and table.aliases["b"].targets[0].price.version == "mine"
    assert table.ledger is not None and table.ledger.sinks[0].path == str(tmp_path / "usage.jsonl")


def test_ledger_config_mistakes_are_reported_with_their_paths():
    bad = {
        **MOCK,
        "ledger": {
            "sinks": [
                {"kind": "mongodb"},
                {"kind": "redis", "url": "localhost"},
                {"kind": "jsonl", "colour": 1},
                {"kind": "jsonl"},
                {"kind": "postgres", "db_schema": "drop table"},  # no dsn, and a schema that is no identifier
                {"kind": "postgres", "name": "pg2", "dsn": "mysql://u:hunter2@h/db"},
            ],
            "batch_size": 0,
            "prices_file": "/nonexistent/prices.json",
        },
    }
    with pytest.raises(ConfigError) as info:
        table_from(bad)
    paths = {path for path, _ in info.value.issues}
    assert {"ledger.sinks[0].kind", "ledger.sinks[1].url", "ledger.sinks[2].colour", "ledger.sinks[3].name", "ledger.batch_size", "ledger.prices_file"} <= paths
    assert {"ledger.sinks[4].dsn", "ledger.sinks[4].db_schema", "ledger.sinks[5].dsn"} <= paths
    assert "hunter2" not in str(info.value)  # a DSN holds a password: never echoed
    assert table_from(MOCK).ledger is None
    assert table_from({**MOCK, "ledger": {}}).ledger.sinks[0].kind == "sqlite"  # type: ignore[union-attr]


async def scrape(url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        assert r.status == 200
        return {f.name: f for f in text_string_to_metric_families(await r.text())}


async def chat(url: str, model: str, **extra: object) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}) as r,
    ):
        await r.read()
        return r


async def test_metric_labels_stay_bounded_whatever_clients_send(start_gateway):
    config = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {"mock/*": {"targets": [{"provider": "mock", "model": "*"}]}},
        "ledger": {"sinks": [{"kind": "jsonl", "path": "/dev/null"}], "team_from_metadata": "team", "max_label_values": 2},
    }
    gw = await start_gateway(config)
    for i in range(4):
        assert (await chat(gw.url, f"mock/model-{i}", metadata={"team": f"team-{i}"})).status == 200
    assert (await chat(gw.url, "no-such-model")).status == 404
    families = await scrape(gw.url)
    samples = [s for s in families["llm_router_requests"].samples if s.name == "llm_router_requests_total"]  # type: ignore[attr-defined]
    assert {s.labels["model"] for s in samples} == {"model-0", "model-1", "other", ""}
    assert {s.labels["alias"] for s in samples} == {"mock/*", "(unknown)"}  # an unknown model never becomes a label
    tokens = [s for s in families["llm_router_tokens"].samples if s.name == "llm_router_tokens_total"]  # type: ignore[attr-defined]
    assert {s.labels["type"] for s in tokens} == {"prompt", "completion"}


async def test_usage_without_a_ledger_is_a_clear_404_and_metrics_still_count(start_gateway):
    gw = await start_gateway(MOCK)
    assert (await chat(gw.url, "chat")).status == 200
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/v1/usage", headers=ADMIN_HEADERS) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "ledger_not_configured"
    families = await scrape(gw.url)
    cost = [s for s in families["llm_router_cost_usd"].samples if s.name == "llm_router_cost_usd_total"]  # type: ignore[attr-defined]
    # mock: prompt "hi" -> 1 token at 1, 12 completion tokens at 2 = 25 micro-dollars
    assert [round(s.value * 1_000_000) for s in cost] == [25]


async def test_usage_query_mistakes_are_400s(start_gateway, tmp_path):
    gw = await start_gateway({**MOCK, "ledger": {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j")}})
    async with aiohttp.ClientSession() as s:
        for query in ("group_by=colour", "from=yesterday", "from=1d&to=2d", "group_by=tag:bad key"):
            async with s.get(gw.url + "/v1/usage?" + query, headers=ADMIN_HEADERS) as r:
                body = await r.json()
                assert r.status == 400, (query, body)
                assert body["error"]["type"] == "invalid_request_error"


async def test_every_dashboard_panel_queries_a_metric_the_gateway_exports(start_gateway):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    assert dashboard["panels"], "the dashboard has no panels"
    gw = await start_gateway({**MOCK, "ledger": {"sinks": [{"kind": "jsonl", "path": "/dev/null"}]}})
    assert (await chat(gw.url, "chat", stream=True)).status == 200
    families = await scrape(gw.url)
    exported: set[str] = set()
    for family in families.values():
        exported.add(family.name)  # type: ignore[attr-defined]
        exported.update({f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count")})  # type: ignore[attr-defined]
    ids = set()
    for panel in dashboard["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        assert panel["type"] and panel["title"] and {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bllm_router_[a-z0-9_]+", target["expr"]))
            assert names, f"{panel['title']}: query names no llm_router metric: {target['expr']}"
            assert names <= exported, f"{panel['title']}: {names - exported} is not exported"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert set(re.findall(r"\bllm_router_[a-z0-9_]+", variable["definition"])) <= exported
    # Target health is exported for every target even before the routing state exists.
    assert families["llm_router_target_circuit_state"].samples  # type: ignore[attr-defined]


def test_time_windows_read_spans_dates_and_unix_seconds():
    from router.accounting.usage_api import parse_time

    now = 1_800_000_000.0
    assert parse_time("7d", now) == now - 7 * 86400
    assert parse_time("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert parse_time("2026-11-01T12:00:00Z", now) == parse_time("2026-11-01", now) + 43200
    assert parse_time("1790000000", now) == 1790000000.0


async def test_rows_survive_a_sink_and_a_journal_that_both_fail(tmp_path):
    from router.accounting.ledger import Ledger
    from router.accounting.sinks.sqlite import SqliteSink
    from router.config import LedgerSettings, SinkSettings

    # Regular files where directories should be: neither the database nor the journal can be created.
    (tmp_path / "db").write_text("in the way")
    (tmp_path / "journal").write_text("in the way")
    sink = SinkSettings(kind="sqlite", name="sqlite", path=str(tmp_path / "db" / "usage.db"), timeout=0.05)
    ledger = Ledger(LedgerSettings(sinks=(sink,), journal_dir=str(tmp_path / "journal"), flush_interval=0.01, retry_interval=0.02))
    await ledger.start()
    try:
        for i in range(30):
            record = RequestRecord(f"held-{i}", "chat", False, ["chat"])
            record.attempts = [
                AttemptRecord(
                    "p/m", "chat", AttemptKind.OK, price=Price(input=Decimal(1), output=Decimal(1)), usage=Usage(prompt_tokens=i, completion_tokens=1)
                )
            ]
            record.finish(200)
            ledger.record(record)
        await ledger.flush()
        assert len(ledger.sinks[0].held) == 30 and not ledger.sinks[0].up
        (tmp_path / "db").unlink()  # the disk is fixed
        await wait_for(lambda: not ledger.pending_in_journals, timeout=5)
        stored = ledger.query_sink()
        assert isinstance(stored, SqliteSink)
        rows = await stored.rows(0, time.time() + 60)
        assert sorted(r.request_id for r in rows) == sorted(f"held-{i}" for i in range(30))
        assert sum(r.cost_micro_usd for r in rows) == sum(i + 1 for i in range(30))
    finally:
        await ledger.close()


async def test_a_record_after_close_is_journaled_and_replayed_by_the_next_start(tmp_path):
    from router.accounting.ledger import Ledger
    from router.accounting.sinks.sqlite import SqliteSink
    from router.config import LedgerSettings, SinkSettings

    settings = LedgerSettings(sinks=(SinkSettings(kind="sqlite", name="sqlite", path=str(tmp_path / "usage.db")),), journal_dir=str(tmp_path / "journal"))
    ledger = Ledger(settings)
    await ledger.start()
    await ledger.close()
    record = RequestRecord("late-1", "chat", True, ["chat"])
    record.finish(499, "ClientDisconnected")
    ledger.record(record)  # a handler cancelled at shutdown, after the ledger closed
    assert (tmp_path / "journal" / "sqlite.jsonl").exists()
    again = Ledger(settings)
    await again.start()
    try:
        await wait_for(lambda: not again.pending_in_journals, timeout=5)
        sink = again.query_sink()
        assert isinstance(sink, SqliteSink)
        assert [r.request_id for r in await sink.rows(0, time.time() + 60)] == ["late-1"]
    finally:
        await again.close()


async def test_usage_report_needs_the_admin_token(start_gateway, tmp_path):
    gw = await start_gateway({**MOCK, "ledger": {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j")}})
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/v1/usage") as r:
            assert r.status == 401  # every team's spend is not a client key's business
        async with s.get(gw.url + "/v1/usage", headers=ADMIN_HEADERS) as r:
            assert r.status == 200
