"""Anthropic's Messages API as a second front door (issue 14): the official ``anthropic`` SDK, unchanged but for
``base_url`` and ``api_key``, against the gateway, each call routed once to an anthropic fake (the body goes
as it came) and once to an OpenAI-compatible fake (translated both ways)."""

from __future__ import annotations

import shutil
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest

from router.config import load_table
from tests.conftest import ADMIN_HEADERS, PROJECT_ROOT, provider_entry, wait_for
from tests.fakes.upstream import Behaviour

KEY = "sk-team-0123456789abcdef0123"
WEATHER = {"name": "get_weather", "description": "The weather in a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
TOOL_CALL_ANSWER = {
    "id": "chatcmpl-tools",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-up",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
}


def routes(upstream: Any, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {"up": provider_entry(upstream)},
        "models": {"claude": {"targets": [{"provider": "up", "model": f"{kind}-model", "price": {"input": 3, "output": 15}}]}},
        "auth": {"keys": {"team": {"key": KEY}}},
        **extra,
    }


def client(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)


@pytest.fixture(params=["anthropic", "openai"])
async def gateway(request, make_upstream, start_gateway):
    """The same alias, served by an anthropic upstream (natively) or an OpenAI-compatible one (translated)."""
    kind = request.param
    upstream = await make_upstream(kind)
    gw = await start_gateway(routes(upstream, kind))
    return kind, upstream, gw


async def test_messages_create_with_a_system_prompt(gateway):
    kind, upstream, gw = gateway
    async with client(gw.url) as sdk:
        message = await sdk.messages.create(model="claude", max_tokens=64, system="Answer briefly.", messages=[{"role": "user", "content": "hi"}])
    assert message.type == "message" and message.role == "assistant" and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text == f"Hello from {kind}"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    sent = upstream.received[0].body
    if kind == "anthropic":  # as it came: Anthropic's own fields, the target's model
        assert sent["system"] == "Answer briefly." and sent["model"] == "anthropic-model" and sent["max_tokens"] == 64
    else:  # translated: the system prompt is the first chat message
        assert sent["messages"][0] == {"role": "system", "content": "Answer briefly."} and sent["max_tokens"] == 64


async def test_messages_stream_text_deltas_and_the_final_usage(gateway):
    kind, _, gw = gateway
    async with client(gw.url) as sdk, sdk.messages.stream(model="claude", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join([delta async for delta in stream.text_stream])
        final = await stream.get_final_message()
    assert text == f"Hello from {kind}" == final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn"


async def test_a_tool_round_trip(gateway, make_upstream):
    kind, upstream, gw = gateway
    if kind == "openai":
        upstream.then(Behaviour(body=TOOL_CALL_ANSWER))
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    async with client(gw.url) as sdk:
        first = await sdk.messages.create(model="claude", max_tokens=64, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}, messages=ask)  # type: ignore[list-item, arg-type]
        calls = [block for block in first.content if block.type == "tool_use"]
        assert first.stop_reason == "tool_use" and len(calls) == 1 and calls[0].name == "get_weather" and calls[0].input["city"] == "Paris"  # type: ignore[index]
        follow = [
            *ask,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny"}]},
        ]
        second = await sdk.messages.create(model="claude", max_tokens=64, tools=[WEATHER], messages=follow)  # type: ignore[list-item, arg-type]
        assert second.stop_reason == "end_turn" and second.content[0].type == "text"
        if kind == "openai":  # the tool result reached the chat target as a tool message
            assert {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"} in upstream.received[-1].body["messages"]
        else:
            assert "sunny" in second.content[0].text  # type: ignore[union-attr]


async def test_count_tokens(gateway):
    _, upstream, gw = gateway
    async with client(gw.url) as sdk:
        counted = await sdk.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "x" * 400}])
        assert 100 <= counted.input_tokens <= 110 and not upstream.received  # an estimate, no upstream called
        with pytest.raises(anthropic.NotFoundError):
            await sdk.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "hi"}])


