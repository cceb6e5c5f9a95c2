"""The ledger end to end: a mix of >= 500 requests priced exactly, once each, through sink outages and a restart.

Every test runs the real gateway on a socket against fake upstreams (real
HTTP servers), with a real SQLite file or a real, throwaway redis-server.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from router.accounting.sinks.redis import RedisSink
from router.accounting.sinks.sqlite import SqliteSink
from router.accounting.usage import GROUP_KEYS, UsageRow, aggregate
from router.server import start_server
from tests.conftest import ADMIN_HEADERS, PROJECT_ROOT, free_port, start_redis_server, table_from, wait_for
from tests.ledger_mix import Expected, build_config, make_upstreams, plan, run_mix, totals_by_team_model

FAR_FUTURE = time.time() + 86400


def answered_model(row: UsageRow) -> str | None:
    # A circuit breaker may refuse "broken" before any attempt: then no model is named, and none is charged.
    if row.alias == "broken" and row.model is None and row.attempts == 0:
        return "err-model"
    return row.model


def check_rows(rows: list[UsageRow], expected: list[Expected]) -> None:
    ids = [r.request_id for r in rows]
    assert len(ids) == len(set(ids)), "a request was recorded twice"
    assert set(ids) == {e.request_id for e in expected}, "a request is missing from the ledger"
    by_id = {r.request_id: r for r in rows}
    for e in expected:
        row = by_id[e.request_id]
        got = (row.team, answered_model(row), row.cost_micro_usd, row.usage_estimated, row.metadata.get("project"))
        assert got == (e.team, e.model, e.cost, e.estimated, e.project), f"{e}: ledger has {row}"
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    for row in rows:
        key = (row.team or "", answered_model(row) or "")
        n, cost = totals.get(key, (0, 0))
        totals[key] = (n + 1, cost + row.cost_micro_usd)
    assert totals == totals_by_team_model(expected)


def team_model_totals(groups: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """Totals per (team, model) from rows grouped by team, alias and model (see ``answered_model``)."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for g in groups:
        model = "err-model" if g["alias"] == "broken" and g["model"] == "" else g["model"]
        n, cost = out.get((g["team"], model), (0, 0))
        out[(g["team"], model)] = (n + int(g["requests"]), cost + int(g["cost_micro_usd"]))
    return out


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url, headers=ADMIN_HEADERS) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url, headers=ADMIN_HEADERS) as r:
        assert r.status == 200, await r.text()
        return await r.text()


