"""The postgres ledger sink against a real PostgreSQL server: schema and migrations, the mix priced once,
``/v1/usage`` from PostgreSQL equal to the same from SQLite, the README's finance queries, and no loss
when PostgreSQL stops part-way with a gateway restart in between.

``./dev test`` starts the server (tests/pg_cluster.py); each test works in a
schema of its own inside the session's database.  The outage test starts a
server of its own, since it stops and restarts it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import aiohttp
import asyncpg
import yaml

from router.accounting.sinks.postgres import LATEST, NAMES, PostgresSink
from router.accounting.sinks.sqlite import SqliteSink
from router.accounting.usage import GROUP_KEYS, UsageRow, aggregate, utc_day
from router.server import start_server
from tests.conftest import PROJECT_ROOT, table_from, wait_for, with_database
from tests.ledger_mix import Expected, build_config, make_upstreams, plan, run_mix, totals_by_team_model
from tests.pg_cluster import Cluster
from tests.test_distrust_ledger import FLUSH_INTERVAL, journaled_ids, send
from tests.test_ledger import FAR_FUTURE, check_rows, get_json, run_cli, team_model_totals


def router_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def write_routes(path: Path, ledger: dict[str, object]) -> Path:
    config = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}]}},
        "auth": {"enabled": False},
        "ledger": ledger,
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_ledger_migrate_creates_the_schema_once_with_compact_indexed_rows(pg_ledger, tmp_path):
    # The DSN comes from the environment, as in production; the password must never be printed.
    routes = write_routes(tmp_path / "routes.yaml", {"sinks": [{"kind": "postgres", "dsn": "${LEDGER_DSN}", "db_schema": pg_ledger.schema}]})
    env = {"LEDGER_DSN": pg_ledger.dsn}
    password = pg_ledger.dsn.split(":")[2].split("@")[0]
    first = await asyncio.to_thread(router_cli, "ledger", "migrate", "--config", str(routes), env=env)
    assert first.returncode == 0, first.stderr
    assert f"schema version 0 -> {LATEST}" in first.stdout
    again = await asyncio.to_thread(router_cli, "ledger", "migrate", "--config", str(routes), env=env)
    assert again.returncode == 0, again.stderr
    assert f"schema version {LATEST}, up to date" in again.stdout
    for done in (first, again):
        assert password not in done.stdout + done.stderr

    versions = await pg_ledger.fetch(f'SELECT version, description FROM "{pg_ledger.schema}".schema_version ORDER BY version')
    assert [v["version"] for v in versions] == list(range(1, LATEST + 1))
    columns = {
        r["column_name"]: r["data_type"]
        for r in await pg_ledger.fetch(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'usage' ORDER BY ordinal_position",
            pg_ledger.schema,
        )
    }
    assert list(columns) == list(NAMES)  # fixed-width columns first, as declared
    assert "day" not in columns and "first_token_at" not in columns  # derived from started_at and ttft_ms, not stored
    assert (columns["metadata"], columns["tags"]) == ("jsonb", "jsonb")
    assert (columns["cost_micro_usd"], columns["cost_micro_usd_exact"]) == ("bigint", "numeric")
    assert columns["started_at"] == "timestamp with time zone"
    indexes = {r["indexdef"].split(" USING ")[1] for r in await pg_ledger.fetch("SELECT indexdef FROM pg_indexes WHERE schemaname = $1", pg_ledger.schema)}
    assert {"brin (started_at)", "btree (team, started_at)", "btree (model, started_at)", "btree (request_id)"} <= indexes

    # A wrong password fails the migration with a message naming the server, not the password.
    wrong = pg_ledger.dsn.replace(password, "not-the-password-0451")
    bad = await asyncio.to_thread(router_cli, "ledger", "migrate", "--config", str(routes), env={"LEDGER_DSN": wrong})
    assert bad.returncode == 1
    assert "not-the-password-0451" not in bad.stdout + bad.stderr
    assert "InvalidPasswordError" in bad.stderr and "127.0.0.1" in bad.stderr


def readme_sql() -> list[str]:
    """The SQL statements of the README's ```sql block (its "Usage and cost" section)."""
    text = (PROJECT_ROOT / "README.md").read_text()
    block = text.split("```sql\n", 1)[1].split("```", 1)[0]
    return [stmt.strip() for stmt in block.split(";") if stmt.strip()]


