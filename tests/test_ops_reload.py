"""Live reload: SIGHUP, --watch and POST /admin/reload swap the table whole, or refuse and keep serving."""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp
import pytest

from router.config import ConfigError, load_table
from tests.conftest import PROJECT_ROOT, wait_for
from tests.fakes.upstream import Behaviour
from tests.ops_support import JSON_LOGS, chat, events, routes, write_config


def broken(config: dict) -> dict:
    bad = {**config, "models": {"chat": {"targets": [{"provider": "nowhere", "model": "x"}]}}}
    bad["server"] = {"shutdown_grace": -1}
    return bad


async def check_errors(path: str) -> list[str]:
    """What `llm-router check` prints for a file, without its closing count line."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "router", "check", path, stderr=asyncio.subprocess.PIPE, cwd=str(PROJECT_ROOT))
    _, err = await proc.communicate()
    assert proc.returncode == 1
    return err.decode().splitlines()[:-1]


async def test_sighup_reloads_while_a_stream_finishes_on_the_old_table(make_upstream, spawn_gateway):
    upstream = await make_upstream("openai")
    gate = asyncio.Event()
    upstream.then(Behaviour(gate=gate))
    gp = await spawn_gateway(routes(upstream, "old-model"), env=JSON_LOGS)
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.create_task(chat(session, gp.url, stream=True))
        await wait_for(upstream.stream_started.is_set)

        write_config(gp.config_path, routes(upstream, "new-model"))
        gp.send_signal(signal.SIGHUP)
        await wait_for(lambda: events(gp, "reload"))
        status, headers, _ = await chat(session, gp.url)
        assert (status, headers["x-router-model"]) == (200, "new-model")
        assert not in_flight.done()

        gate.set()
        status, headers, text = await in_flight
        assert (status, headers["x-router-model"]) == (200, "old-model")
        assert text.rstrip().endswith("data: [DONE]")

        bad = broken(routes(upstream, "new-model"))
        write_config(gp.config_path, bad)
        gp.send_signal(signal.SIGHUP)
        refused = (await wait_for(lambda: events(gp, "reload_failed")))[0]
        assert refused["level"] == "error"
        assert refused["errors"] == await check_errors(str(gp.config_path))
        assert any("models.chat.targets[0].provider" in e for e in refused["errors"])
        assert any("server.shutdown_grace" in e for e in refused["errors"])
        status, headers, _ = await chat(session, gp.url)
        assert (status, headers["x-router-model"]) == (200, "new-model")


async def test_watch_reloads_when_the_file_changes(make_upstream, spawn_gateway):
    upstream = await make_upstream("openai")
    gp = await spawn_gateway(routes(upstream, "old-model"), env=JSON_LOGS, args=("--watch", "--watch-interval", "0.05"))
    write_config(gp.config_path, routes(upstream, "new-model"))
    async with aiohttp.ClientSession() as session:

        async def serves_new_model() -> bool:
            _, headers, _ = await chat(session, gp.url)
            return headers.get("x-router-model") == "new-model"

        await wait_for(serves_new_model, timeout=10)
    reloads = await wait_for(lambda: events(gp, "reload"))  # log lines are written in batches, a moment later
    assert [e["trigger"] for e in reloads] == ["watch"]


ADMIN_TOKEN = "admin-token-for-reload-tests-0123"


async def test_admin_reload_swaps_or_refuses(make_upstream, start_gateway, tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", ADMIN_TOKEN)  # /admin/* needs the admin token
    upstream = await make_upstream("openai")
    path = tmp_path / "routes.yaml"
    write_config(path, routes(upstream, "old-model"))
    gw = await start_gateway(load_table(path))
    async with aiohttp.ClientSession() as session:
        write_config(
            path,
            {**routes(upstream, "new-model"), "models": {**routes(upstream, "new-model")["models"], "extra": {"targets": [{"provider": "up", "model": "m"}]}}},
        )
        async with session.post(gw.url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            body = await r.json()
            assert r.status == 200, body
            assert body["aliases_added"] == ["extra"] and body["aliases_changed"] == ["chat"]
        assert (await chat(session, gw.url))[1]["x-router-model"] == "new-model"

        write_config(path, broken(routes(upstream, "newest-model")))
        async with session.post(gw.url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            body = await r.json()
            assert r.status == 422
            assert body["error"]["code"] == "invalid_config"
            assert "models.chat.targets[0].provider" in body["error"]["message"]
        assert gw.reloader.failures == 1 and gw.reloader.reloads == 1
        assert (await chat(session, gw.url))[1]["x-router-model"] == "new-model"


async def test_reload_keeps_the_state_key_of_targets_that_stay(make_upstream, tmp_path, start_gateway):
    # Target state (circuits, counters) is keyed by provider/model outside the table, so it
    # carries over exactly when a target with the same key exists in the new table.
    upstream = await make_upstream("openai")
    path = tmp_path / "routes.yaml"
    write_config(path, routes(upstream, "kept"))
    gw = await start_gateway(load_table(path))
    before = gw.gateway.table.aliases["chat"].targets[0].key
    config = routes(upstream, "kept")
    config["models"]["chat"]["targets"].append({"provider": "up", "model": "added"})
    write_config(path, config)
    assert (await gw.reloader.reload("test")).ok
    assert [t.key for t in gw.gateway.table.aliases["chat"].targets] == [before, "up/added"]


def test_shutdown_grace_and_logging_are_validated_with_paths(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(
        "providers: {m: {kind: mock}}\nmodels: {chat: {targets: [{provider: m, model: x}]}}\n"
        "server: {shutdown_grace: -2}\nlogging: {level: loud, format: xml, bodies: maybe}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_table(path)
    paths = [p for p, _ in info.value.issues]
    assert paths == ["server.shutdown_grace", "logging.level", "logging.format", "logging.bodies"]