def run_cli(config_path: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "router", "usage", "--config", str(config_path), "--since", "1d", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_mix_is_priced_exactly_once_and_every_view_agrees(make_upstream, tmp_path):
    ups = await make_upstreams(make_upstream)
    config = build_config(
        ups,
        {
            "sinks": [{"kind": "sqlite", "path": str(tmp_path / "usage.db")}, {"kind": "jsonl", "path": str(tmp_path / "usage.jsonl")}],
            "journal_dir": str(tmp_path / "journal"),
        },
    )
    config_path = tmp_path / "routes.yaml"
    config_path.write_text(yaml.safe_dump(config))
    server = await start_server(table_from(config), "127.0.0.1", 0)
    try:
        expected = await run_mix(server.url, plan(504))
        ledger = server.gateway.ledger
        assert ledger is not None
        # A disconnect's record is made when the server notices the closed socket.
        await wait_for(lambda: ledger.accepted == len(expected), timeout=10)
        await ledger.flush()
        sink = ledger.query_sink()
        assert isinstance(sink, SqliteSink)
        rows = await sink.rows(0, FAR_FUTURE)
        check_rows(rows, expected)
        total = sum(e.cost for e in expected)
        assert {e.status for e in expected} >= {200, 502, 499}

        # The JSONL sink got the same records, once each.
        lines = [json.loads(line) for line in (tmp_path / "usage.jsonl").read_text().splitlines()]
        assert sorted(line["request_id"] for line in lines) == sorted(r.request_id for r in rows)

        # /v1/usage (SQL grouping) agrees with the rows summed here, for every group key.
        for key in (*GROUP_KEYS, "tag:project"):
            body = await get_json(f"{server.url}/v1/usage?from=1d&group_by={key}")
            assert body["data"] == aggregate(rows, [key]), key
            assert sum(g["cost_micro_usd"] for g in body["data"]) == total
            assert sum(g["requests"] for g in body["data"]) == len(expected)
            assert (body["total"]["requests"], body["total"]["cost_micro_usd"]) == (len(expected), total)
        both = await get_json(f"{server.url}/v1/usage?from=1d&group_by=team,alias,model")
        assert team_model_totals(both["data"]) == totals_by_team_model(expected)

        # CSV parses with csv and says the same.
        text = await get_text(f"{server.url}/v1/usage?from=1d&group_by=team,alias,model&format=csv")
        parsed = list(csv.DictReader(io.StringIO(text)))
        assert team_model_totals(parsed) == totals_by_team_model(expected)

        # The CLI reads the same store and says the same (each call is a process start, so only three).
        cli_rows = json.loads(await asyncio.to_thread(run_cli, config_path, "--by", "team,alias,model", "--format", "json"))
        assert cli_rows == both["data"]
        cli_csv = list(csv.DictReader(io.StringIO(await asyncio.to_thread(run_cli, config_path, "--by", "tag:project,day", "--format", "csv"))))
        api_rows = (await get_json(f"{server.url}/v1/usage?from=1d&group_by=tag:project,day"))["data"]
        assert [(r["tag:project"], r["day"], int(r["requests"]), int(r["cost_micro_usd"])) for r in cli_csv] == [
            (r["tag:project"], r["day"], r["requests"], r["cost_micro_usd"]) for r in api_rows
        ]
        table = await asyncio.to_thread(run_cli, config_path, "--by", "team,model")
        assert "TOTAL" in table and "alpha" in table and "gpt-x" in table
        assert table.splitlines()[-1].split()[-1] == f"{total / 1_000_000:.6f}"

        # /metrics parses, and its cost counter agrees with the ledger to the micro-dollar.
        families = {f.name: f for f in text_string_to_metric_families(await get_text(server.url + "/metrics"))}
        cost_usd = sum(s.value for s in families["llm_router_cost_usd"].samples if s.name == "llm_router_cost_usd_total")
        assert round(cost_usd * 1_000_000) == total
        per_team = {}
        for s in families["llm_router_cost_usd"].samples:
            if s.name == "llm_router_cost_usd_total":
                per_team[s.labels["team"]] = per_team.get(s.labels["team"], 0) + round(s.value * 1_000_000)
        assert per_team == {team: sum(e.cost for e in expected if e.team == team) for team in {e.team for e in expected}}
        requests = sum(s.value for s in families["llm_router_requests"].samples if s.name == "llm_router_requests_total")
        assert requests == len(expected)
        failovers = sum(s.value for s in families["llm_router_failovers"].samples if s.name == "llm_router_failovers_total")
        assert failovers == sum(1 for e in expected if e.request_id in {r.request_id for r in rows if r.failovers})
        assert failovers > 0
        written = {s.labels["sink"]: s.value for s in families["llm_router_ledger_records_written"].samples if s.name.endswith("_total")}
        assert written == {"sqlite": len(expected), "jsonl": len(expected)}
    finally:
        ups.gate.set()
        await server.stop()


async def _lock(db: Path) -> sqlite3.Connection:
    def take() -> sqlite3.Connection:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=5)
        conn.execute("BEGIN EXCLUSIVE")
        return conn

    return await asyncio.to_thread(take)


async def test_sqlite_locked_partway_and_a_restart_lose_nothing_and_count_nothing_twice(make_upstream, tmp_path):
    ups = await make_upstreams(make_upstream)
    db = tmp_path / "usage.db"
    config = build_config(ups, {"sinks": [{"kind": "sqlite", "path": str(db), "timeout": 0.05}], "journal_dir": str(tmp_path / "journal")})
    table = table_from(config)
    first = await start_server(table, "127.0.0.1", 0)
    second = None
    locker: sqlite3.Connection | None = None
    try:
        ledger = first.gateway.ledger
        assert ledger is not None
        expected = await run_mix(first.url, plan(168))
        await wait_for(lambda: ledger.accepted == 168, timeout=10)
        await ledger.flush()
        locker = await _lock(db)
        expected += await run_mix(first.url, plan(168, 168))
        await wait_for(lambda: ledger.accepted == 336, timeout=10)
        await ledger.flush()
        assert ledger.pending_in_journals and not ledger.sinks[0].up
        await first.stop()  # a graceful restart while the sink is down: the buffer goes to the journal
        second = await start_server(table, "127.0.0.1", 0)
        ledger = second.gateway.ledger
        assert ledger is not None
        expected += await run_mix(second.url, plan(168, 336))
        await wait_for(lambda: ledger.accepted == 168, timeout=10)
        await ledger.flush()
        assert ledger.pending_in_journals
        await asyncio.to_thread(locker.execute, "COMMIT")
        locker.close()
        locker = None
        await wait_for(lambda: not ledger.pending_in_journals, timeout=10)
        sink = ledger.query_sink()
        assert isinstance(sink, SqliteSink)
        rows = await sink.rows(0, FAR_FUTURE)
        check_rows(rows, expected)
        # A replay of everything (a crash between a write and the journal's truncation) adds nothing.
        assert await sink.write(rows) == 0
        usage = await get_json(f"{second.url}/v1/usage?from=1d&group_by=team,alias,model")
        assert team_model_totals(usage["data"]) == totals_by_team_model(expected)
    finally:
        ups.gate.set()
        if locker is not None:
            locker.close()
        if second is not None:
            await second.stop()
        else:
            await first.stop()


