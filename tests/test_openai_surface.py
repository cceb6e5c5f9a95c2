"""The rest of the OpenAI surface clients call (issue 15): embeddings, the Responses API, models/{id}
and CORS, with the official ``openai`` SDK against fake upstreams and against the shipped routes.yaml."""

from __future__ import annotations

import base64
import shutil
import struct
from decimal import Decimal
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.config import load_table
from tests.conftest import ADMIN_HEADERS, PROJECT_ROOT, provider_entry, table_from, wait_for
from tests.fakes.upstream import Behaviour

PRICE = {"input": "0.13", "output": "0", "version": "emb-1"}
CHAT_PRICE = {"input": "1", "output": "4", "version": "chat-1"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def ledger(tmp_path: Any) -> dict[str, Any]:
    return {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j"), "flush_interval": 0.02}


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


async def usage_by(url: str, keys: str, requests: int) -> dict[str, dict[str, Any]]:
    async def rows() -> dict[str, dict[str, Any]] | None:
        async with aiohttp.ClientSession() as s, s.get(f"{url}/v1/usage?from=1d&group_by={keys}", headers=ADMIN_HEADERS) as r:
            body = await r.json()
            return {row[keys]: row for row in body["data"]} if body["total"]["requests"] == requests else None

    return await wait_for(rows)


@pytest.fixture
async def shipped(start_gateway, tmp_path):
    """The gateway as ./dev serve runs it: the shipped routes.yaml, the mock answering."""
    shutil.copy(PROJECT_ROOT / "routes.yaml", tmp_path / "routes.yaml")
    return await start_gateway(load_table(tmp_path / "routes.yaml"))


async def test_embeddings_one_and_many_and_base64_from_the_quick_start_mock(shipped):
    client = sdk(shipped.url)
    one = await client.embeddings.create(model="embed", input="hello")
    many = await client.embeddings.create(model="embed", input=["hello", "world", "again"], dimensions=16)
    packed = await client.embeddings.create(model="embed", input="hello", encoding_format="base64")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 8
    assert [d.index for d in many.data] == [0, 1, 2] and all(len(d.embedding) == 16 for d in many.data)
    assert many.data[0].embedding[:8] != many.data[1].embedding[:8]  # different texts, different vectors
    # The SDK decodes base64 itself when it asked for floats; asked for base64, it hands back the string.
    raw = packed.data[0].embedding
    assert isinstance(raw, str) and list(struct.unpack("<8f", base64.b64decode(raw))) == pytest.approx(one.data[0].embedding)
    assert one.usage.prompt_tokens >= 1
    await client.close()


async def test_responses_create_and_stream_from_the_quick_start_mock(shipped):
    client = sdk(shipped.url)
    answer = await client.responses.create(model="chat", input="Say hi", instructions="Be brief")
    assert answer.output_text.startswith("The gateway answered") and answer.usage is not None and answer.usage.output_tokens > 0
    async with client.responses.stream(model="chat", input="Say hi") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == answer.output_text
    assert (await client.models.retrieve("chat")).id == "chat"
    await client.close()


async def test_a_responses_function_call_round_trip(shipped):
    client = sdk(shipped.url)
    first = await client.responses.create(model="chat", input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required")  # type: ignore[list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and "city" in calls[0].arguments
    follow_up = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"},
    ]
    second = await client.responses.create(model="chat", input=follow_up, tools=[WEATHER])  # type: ignore[arg-type, list-item]
    assert "sunny, 21 C" in second.output_text
    async with client.responses.stream(model="chat", input="weather in Oslo?", tools=[WEATHER], tool_choice="required") as stream:  # type: ignore[list-item]
        final = await stream.get_final_response()
    streamed = [item for item in final.output if item.type == "function_call"]
    assert streamed and streamed[0].name == "get_weather" and streamed[0].arguments.startswith("{")
    await client.close()


async def test_responses_state_it_does_not_keep_is_a_clear_400(shipped):
    client = sdk(shipped.url)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model="chat", input="and then?", previous_response_id="resp_123")
    assert refused.value.status_code == 400 and "previous_response_id" in str(refused.value)
    await client.close()


async def test_embeddings_and_responses_fail_over_and_are_priced_by_operation(make_upstream, start_gateway, tmp_path):
    down, up = await make_upstream("openai"), await make_upstream("openai")
    down.default = Behaviour(status=503)
    config = {
        "providers": {"down": provider_entry(down), "up": provider_entry(up)},
        "models": {
            "embed": {
                "operations": ["embedding"],
                "targets": [{"provider": "down", "model": "e1", "price": PRICE}, {"provider": "up", "model": "e2", "price": PRICE}],
            },
            "chat": {"targets": [{"provider": "up", "model": "c", "price": CHAT_PRICE}]},
        },
        "ledger": ledger(tmp_path),
    }
    gw = await start_gateway(config)
    client = sdk(gw.url)
    raw = await client.embeddings.with_raw_response.create(model="embed", input=["a", "b"])
    embedded = raw.parse()
    assert raw.headers["x-router-trace"] == "down/e1=status 503, up/e2=ok" and len(embedded.data) == 2
    answer = await client.responses.create(model="chat", input="hi")
    rows = await usage_by(gw.url, "operation", 2)
    assert set(rows) == {"embedding", "responses"}
    # The fakes' counts at the prices above, rounded once per request.
    expected_embed = Decimal(embedded.usage.prompt_tokens) * Decimal(PRICE["input"])
    expected_chat = Decimal(answer.usage.input_tokens) * 1 + Decimal(answer.usage.output_tokens) * 4  # type: ignore[union-attr]
    assert rows["embedding"]["cost_micro_usd"] == int(expected_embed.quantize(Decimal(1), "ROUND_HALF_UP"))
    assert rows["responses"]["cost_micro_usd"] == int(expected_chat) and rows["responses"]["prompt_tokens"] == answer.usage.input_tokens  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/metrics") as r:
        families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    operations = {s.labels["operation"] for s in families["llm_router_requests"].samples if s.name == "llm_router_requests_total"}
    assert operations == {"embedding", "responses"}
    await client.close()


async def test_models_list_names_what_can_be_called_and_retrieve_serves_a_wildcard_name(shipped):
    client = sdk(shipped.url)
    names = [m.id async for m in client.models.list()]
    assert "chat" in names and "embed" in names and not any("*" in n for n in names)
    assert (await client.models.retrieve("mock/any-model")).id == "mock/any-model"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")
    await client.close()


async def test_a_browser_preflight_from_an_allowed_origin_gets_cors_headers_and_auth_still_applies(start_gateway):
    config = {
        "server": {"cors": {"allow_origins": ["https://app.example.com"], "max_age": 120}},
        "providers": {"m": {"kind": "mock"}},
        "models": {"chat": {"targets": [{"provider": "m", "model": "x"}]}},
        "auth": {"keys": {"web": {"key": "sk-web-0123456789abcdef0123"}}},
    }
    gw = await start_gateway(config)
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        async with s.options(gw.url + "/v1/chat/completions", headers=preflight) as r:
            assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert "authorization" in r.headers["Access-Control-Allow-Headers"] and r.headers["Access-Control-Max-Age"] == "120"
        async with s.options(gw.url + "/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"}) as r:
            assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
        origin = {"Origin": "https://app.example.com"}
        async with s.post(gw.url + "/v1/chat/completions", json=body, headers=origin) as r:
            assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"  # the browser may read why
        async with s.post(
            gw.url + "/v1/chat/completions", json={**body, "stream": True}, headers={**origin, "Authorization": "Bearer sk-web-0123456789abcdef0123"}
        ) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert "x-router-trace" in r.headers["Access-Control-Expose-Headers"]
            await r.read()