def answers(mix: list[Expected]) -> Counter[int]:
    """Statuses of a mix, the "broken" alias's 502s and 503s (its circuit opens) counted together."""
    return Counter(502 if e.status == 503 else e.status for e in mix)


def is_half_up(row) -> bool:
    return int(Decimal(row.cost_micro_usd_exact).quantize(Decimal(1), rounding=ROUND_HALF_UP)) == row.cost_micro_usd


async def test_usage_from_postgres_equals_usage_from_sqlite_and_the_finance_queries_agree(make_upstream, tmp_path, pg_ledger):
    ups = await make_upstreams(make_upstream)
    ledger = {"sinks": [pg_ledger.sink(), {"kind": "sqlite", "path": str(tmp_path / "usage.db")}], "journal_dir": str(tmp_path / "journal")}
    config = build_config(ups, ledger)
    config_path = tmp_path / "routes.yaml"
    config_path.write_text(yaml.safe_dump({**config, "auth": {"enabled": False}}))
    server = await start_server(table_from(config), "127.0.0.1", 0)
    try:
        expected = await run_mix(server.url, plan(264))
        gw_ledger = server.gateway.ledger
        assert gw_ledger is not None
        await wait_for(lambda: gw_ledger.accepted == len(expected), timeout=10)
        await gw_ledger.flush()
        assert not gw_ledger.pending_in_journals
        pg, lite = gw_ledger.sinks[0].sink, gw_ledger.sinks[1].sink
        assert isinstance(pg, PostgresSink) and isinstance(lite, SqliteSink)
        assert gw_ledger.query_sink() is pg  # the first queryable sink is the primary: /v1/usage reads PostgreSQL
        pg_rows = await pg.rows(0, FAR_FUTURE)
        check_rows(pg_rows, expected)

        # The unrounded cost is kept beside the rounded one, in both stores, and the rounding is per request, half-up.
        lite_rows = {r.request_id: r for r in await lite.rows(0, FAR_FUTURE)}
        for row in pg_rows:
            assert row.cost_micro_usd_exact == lite_rows[row.request_id].cost_micro_usd_exact
            assert is_half_up(row), row
        assert any(Decimal(r.cost_micro_usd_exact) % 1 == Decimal("0.5") for r in pg_rows), "the mix has costs of n.5 micro-dollars"
        assert sum(Decimal(r.cost_micro_usd_exact) for r in pg_rows) != sum(r.cost_micro_usd for r in pg_rows)  # rounding is visible

        # /v1/usage (from PostgreSQL) equals the same query from SQLite, for every group key and the usual pairs.
        start, end = time.time() - 86400, time.time() + 1
        for keys in (*([k] for k in GROUP_KEYS), ["tag:project"], ["team", "model"], ["team", "day"], ["model", "day"], ["team", "model", "day"], []):
            body = await get_json(f"{server.url}/v1/usage?from={start}&to={end}&group_by={','.join(keys)}")
            assert body["data"] == await lite.query(start, end, keys), keys
            assert body["data"] == aggregate(pg_rows, keys), keys
        both = await get_json(f"{server.url}/v1/usage?from=1d&group_by=team,alias,model")
        assert team_model_totals(both["data"]) == totals_by_team_model(expected)

        # llm-router usage reads PostgreSQL too, and says the same.
        cli_rows = json.loads(await asyncio.to_thread(run_cli, config_path, "--by", "team,alias,model", "--format", "json"))
        assert cli_rows == both["data"]

        # The README's finance queries, run as written (in the test's schema).
        per_month_sql, top_keys_sql = readme_sql()
        per_month = await pg_ledger.fetch_in_schema(per_month_sql)
        by_team = Counter[str]()
        for e in expected:
            by_team[e.team] += e.cost
        assert {r["team"]: r["usd"] * 1_000_000 for r in per_month} == {t: Decimal(c) for t, c in by_team.items()}
        assert sum(r["usd_unrounded"] for r in per_month) * 1_000_000 == sum(Decimal(r.cost_micro_usd_exact) for r in pg_rows)
        # The mix runs without keys: a dozen keyed requests more, so that the top 10 has something to rank.
        now = time.time()
        keyed = [
            UsageRow(
                f"keyed-{i}", now, now + 0.1, utc_day(now), key_id=f"key-{i}", cost_micro_usd=1000 * (i + 1) + 7, cost_micro_usd_exact=f"{1000 * (i + 1) + 7}"
            )
            for i in range(12)
        ]
        assert await pg.write(keyed) == 12
        week_start = (await pg_ledger.fetch("SELECT extract(epoch FROM date_trunc('week', now()))::float8 AS t"))[0]["t"]
        spend: dict[str | None, tuple[int, int]] = {r.key_id: (1, r.cost_micro_usd) for r in keyed}
        in_week = [r for r in pg_rows if r.started_at >= week_start]
        if in_week:
            spend[None] = (len(in_week), sum(r.cost_micro_usd for r in in_week))
        top = sorted(spend.items(), key=lambda kv: -kv[1][1])[:10]
        got = await pg_ledger.fetch_in_schema(top_keys_sql)
        assert [(r["key_id"], r["requests"], r["usd"] * 1_000_000) for r in got] == [(k, n, Decimal(c)) for k, (n, c) in top]
    finally:
        ups.gate.set()
        await server.stop()


