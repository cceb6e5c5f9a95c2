"""``llm-router keys`` / ``teams`` against a real gateway process, and what ``serve`` says about auth."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from router.auth.keys import hash_key
from router.cli import main
from tests.conftest import wait_for

ADMIN = "cli-admin-token-0123456789"
MOCK = {"providers": {"mock": {"kind": "mock"}}, "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}]}}}


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Awaitable[tuple[int, str, str]]]:
    """Run ``llm-router`` in a thread (it is blocking urllib), against a gateway in its own process."""

    async def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for name, value in {"ROUTER_ADMIN_TOKEN": ADMIN, **(env or {})}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def test_keys_cli_creates_lists_and_revokes_through_the_admin_api(spawn_gateway, cli):
    gp = await spawn_gateway({**MOCK, "auth": {"enabled": True}}, env={"ROUTER_ADMIN_TOKEN": ADMIN})
    code, out, err = await cli("teams", "create", "web", "--budget-usd", "5", "--period", "week", "--url", gp.url)
    assert code == 0, err
    code, out, err = await cli("keys", "create", "--team", "web", "--alias", "chat", "--rpm", "60", "--tag", "project=cli", "--url", gp.url)
    assert code == 0, err
    created = json.loads(out)
    assert "not shown again" in err and created["limits"]["rpm"] == 60 and created["metadata"] == {"project": "cli"}
    async with aiohttp.ClientSession() as s:
        async with s.get(gp.url + "/v1/models", headers={"x-api-key": created["key"]}) as r:
            assert r.status == 200
    code, out, err = await cli("keys", "list", "--url", gp.url)
    assert code == 0 and created["id"] in out and created["key"] not in out
    code, out, err = await cli("keys", "revoke", created["id"], "--url", gp.url)
    assert code == 0 and json.loads(out)["revoked"] is True
    code, out, err = await cli("keys", "show", "key_missing", "--url", gp.url)
    assert code == 1 and "404" in err
    code, out, err = await cli("keys", "list", "--url", gp.url, env={"ROUTER_ADMIN_TOKEN": "not-the-admin-token-at-all"})
    assert code == 1 and "401" in err


async def test_keys_hash_matches_what_the_gateway_stores(cli):
    code, out, _ = await cli("keys", "generate")
    key = out.strip()
    assert code == 0 and key.startswith("sk-llmr-")
    code, out, _ = await cli("keys", "hash", stdin=key + "\n", env={"ROUTER_KEY_PEPPER": "pep"})
    assert code == 0 and out.strip() == hash_key(key, "pep")


async def test_serve_with_auth_off_warns_and_refuses_a_public_address(spawn_gateway):
    gp = await spawn_gateway({**MOCK, "auth": {"enabled": False}})
    await wait_for(lambda: any("authentication is OFF" in line for line in gp.output), timeout=5)
    refused = await spawn_gateway({**MOCK, "auth": {"enabled": False}}, args=("--host", "0.0.0.0"), wait_ready=False)
    assert await refused.wait_exit() == 1
    await wait_for(lambda: any("only listens on loopback" in line for line in refused.output), timeout=5)
