"""The azure adapter: deployments, api-version and the api-key header; OpenAI's shapes plus Azure's content filtering; end to end with the openai SDK."""

from __future__ import annotations

import json

import aiohttp
import openai
import orjson
import pytest

from providers import ADAPTERS
from providers.azure import DEFAULT_API_VERSION, AzureAdapter, api_version
from providers.base import BadAnswer, ResponseContext
from providers.operations import Operation
from tests.conftest import ADMIN_HEADERS, provider_entry, wait_for
from tests.fakes.upstream import AZURE_FILTERS, Behaviour

AZURE = ADAPTERS["azure"]
CHAT = {"model": "alias", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1, "route": {}, "stream_options": {"include_usage": False}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def ctx(include_usage: bool = False) -> ResponseContext:
    return ResponseContext(provider="az", model="gpt4o-prod", request_id="rid", created=1700000000, include_usage=include_usage)


def test_paths_name_the_deployment_and_the_api_version():
    expected = {
        Operation.CHAT: "/openai/deployments/gpt4o-prod/chat/completions",
        Operation.COMPLETION: "/openai/deployments/gpt4o-prod/completions",
        Operation.EMBEDDING: "/openai/deployments/gpt4o-prod/embeddings",
    }
    for op, path in expected.items():
        call = AZURE.build_call(op, {**CHAT, "input": "x"} if op is Operation.EMBEDDING else CHAT, "gpt4o-prod", False)
        assert call.path == f"{path}?api-version={DEFAULT_API_VERSION}"
    assert AZURE.build_call(Operation.CHAT, CHAT, "my deployment/1", False).path.startswith("/openai/deployments/my%20deployment%2F1/")
    assert AZURE.auth_headers("secret") == {"api-key": "secret"}
    assert AZURE.default_base_url is None  # every resource has its own endpoint: base_url is required


def test_a_stream_asks_for_usage_and_the_body_is_openais():
    call = AZURE.build_call(Operation.CHAT, CHAT, "gpt4o-prod", True)
    assert orjson.loads(call.body) == {
        "model": "gpt4o-prod",
        "messages": CHAT["messages"],
        "temperature": 0.1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert call.stream


def test_the_api_version_comes_from_the_providers_options():
    bound = AZURE.configured({"api_version": "2025-01-01-preview"})
    assert isinstance(bound, AzureAdapter) and bound.build_call(Operation.CHAT, CHAT, "d", False).path.endswith("?api-version=2025-01-01-preview")
    assert AZURE.configured({}).api_version == DEFAULT_API_VERSION
    assert AZURE.configured({"api_version": "2025-01-01-preview"}) is bound  # built once per version
    for bad in ("latest", 20241021, "2024-10-21; drop"):
        with pytest.raises(ValueError, match="api_version"):
            api_version({"api_version": bad})
    assert ADAPTERS["openai"].configured({"anything": 1}) is ADAPTERS["openai"]  # adapters without options are themselves


def azure_answer(finish: str = "stop", content: str | None = "Hello") -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": AZURE_FILTERS}],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
                "content_filter_results": {**AZURE_FILTERS, "violence": {"filtered": finish == "content_filter", "severity": "medium"}},
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 4}},
    }