async def test_postgres_stopped_partway_and_a_restart_lose_nothing_and_count_nothing_twice(make_upstream, tmp_path, pg_cluster: Cluster, caplog):
    caplog.set_level(logging.DEBUG)
    ups = await make_upstreams(make_upstream)
    config = build_config(ups, {"sinks": [{"kind": "postgres", "dsn": pg_cluster.dsn, "timeout": 0.5}], "journal_dir": str(tmp_path / "journal")})
    table = table_from(config)
    first = await start_server(table, "127.0.0.1", 0)
    second = None
    try:
        ledger = first.gateway.ledger
        assert ledger is not None
        expected = await run_mix(first.url, plan(168))
        await wait_for(lambda: ledger.accepted == 168, timeout=10)
        await ledger.flush()
        assert not ledger.pending_in_journals
        await asyncio.to_thread(pg_cluster.stop)
        # PostgreSQL down: requests keep answering as before (same mix, same statuses), the records go to the journal.
        down = await run_mix(first.url, plan(168, 168))
        assert answers(down) == answers(expected)
        expected += down
        await wait_for(lambda: ledger.accepted == 336, timeout=10)
        await ledger.flush()
        assert ledger.pending_in_journals and not ledger.sinks[0].up
        await first.stop()  # a graceful restart while the sink is down: the buffer goes to the journal
        second = await start_server(table, "127.0.0.1", 0)  # starts although PostgreSQL is down
        ledger = second.gateway.ledger
        assert ledger is not None
        down = await run_mix(second.url, plan(168, 336))
        assert answers(down) == answers(expected[:168])
        expected += down
        await wait_for(lambda: ledger.accepted == 168, timeout=10)
        await ledger.flush()
        assert ledger.pending_in_journals
        await asyncio.to_thread(pg_cluster.start)
        await wait_for(lambda: not ledger.pending_in_journals, timeout=15)
        sink = ledger.query_sink()
        assert isinstance(sink, PostgresSink)
        rows = await sink.rows(0, FAR_FUTURE)
        check_rows(rows, expected)
        # A replay of everything (a crash between a write and the journal's truncation) adds nothing.
        assert await sink.write(rows) == 0
        usage = await get_json(f"{second.url}/v1/usage?from=1d&group_by=team,alias,model")
        assert team_model_totals(usage["data"]) == totals_by_team_model(expected)
        # The outage was logged, and never with the password.
        assert "ledger sink postgres is down" in caplog.text and f"127.0.0.1:{pg_cluster.port}/postgres" in caplog.text
        assert pg_cluster.password not in caplog.text
    finally:
        ups.gate.set()
        if second is not None:
            await second.stop()
        else:
            await first.stop()


