"""The admin API refuses a key that could never be used: one whose expiry is already past."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.test_auth import CHAT, admin, admin_env, call, config  # noqa: F401  (admin_env is a fixture)


@pytest.mark.parametrize("expires_at", [time.time() - 60, "2020-01-01T00:00:00Z", 0])
async def test_creating_a_key_that_has_already_expired_is_a_400_naming_expires_at(make_upstream, start_gateway, admin_env, expires_at):  # noqa: F811
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii))
    async with aiohttp.ClientSession() as s:
        status, body = await admin(s, "POST", gw.url + "/admin/keys", json={"name": "born-dead", "expires_at": expires_at})
        assert status == 400, body
        assert body["error"]["param"] == "expires_at" and "expires_at" in body["error"]["message"] and "past" in body["error"]["message"]
        assert "key" not in body
        status, listed = await admin(s, "GET", gw.url + "/admin/keys")
        assert status == 200 and "born-dead" not in str(listed)


async def test_a_key_expiring_in_the_future_is_created_and_works(make_upstream, start_gateway, admin_env):  # noqa: F811
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii))
    async with aiohttp.ClientSession() as s:
        status, created = await admin(s, "POST", gw.url + "/admin/keys", json={"name": "lives", "expires_at": time.time() + 3600})
        assert status == 201, created
        status, _, answer = await call(s, "POST", gw.url + "/v1/chat/completions", created["key"], json=CHAT)
        assert status == 200, answer
