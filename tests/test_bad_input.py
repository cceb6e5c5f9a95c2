"""Bad input gets its status and an OpenAI-shape error naming the problem."""

from __future__ import annotations

import aiohttp
import pytest

MOCK_ROUTES = {
    "server": {"max_body_bytes": 2048},
    "providers": {"mock": {"kind": "mock"}},
    "models": {
        "chat": {"targets": [{"provider": "mock", "model": "m"}]},
        "text-only": {"operations": ["completion"], "targets": [{"provider": "mock", "model": "t"}]},
    },
}


def assert_openai_error(body: dict) -> dict:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("payload", "status", "needle", "param"),
    [
        (b"{not json", 400, "not valid JSON", None),
        (b"", 400, "empty", None),
        (b"[1, 2]", 400, "must be a JSON object, got an array", None),
        (b'"text"', 400, "must be a JSON object, got a string", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "you must name a model", "model"),
        (b'{"model": 7, "messages": []}', 400, "'model' must be a string", "model"),
        (b'{"models": "chat", "messages": []}', 400, "'models' must be an array", "models"),
        (b'{"model": "chat", "messages": "hello"}', 400, "'messages' must be an array", "messages"),
        (b'{"model": "chat"}', 400, "'messages' is required", "messages"),
        (b'{"model": "chat", "messages": []}', 400, "at least one message", "messages"),
        (b'{"model": "chat", "messages": [{"content": "x"}]}', 400, "messages[0]", "messages[0]"),
        (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400, "'temperature' must be a number", "temperature"),
        (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}', 400, "'max_tokens' must be an integer", "max_tokens"),
        (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "'stream' must be a boolean", "stream"),
        (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "metadata": {"team": 5}}', 400, "'metadata'", "metadata"),
        (
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 9223372036854775807}',
            400,
            "'max_tokens' must be at most",
            "max_tokens",
        ),
        (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "n": 100000}', 400, "'n' must be at most 128", "n"),
        # Names that end up in response headers and log lines: a line break would split them.
        (b'{"model": "mock/a\\r\\nX-Injected: 1", "messages": [{"role": "user", "content": "x"}]}', 400, "control characters", "model"),
        (b'{"models": ["chat", "b\\nc"], "messages": [{"role": "user", "content": "x"}]}', 400, "control characters", "models[1]"),
        (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "user": "al\\u0000ice"}', 400, "control characters", "user"),
        (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "metadata": {"team": "a\\r\\nb"}}', 400, "control characters", "metadata.team"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "unknown model 'nope'", "model"),
        (b'{"model": "text-only", "messages": [{"role": "user", "content": "x"}]}', 400, "does not serve chat", None),
    ],
)
async def test_bad_chat_requests(start_gateway, payload, status, needle, param):
    gw = await start_gateway(MOCK_ROUTES)
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", data=payload, headers={"Content-Type": "application/json"}) as r:
        assert r.status == status
        error = assert_openai_error(await r.json())
    assert needle in error["message"]
    assert error["param"] == param


async def test_unknown_alias_lists_the_ones_that_exist(start_gateway):
    gw = await start_gateway(MOCK_ROUTES)
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + "/v1/chat/completions", json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}) as r,
    ):
        error = assert_openai_error(await r.json())
    assert r.status == 404
    assert error["code"] == "model_not_found"
    assert "chat" in error["message"] and "text-only" in error["message"]


async def test_body_over_the_limit_gets_413(start_gateway):
    gw = await start_gateway(MOCK_ROUTES)
    big = {"model": "chat", "messages": [{"role": "user", "content": "x" * 4096}]}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json=big) as r:
        assert r.status == 413
        error = assert_openai_error(await r.json())
    assert "2048" in error["message"]


async def test_missing_prompt_on_text_completions(start_gateway):
    gw = await start_gateway(MOCK_ROUTES)
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/completions", json={"model": "text-only"}) as r:
        assert r.status == 400
        error = assert_openai_error(await r.json())
    assert error["param"] == "prompt"


async def test_unknown_path_and_wrong_method_are_openai_shaped(start_gateway):
    gw = await start_gateway(MOCK_ROUTES)
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/v1/nothing") as r:
            assert r.status == 404
            assert_openai_error(await r.json())
        async with s.get(gw.url + "/v1/chat/completions") as r:
            assert r.status == 405
            assert_openai_error(await r.json())


async def test_request_id_is_echoed_or_made(start_gateway):
    gw = await start_gateway(MOCK_ROUTES)
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/chat/completions", json=body, headers={"x-request-id": "client-abc-1"}) as r:
            assert r.headers["x-request-id"] == "client-abc-1"
        async with s.post(gw.url + "/v1/chat/completions", json={"model": "nope"}) as r:
            assert len(r.headers["x-request-id"]) == 24


async def test_health_ready_and_models(start_gateway):
    gw = await start_gateway(MOCK_ROUTES)
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/healthz") as r:
            assert r.status == 200
        async with s.get(gw.url + "/readyz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ready"
        async with s.get(gw.url + "/v1/models") as r:
            ids = [m["id"] for m in (await r.json())["data"]]
    assert ids == ["chat", "text-only"]