async def test_a_wrong_password_is_never_logged_and_requests_still_answer(start_gateway, pg_ledger, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_password = "s3cret-not-the-password"
    dsn = with_database(pg_ledger.dsn, "postgres")
    user_part, host_part = dsn.split("@", 1)
    dsn = f"{user_part.rsplit(':', 1)[0]}:{wrong_password}@{host_part}"
    config = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "mock", "model": "m", "price": {"input": 1, "output": 2, "version": "v"}}]}},
        "ledger": {"sinks": [pg_ledger.sink(dsn="${LEDGER_DSN}")], "journal_dir": str(tmp_path / "journal"), "flush_interval": 0.02},
    }
    table = table_from(config, env={"LEDGER_DSN": dsn})
    assert wrong_password not in repr(table.ledger)
    server = await start_gateway(table)
    ledger = server.gateway.ledger
    assert ledger is not None
    async with aiohttp.ClientSession() as s:
        for i in range(5):
            async with s.post(server.url + "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}) as r:
                assert r.status == 200, i
    await wait_for(lambda: ledger.accepted == 5)
    await ledger.flush()
    assert ledger.pending_in_journals
    assert "InvalidPasswordError" in caplog.text
    assert wrong_password not in caplog.text


async def stored_ids(pg: Cluster) -> set[str]:
    conn = await asyncpg.connect(pg.dsn, timeout=5)
    try:
        return {r["request_id"] for r in await conn.fetch("SELECT request_id FROM usage")}
    except asyncpg.UndefinedTableError:
        return set()
    finally:
        await conn.close()


async def test_sigkill_while_postgres_is_frozen_loses_nothing_and_requests_never_wait_for_it(spawn_gateway, tmp_path, pg_cluster: Cluster):
    journal_dir = tmp_path / "journal"
    config = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "mock", "model": "m", "price": {"input": 1, "output": 2, "version": "v"}}]}},
        "ledger": {
            "sinks": [{"kind": "postgres", "dsn": "${LEDGER_DSN}", "timeout": 1.0}],
            "journal_dir": str(journal_dir),
            "flush_interval": FLUSH_INTERVAL,
            "retry_interval": 0.05,
        },
    }
    env = {"LEDGER_DSN": pg_cluster.dsn}
    gp = await spawn_gateway(config, env=env)
    ids = ["before-freeze"]
    slowest = 0.0
    async with aiohttp.ClientSession() as s:
        await send(s, gp.url, ids[0])
        await wait_for(lambda: _has(pg_cluster, set(ids)), timeout=5)
        pg_cluster.signal_all(signal.SIGSTOP)  # every call to PostgreSQL now hangs until its timeout
        try:
            for i in range(12):
                ids.append(f"frozen-{i}")
                began = time.monotonic()
                await send(s, gp.url, ids[-1])
                slowest = max(slowest, time.monotonic() - began)
                await wait_for(lambda: journaled_ids(journal_dir) >= set(ids[1:]), timeout=3 * FLUSH_INTERVAL, interval=0.01)
            burst = [f"burst-{i}" for i in range(30)]
            await asyncio.gather(*(send(s, gp.url, request_id) for request_id in burst))
            ids += burst
            await wait_for(lambda: journaled_ids(journal_dir) >= set(ids[1:]), timeout=2 * FLUSH_INTERVAL, interval=0.01)
            # A request never waits for the ledger: far below the sink's 1 s timeout that every PostgreSQL call now takes.
            assert slowest < 0.5, slowest
            gp.send_signal(signal.SIGKILL)
            assert await gp.wait_exit() == -signal.SIGKILL
        finally:
            pg_cluster.signal_all(signal.SIGCONT)
    second = await spawn_gateway(config, env=env)
    await wait_for(lambda: _has(pg_cluster, set(ids)), timeout=15, interval=0.1)
    await wait_for(lambda: not journaled_ids(journal_dir), timeout=10, interval=0.05)
    second.send_signal(signal.SIGTERM)
    assert await second.wait_exit() == 0
    rows = await _rows_by_id(pg_cluster)
    assert sorted(rows) == sorted(ids) and all(n == 1 for n in rows.values())