def test_answers_keep_azures_filter_results_and_content_filter_passes_through():
    out, usage = AZURE.translate_response(Operation.CHAT, azure_answer(), ctx())
    assert out["prompt_filter_results"][0]["content_filter_results"] == AZURE_FILTERS
    assert out["choices"][0]["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert out["provider"] == "az" and out["model"] == "gpt-4o-2024-08-06"
    assert usage is not None and (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (12, 4, 3)
    filtered, _ = AZURE.translate_response(Operation.CHAT, azure_answer("content_filter", ""), ctx())
    assert filtered["choices"][0]["finish_reason"] == "content_filter" and filtered["choices"][0]["content_filter_results"]["violence"]["filtered"]


@pytest.mark.parametrize("payload", [{"prompt_filter_results": []}, {"choices": []}, {"choices": [{"message": {"content": 3}}]}])
def test_malformed_answers_are_bad_answers(payload):
    with pytest.raises(BadAnswer):
        AZURE.translate_response(Operation.CHAT, payload, ctx())


def test_streams_relay_the_prompt_filter_chunk_and_hold_usage_unless_asked():
    translator = AZURE.stream_translator(Operation.CHAT, ctx())
    opening = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [],
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": AZURE_FILTERS}],
    }
    relayed = orjson.loads(translator.translate(orjson.dumps(opening)))
    assert relayed["provider"] == "az" and relayed["prompt_filter_results"] == opening["prompt_filter_results"]
    usage_chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    assert translator.translate(orjson.dumps(usage_chunk)) is None
    assert translator.usage is not None and translator.usage.total == 7


def test_errors_read_azures_code_and_message():
    body = {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation have exceeded call rate limit."}}
    assert AZURE.error_message(429, body) == body["error"]["message"]


async def test_the_fake_refuses_a_bearer_key_and_an_unknown_api_version(make_upstream):
    up = await make_upstream("azure")
    call = AZURE.build_call(Operation.CHAT, CHAT, "dep", False)
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as s:
        async with s.post(up.base_url + call.path, data=call.body, headers={"Authorization": f"Bearer {up.api_key}"}) as r:
            assert r.status == 401
        bad = AZURE.configured({"api_version": "2019-01-01"}).build_call(Operation.CHAT, CHAT, "dep", False)
        async with s.post(up.base_url + bad.path, data=bad.body, headers=AZURE.auth_headers(up.api_key)) as r:
            assert r.status == 404 and (await r.json())["error"]["message"] == "Resource not found"


# -- end to end -------------------------------------------------------------

PRICE = {"input": 2, "output": 8, "cached_input": 1}


async def gateway(make_upstream, start_gateway, tmp_path):
    az, spare = await make_upstream("azure"), await make_upstream("openai")
    config = {
        "providers": {"az": provider_entry(az), "oa": provider_entry(spare)},
        "models": {"chat": {"targets": [{"provider": "az", "model": "gpt4o-prod", "price": PRICE}, {"provider": "oa", "model": "gpt-4o", "price": PRICE}]}},
        "ledger": {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "usage.db")}], "journal_dir": str(tmp_path / "journal")},
    }
    return az, spare, await start_gateway(config)


def client(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


async def total_cost(gw, requests: int) -> int:
    ledger = gw.gateway.ledger
    await wait_for(lambda: ledger.accepted >= requests)
    await ledger.flush()
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/v1/usage?from=1d&group_by=provider", headers=ADMIN_HEADERS) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["total"]["cost_micro_usd"]


async def test_sdk_chat_and_stream_against_the_azure_fake_priced_exactly(make_upstream, start_gateway, tmp_path):
    az, _, gw = await gateway(make_upstream, start_gateway, tmp_path)
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        stream = await c.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        )
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from azure" and raw.headers["x-router-trace"] == "az/gpt4o-prod=ok"
    extra = reply.model_extra or {}
    assert extra["prompt_filter_results"][0]["content_filter_results"] == AZURE_FILTERS
    assert "".join(pieces) == "Hello from azure"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens) == (20, 5, 4)
    first = az.received[0]
    assert first.path == "/openai/deployments/gpt4o-prod/chat/completions" and first.headers["api-key"] == az.api_key
    assert "Authorization" not in first.headers
    # The fake's usage: 20 prompt (4 cached), 5 completion: (16 * 2 + 4 * 1 + 5 * 8) = 76 micro-dollars a call.
    assert await total_cost(gw, 2) == 2 * 76


async def test_sdk_tool_call_round_trip_through_azure(make_upstream, start_gateway, tmp_path):
    az, _, gw = await gateway(make_upstream, start_gateway, tmp_path)
    call = {"id": "call_az1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    first_answer = {
        **azure_answer("tool_calls", None),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}],
    }
    az.then(Behaviour(body=first_answer), Behaviour(text="It is 3 degrees in Oslo"))
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    async with client(gw) as c:
        first = await c.chat.completions.create(model="chat", messages=messages, tools=[WEATHER])
        tool_call = first.choices[0].message.tool_calls[0]
        assert (tool_call.id, tool_call.function.name, json.loads(tool_call.function.arguments)) == ("call_az1", "get_weather", {"city": "Oslo"})
        messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": tool_call.id, "content": "3 C"}]
        second = await c.chat.completions.create(model="chat", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "It is 3 degrees in Oslo"
    sent = az.received[1].body
    assert sent["tools"] == [WEATHER] and sent["messages"][-1] == {"role": "tool", "tool_call_id": "call_az1", "content": "3 C"}


async def test_a_429_from_azure_fails_over_to_the_next_target(make_upstream, start_gateway, tmp_path):
    az, spare, gw = await gateway(make_upstream, start_gateway, tmp_path)
    az.then(Behaviour(status=429, headers={"Retry-After": "1"}))
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content == "Hello from openai"
    assert raw.headers["x-router-trace"] == "az/gpt4o-prod=status 429, oa/gpt-4o=ok"
    assert len(az.received) == 1 and len(spare.received) == 1
    assert await total_cost(gw, 1) == 76  # the openai fake reports the same usage