async def test_errors_come_in_anthropics_shape_and_keys_from_x_api_key(gateway):
    _, _, gw = gateway
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="sk-wrong-0123456789abcdef", max_retries=0) as wrong:
        with pytest.raises(anthropic.AuthenticationError) as unauthenticated:
            await wrong.messages.create(model="claude", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert unauthenticated.value.body == {"type": "error", "error": {"type": "authentication_error", "message": unauthenticated.value.body["error"]["message"]}}  # type: ignore[index]
    async with client(gw.url) as sdk:
        with pytest.raises(anthropic.BadRequestError) as bad:
            await sdk.messages.create(model="claude", max_tokens=8, messages=[{"role": "system", "content": "hi"}])  # type: ignore[list-item, misc]
    assert bad.value.body["error"]["type"] == "invalid_request_error" and "messages[0].role" in bad.value.body["error"]["message"]  # type: ignore[index]


async def test_a_529_anthropic_target_fails_over_to_an_openai_one_within_one_request(make_upstream, start_gateway, tmp_path):
    claude, gpt = await make_upstream("anthropic"), await make_upstream("openai")
    claude.default = Behaviour(status=529)
    config = {
        "providers": {"claude": provider_entry(claude), "gpt": provider_entry(gpt)},
        "models": {
            "claude": {"targets": [{"provider": "claude", "model": "claude-up"}, {"provider": "gpt", "model": "gpt-up", "price": {"input": 1, "output": 2}}]}
        },
        "ledger": {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j"), "flush_interval": 0.02},
        "auth": {"enabled": False},
    }
    gw = await start_gateway(config)
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0) as sdk:
        raw = await sdk.messages.with_raw_response.create(model="claude", max_tokens=32, messages=[{"role": "user", "content": "hi"}])
        message = await raw.parse()
        assert raw.headers["x-router-trace"] == "claude/claude-up=status 529, gpt/gpt-up=ok" and message.content[0].text == "Hello from openai"  # type: ignore[union-attr]
        async with sdk.messages.stream(model="claude", max_tokens=32, messages=[{"role": "user", "content": "hi"}]) as stream:
            assert "".join([d async for d in stream.text_stream]) == "Hello from openai"

    async def by_operation() -> dict[str, Any] | None:
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/v1/usage?from=1d&group_by=operation", headers=ADMIN_HEADERS) as r:
            rows = (await r.json())["data"]
            return rows[0] if rows and rows[0]["requests"] == 2 else None

    row = await wait_for(by_operation)
    assert row["operation"] == "messages" and row["cost_micro_usd"] > 0


async def test_the_quick_start_answers_messages_from_the_mock(start_gateway, tmp_path):
    shutil.copy(PROJECT_ROOT / "routes.yaml", tmp_path / "routes.yaml")
    gw = await start_gateway(load_table(tmp_path / "routes.yaml"))
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0) as sdk:
        message = await sdk.messages.create(model="chat", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text.startswith("The gateway answered")  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/messages", data=b"not json", headers={"content-type": "application/json"}) as r:
        body = orjson.loads(await r.read())
        assert r.status == 400 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


async def test_what_only_an_anthropic_target_can_take_goes_to_one_and_is_a_clear_400_elsewhere(gateway):
    kind, upstream, gw = gateway
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The sky is green."}}
    content = [document, {"type": "text", "text": "What colour is the sky?"}]
    async with client(gw.url) as sdk:
        if kind == "anthropic":  # the body went as it came, document block and all
            message = await sdk.messages.create(model="claude", max_tokens=32, messages=[{"role": "user", "content": content}])  # type: ignore[list-item]
            assert message.content[0].type == "text" and upstream.received[0].body["messages"][0]["content"][0]["type"] == "document"
        else:
            with pytest.raises(anthropic.BadRequestError) as refused:
                await sdk.messages.create(model="claude", max_tokens=32, messages=[{"role": "user", "content": content}])  # type: ignore[list-item]
            assert "only an anthropic target can take it" in refused.value.body["error"]["message"] and not upstream.received  # type: ignore[index]


async def test_a_native_answer_that_is_no_message_fails_over_and_an_echoed_key_never_reaches_the_client(make_upstream, start_gateway):
    claude, gpt = await make_upstream("anthropic"), await make_upstream("openai")
    claude.then(Behaviour(raw=b'{"type": "message", "content": "not a list"}'))
    echo = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": f"key {claude.api_key} is over quota"}})
    start = orjson.dumps(
        {
            "type": "message_start",
            "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "c", "content": [], "usage": {"input_tokens": 3, "output_tokens": 0}},
        }
    )
    delta = orjson.dumps({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})
    block = orjson.dumps({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    claude.then(Behaviour(events=[start, block, delta, echo]))
    config = {
        "providers": {"claude": provider_entry(claude), "gpt": provider_entry(gpt)},
        "models": {"claude": {"targets": [{"provider": "claude", "model": "claude-up"}, {"provider": "gpt", "model": "gpt-up"}]}},
        "auth": {"enabled": False},
    }
    gw = await start_gateway(config)
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0) as sdk:
        raw = await sdk.messages.with_raw_response.create(model="claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-router-trace"].startswith("claude/claude-up=protocol") and (await raw.parse()).content[0].text == "Hello from openai"  # type: ignore[union-attr]
    body = {"model": "claude", "max_tokens": 16, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/messages", json=body) as r:
        streamed = await r.read()
    assert b"event: content_block_delta" in streamed and b"event: error" in streamed  # passed through, then the gateway's error event
    assert claude.api_key.encode() not in streamed