async def test_responses_pass_through_natively_to_a_provider_declared_to_speak_them(make_upstream, start_gateway, tmp_path):
    native, down = await make_upstream("openai"), await make_upstream("openai")
    down.default = Behaviour(status=503)
    price = {"input": "2", "output": "8", "cached_input": "0.5", "version": "r-1"}
    config = {
        "providers": {"down": provider_entry(down, options={"responses": "native"}), "native": provider_entry(native, options={"responses": "native"})},
        "models": {"chat": {"targets": [{"provider": "down", "model": "r0"}, {"provider": "native", "model": "r1", "price": price}]}},
        "ledger": ledger(tmp_path),
    }
    gw = await start_gateway(config)
    client = sdk(gw.url)
    raw = await client.responses.with_raw_response.create(model="chat", input="hi", instructions="Be brief", previous_response_id="resp_kept_upstream")
    answer = raw.parse()
    assert raw.headers["x-router-trace"] == "down/r0=status 503, native/r1=ok"
    assert answer.id.startswith("resp_fake") and answer.output_text == "Hello from openai responses"  # the upstream's own Response
    sent = native.received[0]
    assert (
        sent.path == "/v1/responses" and sent.body["input"] == "hi" and sent.body["previous_response_id"] == "resp_kept_upstream" and sent.body["model"] == "r1"
    )
    async with client.responses.stream(model="chat", input="hi") as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert final.output_text == "Hello from openai responses" and kinds[0] == "response.created" and kinds[-1] == "response.completed"
    rows = await usage_by(gw.url, "operation", 2)
    # the fake's usage: 12 input (4 cached), 9 output: 8 x 2 + 4 x 0.5 + 9 x 8 = 90 micro-dollars a request
    assert rows["responses"]["cost_micro_usd"] == 180 and rows["responses"]["cached_tokens"] == 8
    await client.close()


def test_responses_native_is_refused_where_it_cannot_apply(tmp_path):
    config = {"providers": {"m": {"kind": "mock", "options": {"responses": "native"}}}, "models": {"chat": {"targets": [{"provider": "m", "model": "x"}]}}}
    with pytest.raises(Exception, match="providers.m.options"):
        table_from(config)


TOOL_CALL_ANSWER = {
    "id": "chatcmpl-tools",
    "object": "chat.completion",
    "created": 1,
    "model": "c",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38},
}


async def test_a_responses_function_call_round_trip_against_a_chat_fake(make_upstream, start_gateway):
    up = await make_upstream("openai")
    up.then(Behaviour(body=TOOL_CALL_ANSWER), Behaviour(text="It is sunny in Paris."))
    gw = await start_gateway({"providers": {"up": provider_entry(up)}, "models": {"chat": {"targets": [{"provider": "up", "model": "c"}]}}})
    client = sdk(gw.url)
    first = await client.responses.create(model="chat", input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.name, call.call_id, call.arguments) == ("get_weather", "call_7", '{"city": "Paris"}')
    assert up.received[0].body["tools"][0]["function"]["name"] == "get_weather"  # chat's tool shape went upstream
    follow = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_7", "name": "get_weather", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": "call_7", "output": "sunny"},
    ]
    async with client.responses.stream(model="chat", input=follow, tools=[WEATHER]) as stream:  # type: ignore[arg-type, list-item]
        final = await stream.get_final_response()
    assert final.output_text == "It is sunny in Paris."
    sent = up.received[1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_7" and sent[2] == {"role": "tool", "tool_call_id": "call_7", "content": "sunny"}
    await client.close()