async def _has(pg: Cluster, ids: set[str]) -> bool:
    return await stored_ids(pg) >= ids


async def _rows_by_id(pg: Cluster) -> dict[str, int]:
    conn = await asyncpg.connect(pg.dsn, timeout=5)
    try:
        return {r["request_id"]: r["n"] for r in await conn.fetch("SELECT request_id, count(*) AS n FROM usage GROUP BY request_id")}
    finally:
        await conn.close()


async def test_sigterm_while_postgres_is_frozen_exits_promptly_with_every_record_journaled(spawn_gateway, tmp_path, pg_cluster: Cluster):
    journal_dir = tmp_path / "journal"
    config = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}]}},
        "ledger": {"sinks": [{"kind": "postgres", "dsn": pg_cluster.dsn, "timeout": 0.5}], "journal_dir": str(journal_dir), "flush_interval": FLUSH_INTERVAL},
    }
    gp = await spawn_gateway(config)
    ids = [f"term-{i}" for i in range(20)]
    try:
        async with aiohttp.ClientSession() as s:
            await send(s, gp.url, ids[0])
            await wait_for(lambda: _has(pg_cluster, {ids[0]}), timeout=5)  # a pooled connection, now to a server that hangs
            pg_cluster.signal_all(signal.SIGSTOP)
            for request_id in ids[1:]:
                await send(s, gp.url, request_id)
        began = time.monotonic()
        gp.send_signal(signal.SIGTERM)
        assert await gp.wait_exit() == 0
        # Each call to the frozen server ends by the sink's timeout (0.5 s): the drain never waits on it for long.
        assert time.monotonic() - began < 8, "\n".join(gp.output[-20:])
        assert journaled_ids(journal_dir) >= set(ids[1:])
    finally:
        pg_cluster.signal_all(signal.SIGCONT)


async def test_a_nul_character_in_client_metadata_never_blocks_a_batch(pg_ledger):
    mock = {"providers": {"mock": {"kind": "mock"}}, "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}]}}}
    ledger = table_from({**mock, "ledger": {"sinks": [pg_ledger.sink()]}}).ledger
    assert ledger is not None
    sink = PostgresSink(ledger.sinks[0])
    now = time.time()
    rows = [
        UsageRow("nul-1", now, now, utc_day(now), team="a\x00b", metadata={"project": "x\x00y", "k\x00": "v"}, tags=["t\x00"], cost_micro_usd_exact="1.5"),
        UsageRow("plain-1", now, now, utc_day(now), team="ab", metadata={"project": "xy"}, cost_micro_usd_exact="2"),
    ]
    try:
        await sink.open()
        assert await sink.write(rows) == 2
        stored = {r.request_id: r for r in await sink.rows(now - 1, now + 1)}
        assert (stored["nul-1"].team, stored["nul-1"].metadata, stored["nul-1"].tags) == ("ab", {"project": "xy", "k": "v"}, ["t"])
        assert stored["plain-1"].metadata == {"project": "xy"} and stored["plain-1"].cost_micro_usd_exact == "2"
    finally:
        await sink.close()