async def stop_redis(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()  # SIGTERM: redis writes its append-only file and exits
        await asyncio.wait_for(proc.wait(), 10)


async def test_redis_stopped_partway_and_a_restart_lose_nothing_and_count_nothing_twice(make_upstream, tmp_path, redis_prefix):
    port = free_port()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis = await start_redis_server(port, redis_dir)
    ups = await make_upstreams(make_upstream)
    sink_config = {"kind": "redis", "url": f"redis://127.0.0.1:{port}/0", "prefix": redis_prefix.rstrip(":"), "timeout": 0.2}
    config = build_config(ups, {"sinks": [sink_config], "journal_dir": str(tmp_path / "journal")})
    table = table_from(config)
    first = await start_server(table, "127.0.0.1", 0)
    second = None
    try:
        ledger = first.gateway.ledger
        assert ledger is not None
        expected = await run_mix(first.url, plan(168))
        await wait_for(lambda: ledger.accepted == 168, timeout=10)
        await ledger.flush()
        await stop_redis(redis)
        expected += await run_mix(first.url, plan(168, 168))
        await wait_for(lambda: ledger.accepted == 336, timeout=10)
        await ledger.flush()
        assert ledger.pending_in_journals
        await first.stop()
        second = await start_server(table, "127.0.0.1", 0)
        ledger = second.gateway.ledger
        assert ledger is not None
        expected += await run_mix(second.url, plan(168, 336))
        await wait_for(lambda: ledger.accepted == 168, timeout=10)
        await ledger.flush()
        redis = await start_redis_server(port, redis_dir)
        await wait_for(lambda: not ledger.pending_in_journals, timeout=15)
        sink = ledger.query_sink()
        assert isinstance(sink, RedisSink)
        rows = await sink.rows(0, FAR_FUTURE)
        check_rows(rows, expected)
        assert await sink.write(rows) == 0  # a second replay counts nothing
        # The per-day roll-ups count each request once too.
        day_key = f"{sink.base}day:{rows[0].day}"
        rollup = await sink._client.hgetall(day_key)
        assert sum(int(v) for k, v in rollup.items() if k.startswith(b"requests|")) == len(expected)
        assert sum(int(v) for k, v in rollup.items() if k.startswith(b"cost_micro_usd|")) == sum(e.cost for e in expected)
        usage = await get_json(f"{second.url}/v1/usage?from=1d&group_by=team,alias,model")
        assert team_model_totals(usage["data"]) == totals_by_team_model(expected)
    finally:
        ups.gate.set()
        if second is not None:
            await second.stop()
        else:
            await first.stop()
        await stop_redis(redis)


async def test_sigterm_flushes_every_answered_request_to_the_ledger(spawn_gateway, tmp_path):
    # A long flush interval keeps the records in memory: only the shutdown flush can save them.
    config = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "mock", "model": "m", "price": {"input": 1, "output": 2, "version": "v"}}]}},
        "ledger": {"sinks": [{"kind": "sqlite"}], "flush_interval": 60, "batch_size": 10_000},
    }
    gp = await spawn_gateway(config)
    ids = [f"term-{i}" for i in range(40)]
    async with aiohttp.ClientSession() as s:
        for request_id in ids:
            body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": request_id.endswith("7")}
            async with s.post(gp.url + "/v1/chat/completions", json=body, headers={"x-request-id": request_id}) as r:
                assert r.status == 200
                await r.read()
    gp.send_signal(signal.SIGTERM)
    assert await gp.wait_exit() == 0
    db = tmp_path / "usage.db"  # relative to the routes file the process was given

    def stored() -> list[tuple[str, int]]:
        with sqlite3.connect(db) as conn:
            return list(conn.execute("SELECT request_id, cost_micro_usd FROM usage ORDER BY request_id"))

    rows = await asyncio.to_thread(stored)
    assert [r[0] for r in rows] == sorted(ids)
    assert all(cost == 25 for _, cost in rows)  # 1 prompt token at 1 + 12 completion tokens at 2
