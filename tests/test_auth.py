"""Access control on one gateway: who gets in, on which aliases, within which budget (router/auth)."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest

from router.accounting.record import RequestRecord
from router.auth.keys import hash_key
from router.auth.limits import Window, format_reset, limit_refusal, ratelimit_headers
from router.auth.settings import is_loopback
from router.config import ConfigError
from router.server import start_server
from router.state.limiter import Refusal, ScopeCount, ScopeLimit
from tests.conftest import provider_entry, table_from
from tests.fakes.upstream import Behaviour, closed_port

ADMIN = "admin-token-0123456789abcdef"
CI_KEY = "ci-bot-key-0123456789abcdef"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}


def config(upstream: Any, auth: dict[str, Any] | None = None) -> dict[str, Any]:
    price = {"input": 0, "output": 2}  # 2 micro-dollars per output token
    return {
        "providers": {"forii": provider_entry(upstream)},
        "models": {
            "chat": {"operations": ["chat", "completion"], "targets": [{"provider": "forii", "model": "forii/deepseek-v3", "price": price}]},
            "secret-model": {"targets": [{"provider": "forii", "model": "forii/other", "price": price}]},
        },
        "auth": auth if auth is not None else {"keys": {"ci-bot": {"key": CI_KEY, "aliases": ["chat"]}}},
    }


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", ADMIN)
    return ADMIN


async def call(
    session: aiohttp.ClientSession, method: str, url: str, key: str | None = None, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, dict[str, Any], Any]:
    h = dict(headers or {})
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    async with session.request(method, url, headers=h, **kwargs) as r:
        body = await r.json(content_type=None) if r.content_type == "application/json" else await r.text()
        return r.status, dict(r.headers), body


async def admin(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    status, _, body = await call(session, method, url, ADMIN, **kwargs)
    return status, body


# -- who gets in -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/v1/models"), ("GET", "/no/such/path")])
async def test_every_endpoint_but_the_public_ones_needs_a_key(make_upstream, start_gateway, method, path):
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii))
    async with aiohttp.ClientSession() as s:
        status, _, body = await call(s, method, gw.url + path, json=CHAT)
        assert status == 401, body
        assert body["error"]["type"] == "authentication_error"
        assert (await call(s, "GET", gw.url + "/healthz"))[0] == 200
        assert (await call(s, "GET", gw.url + "/readyz"))[0] == 200
    assert forii.received == []


async def test_public_paths_are_configurable(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii, {"public_paths": ["/healthz"], "keys": {"ci-bot": {"key": CI_KEY}}}))
    async with aiohttp.ClientSession() as s:
        assert (await call(s, "GET", gw.url + "/healthz"))[0] == 200
        assert (await call(s, "GET", gw.url + "/readyz"))[0] == 401
        assert (await call(s, "GET", gw.url + "/readyz", CI_KEY))[0] == 200


async def test_missing_malformed_unknown_and_revoked_keys_get_the_same_401(make_upstream, start_gateway, admin_env):
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii))
    async with aiohttp.ClientSession() as s:
        status, created = await admin(s, "POST", gw.url + "/admin/keys", json={"name": "soon-revoked"})
        assert status == 201, created
        assert (await admin(s, "POST", gw.url + f"/admin/keys/{created['id']}/revoke"))[0] == 200
        attempts = {
            "missing": {},
            "malformed scheme": {"Authorization": f"Basic {CI_KEY}"},
            "empty bearer": {"Authorization": "Bearer "},
            "malformed value": {"Authorization": "Bearer short"},
            "unknown": {"Authorization": "Bearer sk-llmr-" + "x" * 43},
            "revoked": {"Authorization": f"Bearer {created['key']}"},
            "unknown x-api-key": {"x-api-key": "sk-llmr-" + "y" * 43},
        }
        bodies = {}
        for label, headers in attempts.items():
            status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", headers=headers, json=CHAT)
            assert status == 401, (label, body)
            bodies[label] = body
    assert len({str(b) for b in bodies.values()}) == 1, bodies  # nothing tells a guesser which case it was
    assert forii.received == []


@pytest.mark.parametrize("header", ["Authorization", "api-key", "x-api-key"])
async def test_a_key_is_accepted_in_each_header_sdks_send(make_upstream, start_gateway, header):
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii))
    value = f"Bearer {CI_KEY}" if header == "Authorization" else CI_KEY
    async with aiohttp.ClientSession() as s:
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", headers={header: value}, json=CHAT)
    assert status == 200, body


async def test_expired_key_and_forbidden_alias_get_403_before_any_upstream_call(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    auth = {"keys": {"ci-bot": {"key": CI_KEY, "aliases": ["chat"]}, "old": {"key": "old-key-0123456789abcdef", "expires_at": "2020-01-01T00:00:00Z"}}}
    gw = await start_gateway(config(forii, auth))
    async with aiohttp.ClientSession() as s:
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", "old-key-0123456789abcdef", json=CHAT)
        assert (status, body["error"]["code"]) == (403, "key_expired"), body
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json={**CHAT, "model": "secret-model"})
        assert (status, body["error"]["code"], body["error"]["param"]) == (403, "model_not_allowed", "model"), body
        status, _, models = await call(s, "GET", gw.url + "/v1/models", CI_KEY)
        assert [m["id"] for m in models["data"]] == ["chat"]  # a key sees only what it may use
    assert forii.received == []


async def test_a_key_may_be_allowed_one_name_a_wildcard_alias_serves(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    cfg = config(forii, {"keys": {"ci-bot": {"key": CI_KEY, "aliases": ["forii/deepseek-v3"]}}})
    cfg["models"]["forii/*"] = {"targets": [{"provider": "forii"}]}
    gw = await start_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json={**CHAT, "model": "forii/deepseek-v3"})
        assert status == 200, body
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json={**CHAT, "model": "forii/other"})
    assert status == 403, body
    assert [r.body["model"] for r in forii.received] == ["forii/deepseek-v3"]  # model omitted: the requested name goes on


async def test_team_narrows_its_keys_aliases_and_fallbacks_outside_them_are_skipped(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    cfg = config(forii, {"teams": {"web": {"aliases": ["chat"]}}, "keys": {"ci-bot": {"key": CI_KEY, "team": "web"}}})
    cfg["models"]["chat"]["fallbacks"] = ["secret-model"]
    forii.then(Behaviour(status=503))
    gw = await start_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json={**CHAT, "model": "secret-model"})
        assert status == 403, body
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json=CHAT)
    assert status == 503, body  # chat failed, and the fallback to secret-model was never tried
    assert [r.body["model"] for r in forii.received] == ["forii/deepseek-v3"]


async def test_record_carries_key_team_and_default_tags(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    auth = {
        "teams": {"web": {"metadata": {"cost_center": "42", "env": "prod"}}},
        "keys": {"ci-bot": {"key": CI_KEY, "team": "web", "user": "alice", "metadata": {"env": "ci"}}},
    }
    gw = await start_gateway(config(forii, auth))
    records: list[RequestRecord] = []
    gw.gateway.record_listeners.append(records.append)
    async with aiohttp.ClientSession() as s:
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json={**CHAT, "metadata": {"feature": "search"}})
    assert status == 200, body
    (record,) = records
    assert (record.key_id, record.team, record.user) == ("cfg_ci-bot", "web", "alice")
    assert record.metadata == {"cost_center": "42", "env": "ci", "feature": "search"}


async def test_repeated_failures_from_one_address_are_counted_and_slowed(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii, {"failure_threshold": 2, "keys": {"ci-bot": {"key": CI_KEY}}}))
    throttle = gw.gateway.auth.throttle
    async with aiohttp.ClientSession() as s:
        for _ in range(4):
            assert (await call(s, "GET", gw.url + "/v1/models", "sk-llmr-wrong-0123456789"))[0] == 401
        assert (await call(s, "GET", gw.url + "/v1/models", CI_KEY))[0] == 200
    assert (throttle.total, throttle.slowed) == (4, 2)
    assert throttle.failures("127.0.0.1") == 4


# -- admin API ---------------------------------------------------------------------------


async def test_admin_api_needs_the_admin_token_on_every_admin_path(make_upstream, start_gateway, admin_env):
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii))
    async with aiohttp.ClientSession() as s:
        for path in ("/admin/keys", "/admin/teams", "/admin/targets", "/admin"):
            assert (await call(s, "GET", gw.url + path))[0] == 401, path
            assert (await call(s, "GET", gw.url + path, "wrong-admin-token-0123456789"))[0] == 401, path
            assert (await call(s, "GET", gw.url + path, CI_KEY))[0] == 401, path  # a client key is not an admin token
        assert (await admin(s, "GET", gw.url + "/admin/keys"))[0] == 200


async def test_admin_api_is_off_without_a_token(make_upstream, start_gateway, monkeypatch):
    monkeypatch.delenv("ROUTER_ADMIN_TOKEN", raising=False)
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii, {"enabled": False}))  # even with client auth off
    async with aiohttp.ClientSession() as s:
        status, _, body = await call(s, "GET", gw.url + "/admin/keys", "anything-at-all-0123456789")
    assert (status, body["error"]["code"]) == (401, "admin_disabled")


async def test_keys_are_shown_once_rotate_and_revoke(make_upstream, start_gateway, admin_env):
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii, {"teams": {"web": {}}}))
    async with aiohttp.ClientSession() as s:
        status, created = await admin(
            s, "POST", gw.url + "/admin/keys", json={"name": "svc", "team": "web", "aliases": ["chat"], "budget": {"usd": 1, "period": "day"}}
        )
        assert status == 201, created
        key, key_id = created["key"], created["id"]
        assert key.startswith("sk-llmr-") and "key_hash" not in created
        assert (await call(s, "POST", gw.url + "/v1/chat/completions", key, json=CHAT))[0] == 200
        _, listing = await admin(s, "GET", gw.url + "/admin/keys")
        _, one = await admin(s, "GET", gw.url + f"/admin/keys/{key_id}")
        for shown in (str(listing), str(one)):
            assert key not in shown and hash_key(key, "") not in shown
        assert one["spend"][0]["scope"] == f"key {key_id}"

        status, rotated = await admin(s, "POST", gw.url + f"/admin/keys/{key_id}/rotate")
        assert status == 200 and rotated["id"] == key_id and rotated["key"] != key
        assert (await call(s, "GET", gw.url + "/v1/models", key))[0] == 401
        assert (await call(s, "GET", gw.url + "/v1/models", rotated["key"]))[0] == 200

        assert (await admin(s, "DELETE", gw.url + f"/admin/keys/{key_id}"))[0] == 200
        assert (await call(s, "GET", gw.url + "/v1/models", rotated["key"]))[0] == 401
        assert (await admin(s, "POST", gw.url + "/admin/keys/cfg_nope/revoke"))[0] == 404


async def test_admin_validates_bodies_with_paths_and_protects_declared_entries(make_upstream, start_gateway, admin_env):
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii))
    async with aiohttp.ClientSession() as s:
        status, body = await admin(
            s, "POST", gw.url + "/admin/keys", json={"budget": {"usd": "lots", "period": "year"}, "team": "ghost", "colour": 1, "aliases": ["chta"]}
        )
        assert status == 400
        message = body["error"]["message"]
        for fragment in ("budget.usd", "budget.period", "unknown team 'ghost'", "colour: unknown field", "unknown alias 'chta'"):
            assert fragment in message, message
        status, body = await admin(s, "POST", gw.url + "/admin/keys", json={"metadata": {"leak": "${ROUTER_ADMIN_TOKEN}"}})
        assert status == 201 and body["metadata"] == {"leak": "${ROUTER_ADMIN_TOKEN}"}  # admin bodies never read the environment
        assert (await admin(s, "POST", gw.url + "/admin/keys/cfg_ci-bot/revoke"))[0] == 409
        assert (await admin(s, "POST", gw.url + "/admin/teams", json={"name": "web", "budget": {"usd": 10}}))[0] == 201
        assert (await admin(s, "POST", gw.url + "/admin/teams", json={"name": "web"}))[0] == 409
        status, team = await admin(s, "PUT", gw.url + "/admin/teams/web", json={"aliases": ["chat"]})
        assert status == 200 and team["aliases"] == ["chat"] and team["budget"] is None
        _, created = await admin(s, "POST", gw.url + "/admin/keys", json={"team": "web"})
        assert (await admin(s, "DELETE", gw.url + "/admin/teams/web"))[0] == 409  # an active key belongs to it
        await admin(s, "POST", gw.url + f"/admin/keys/{created['id']}/revoke")
        assert (await admin(s, "DELETE", gw.url + "/admin/teams/web"))[0] == 200


# -- budgets -----------------------------------------------------------------------------


async def test_budget_refuses_before_the_upstream_and_settles_to_the_real_cost(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    forii.default = Behaviour(usage={"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29})
    # CHAT costs at most 50 output tokens * 2 = 100 micro-USD; each answer really costs 20 * 2 = 40.
    gw = await start_gateway(config(forii, {"keys": {"ci-bot": {"key": CI_KEY, "budget": {"usd": 0.00025, "period": "day"}}}}))
    book = gw.gateway.auth.book
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            assert (await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json=CHAT))[0] == 200
        await gw.gateway.auth.drain()
        (counter,) = [c for c in book.counters if c.startswith("spend:key:cfg_ci-bot:d")]
        assert book.counters[counter] == 2 * 40  # settled to the real usage, not the reservation
        for max_tokens in (50, 40):  # 80 + 100 <= 250, then 120 + 80 <= 250
            assert (await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json={**CHAT, "max_tokens": max_tokens}))[0] == 200
            await gw.gateway.auth.drain()
        sent = len(forii.received)
        status, headers, body = await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json=CHAT)  # 160 + 100 > 250
    assert status == 402, body
    assert body["error"]["code"] == "budget_exceeded" and "resets at" in body["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 86400
    assert len(forii.received) == sent  # the refused request never reached the upstream
    assert book.counters[counter] == 4 * 40


async def test_budget_without_max_tokens_reserves_and_enforces_the_default_bound(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    gw = await start_gateway(config(forii, {"default_max_output_tokens": 64, "keys": {"ci-bot": {"key": CI_KEY, "budget": {"usd": 1, "period": "total"}}}}))
    async with aiohttp.ClientSession() as s:
        status, _, body = await call(
            s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert status == 200, body
    assert forii.received[0].body["max_tokens"] == 64  # the upstream is held to what was reserved


async def test_team_budget_is_shared_by_its_keys_and_a_failed_request_gives_it_back(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    forii.default = Behaviour(usage={"prompt_tokens": 1, "completion_tokens": 50, "total_tokens": 51})
    other = "other-key-0123456789abcdef"
    auth = {"teams": {"web": {"budget": {"usd": 0.0002, "period": "month"}}}, "keys": {"a": {"key": CI_KEY, "team": "web"}, "b": {"key": other, "team": "web"}}}
    gw = await start_gateway(config(forii, auth))
    async with aiohttp.ClientSession() as s:
        forii.then(Behaviour(status=500))
        assert (await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json=CHAT))[0] == 502
        await gw.gateway.auth.drain()
        assert (await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json=CHAT))[0] == 200
        assert (await call(s, "POST", gw.url + "/v1/chat/completions", other, json=CHAT))[0] == 200
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", other, json=CHAT)
    assert status == 402 and "team web" in body["error"]["message"], body


async def test_a_streamed_answer_settles_to_the_usage_its_last_chunk_reports(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    forii.default = Behaviour(usage={"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10})
    gw = await start_gateway(config(forii, {"keys": {"ci-bot": {"key": CI_KEY, "budget": {"usd": 1, "period": "total"}}}}))
    async with aiohttp.ClientSession() as s:
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json={**CHAT, "stream": True})
    assert status == 200 and "[DONE]" in body
    await gw.gateway.auth.drain()
    assert gw.gateway.auth.book.counters == {"spend:key:cfg_ci-bot:total": 7 * 2}


async def test_an_unreachable_key_store_fails_closed_and_declared_keys_still_work(make_upstream, start_gateway):
    forii = await make_upstream("forii")
    auth = {"keys": {"ci-bot": {"key": CI_KEY}, "budgeted": {"key": "budgeted-key-0123456789", "budget": {"usd": 1}}}}
    gw = await start_gateway({**config(forii, auth), "state": {"backend": "redis", "url": f"redis://127.0.0.1:{closed_port()}/0"}})
    async with aiohttp.ClientSession() as s:
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", "sk-llmr-unknown-0123456789", json=CHAT)
        assert (status, body["error"]["code"]) == (503, "auth_unavailable"), body  # never admitted on a guess
        assert (await call(s, "POST", gw.url + "/v1/chat/completions", CI_KEY, json=CHAT))[0] == 200
        status, _, body = await call(s, "POST", gw.url + "/v1/chat/completions", "budgeted-key-0123456789", json=CHAT)
    assert (status, body["error"]["code"]) == (503, "auth_unavailable"), body  # no reservation, no request
    assert len(forii.received) == 1


# -- configuration and local development ---------------------------------------------------


def test_auth_config_mistakes_are_named_with_their_paths():
    with pytest.raises(ConfigError) as caught:
        table_from(
            {
                "providers": {"mock": {"kind": "mock"}},
                "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}]}},
                "auth": {
                    "cache_ttl": 5,
                    "teams": {"bad name!": {}, "typo": {"aliases": ["chta"]}},
                    "keys": {
                        "both": {"key": CI_KEY, "hash": "0" * 64},
                        "neither": {},
                        "lost": {"key": "${LOST_KEY}"},
                        "short": {"key": "abc"},
                        "orphan": {"key": "orphan-key-0123456789", "team": "ghost", "budget": {"usd": -1, "period": "year"}, "expires_at": "soon"},
                    },
                },
            }
        )
    text = str(caught.value)
    for fragment in (
        "auth.cache_ttl",
        "auth.teams.bad name!",
        "auth.keys.both: set exactly one",
        "auth.keys.neither: set exactly one",
        "auth.keys.lost.key: environment variable LOST_KEY",
        "auth.keys.short.key",
        "auth.keys.orphan.team: unknown team 'ghost'",
        "auth.keys.orphan.budget.usd",
        "auth.teams.typo.aliases: unknown alias 'chta'",
        "auth.keys.orphan.budget.period",
        "auth.keys.orphan.expires_at",
    ):
        assert fragment in text, (fragment, text)


def test_declared_keys_are_stored_as_peppered_hashes():
    cfg = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}]}},
        "auth": {"keys": {"env": {"key": "${CI_KEY}"}, "hashed": {"hash": hash_key("hashed-key-0123456789", "pep")}}},
    }
    table = table_from(cfg, env={"CI_KEY": CI_KEY, "ROUTER_KEY_PEPPER": "pep"})
    assert set(table.auth.keys_by_hash) == {hash_key(CI_KEY, "pep"), hash_key("hashed-key-0123456789", "pep")}
    assert CI_KEY not in repr(table.auth) and "pep'" not in repr(table.auth)


async def test_auth_off_listens_only_on_loopback_unless_told_otherwise():
    base = {"providers": {"mock": {"kind": "mock"}}, "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}]}}}
    with pytest.raises(ConfigError, match="only listens on loopback"):
        await start_server(table_from({**base, "auth": {"enabled": False}}), "0.0.0.0", 0)
    server = await start_server(table_from({**base, "auth": {"enabled": False, "allow_remote_without_auth": True}}), "0.0.0.0", 0)
    await server.stop()
    server = await start_server(table_from({**base, "auth": {"enabled": True}}), "0.0.0.0", 0)
    await server.stop()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_the_shipped_routes_yaml_turns_auth_off_explicitly_on_loopback():
    from router.config import load_table
    from tests.conftest import PROJECT_ROOT

    table = load_table(PROJECT_ROOT / "routes.yaml", env={})
    assert table.auth.enabled is False and is_loopback(table.server.host)


# -- limits: the headers and the refusal the shared limiter will produce -------------------


def test_ratelimit_headers_and_refusal_follow_openai():
    requests, tokens = Window(limit=60, remaining=0, reset_seconds=12.2), Window(limit=1000, remaining=-5, reset_seconds=0.25)
    assert ratelimit_headers(requests, tokens) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "13s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "250ms",
    }
    limits = (ScopeLimit("key:k", rpm=60, tpm=1000),)
    error = limit_refusal(limits, Refusal("key:k", "rpm", 12.2, (ScopeCount("key:k", 60, 1005, 12.2),)))
    assert (error.status, error.headers["Retry-After"], error.headers["x-ratelimit-remaining-requests"]) == (429, "13", "0")
    assert format_reset(360) == "6m0s"


def test_key_and_team_limits_are_parsed_and_validated():
    cfg = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}]}},
        "auth": {
            "teams": {"web": {"limits": {"rpm": 600, "tpm": 100000, "concurrency": 8}}},
            "keys": {"k": {"key": CI_KEY, "team": "web", "limits": {"rpm": 0}}},
        },
    }
    with pytest.raises(ConfigError, match=r"auth.keys.k.limits.rpm: must be at least 1"):
        table_from(cfg)
    cfg["auth"]["keys"]["k"]["limits"] = {"rpm": 60}
    table = table_from(cfg)
    assert table.auth.teams["web"].limits.concurrency == 8
    assert next(iter(table.auth.keys_by_hash.values())).limits.rpm == 60


# -- secrets never leak ---------------------------------------------------------------------


async def test_no_key_or_secret_appears_in_any_response_or_log(make_upstream, start_gateway, admin_env, caplog, monkeypatch):
    monkeypatch.setenv("ROUTER_KEY_PEPPER", "pepper-0123456789abcdef")
    caplog.set_level(logging.DEBUG)
    forii = await make_upstream("forii")
    forii.then(Behaviour(status=401, body={"error": {"message": f"Incorrect API key provided: {forii.api_key}"}}))
    cfg = config(forii, {"teams": {"web": {"budget": {"usd": 0.0001}}}, "keys": {"ci-bot": {"key": "${CI_KEY}", "team": "web"}}})
    from router.config import parse_table

    gw = await start_gateway(parse_table(cfg, "t.yaml", {"CI_KEY": CI_KEY, "ROUTER_KEY_PEPPER": "pepper-0123456789abcdef"}))
    seen: list[str] = []
    async with aiohttp.ClientSession() as s:

        async def record(method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
            status, headers, body = await call(s, method, gw.url + path, key, **kwargs)
            seen.append(f"{status} {headers} {body}")
            return body

        created = await record("POST", "/admin/keys", ADMIN, json={"team": "web"})
        minted = created["key"]
        seen.pop()  # the one response allowed to carry a key: its creation
        rotated = (await record("POST", f"/admin/keys/{created['id']}/rotate", ADMIN))["key"]
        seen.pop()
        for key in (CI_KEY, rotated, minted, "sk-llmr-guess-0123456789abcdef", ADMIN):
            await record("POST", "/v1/chat/completions", key, json=CHAT)
            await record("POST", "/v1/chat/completions", key, json={**CHAT, "max_tokens": 10_000})
            await record("GET", "/v1/models", key)
            await record("GET", "/admin/keys", key)
        await record("GET", "/admin/keys", ADMIN)
        await record("GET", "/admin/teams", ADMIN)
        await record("GET", f"/admin/keys/{created['id']}", ADMIN)
    captured = "\n".join(seen) + "\n" + "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "200" in captured and "402" in captured and "401" in captured  # the run did exercise success and refusals
    for secret in (CI_KEY, minted, rotated, ADMIN, forii.api_key, "pepper-0123456789abcdef"):
        assert secret not in captured, secret
