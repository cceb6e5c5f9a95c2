"""The gemini adapter: JSON in/JSON out against Google's documented shapes, then end to end with the openai SDK against the fake."""

from __future__ import annotations

import copy
import json

import aiohttp
import openai
import orjson
import pytest

from providers import ADAPTERS
from providers.base import BadAnswer, ResponseContext
from providers.gemini import gemini_request, gemini_schema
from providers.operations import Operation
from tests.conftest import ADMIN_HEADERS, provider_entry, wait_for
from tests.fakes.gemini import DEFAULT_USAGE
from tests.fakes.upstream import Behaviour

GEMINI = ADAPTERS["gemini"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture, and the weather?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "call_1", "content": "and sunny"},
]


def ctx(include_usage: bool = False) -> ResponseContext:
    return ResponseContext(provider="g", model="gemini-2.5-flash", request_id="rid", created=1700000000, include_usage=include_usage)


# -- the request ------------------------------------------------------------


def test_a_chat_request_becomes_a_generate_content_request():
    body = {
        "model": "alias",
        "messages": CONVERSATION,
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 64,
        "stop": "END",
        "n": 2,
        "seed": 7,
        "tools": [WEATHER],
        "tool_choice": "required",
        "stream_options": {"include_usage": True},
    }
    before = copy.deepcopy(body)
    out = gemini_request(body)
    assert body == before
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nUse metric units."}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "What is in this picture, and the weather?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {
            "role": "user",  # the two tool results, one turn, named after the call
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "get_weather", "response": {"result": "and sunny"}}},
            ],
        },
    ]
    assert out["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "candidateCount": 2, "seed": 7, "maxOutputTokens": 64, "stopSequences": ["END"]}
    declaration = out["tools"][0]["functionDeclarations"][0]
    assert declaration == {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "nullable": True}}, "required": ["city"]},
    }
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ],
)
def test_tool_choice_maps_to_function_calling_config(choice, config):
    out = gemini_request({"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER], "tool_choice": choice})
    assert out["toolConfig"] == {"functionCallingConfig": config}


def test_json_mode_and_json_schema_ask_for_json():
    plain = gemini_request({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}})
    assert plain["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False, "$schema": "x"}
    shaped = gemini_request(
        {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}
    )
    assert shaped["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
    }
    assert gemini_schema({"type": "array", "items": {"anyOf": [{"type": "string", "strict": True}]}}) == {
        "type": "array",
        "items": {"anyOf": [{"type": "string"}]},
    }


def test_the_call_names_the_model_in_the_path_and_the_key_in_x_goog_api_key():
    whole = GEMINI.build_call(Operation.CHAT, {"messages": [{"role": "user", "content": "hi"}]}, "gemini-2.5-flash", False)
    streamed = GEMINI.build_call(Operation.CHAT, {"messages": [{"role": "user", "content": "hi"}]}, "gemini-2.5-flash", True)
    assert whole.path == "/v1beta/models/gemini-2.5-flash:generateContent" and not whole.stream
    assert streamed.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse" and streamed.stream
    assert orjson.loads(whole.body) == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert GEMINI.auth_headers("k") == {"x-goog-api-key": "k"}
    assert GEMINI.default_base_url == "https://generativelanguage.googleapis.com"
    caps = GEMINI.capabilities
    assert caps.unsupported_param({"messages": [], "logprobs": True}) == "logprobs"  # no such field: the target is skipped
    assert caps.unsupported_param({"messages": [], "user": "u", "metadata": {}, "tools": [], "response_format": {}}) is None


# -- the answer -------------------------------------------------------------


def answer(parts, finish="STOP", usage=None, **extra):
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
        "usageMetadata": usage or DEFAULT_USAGE,
        **extra,
    }


def test_text_and_usage_with_cached_and_thoughts_tokens():
    out, usage = GEMINI.translate_response(
        Operation.CHAT, answer([{"text": "thinking...", "thought": True}, {"text": "Hel"}, {"text": "lo"}], responseId="r1"), ctx()
    )
    assert out["id"] == "chatcmpl-r1" and out["object"] == "chat.completion" and out["provider"] == "g" and out["model"] == "gemini-2.5-flash"
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop", "logprobs": None}]
    assert usage is not None
    # completion = candidates 6 + thoughts 8: thoughts are billed as output, and OpenAI's completion_tokens include reasoning tokens.
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, usage.reasoning_tokens, usage.total) == (21, 8, 14, 8, 35)
    assert out["usage"] == {
        "prompt_tokens": 21,
        "completion_tokens": 14,
        "total_tokens": 35,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 8},
    }


def test_tool_use_prompt_tokens_count_as_prompt():
    _, usage = GEMINI.translate_response(
        Operation.CHAT, answer([{"text": "x"}], usage={"promptTokenCount": 10, "toolUsePromptTokenCount": 5, "candidatesTokenCount": 2}), ctx()
    )
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total) == (15, 2, 17)


def test_function_calls_become_tool_calls_with_ids():
    parts = [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}, {"functionCall": {"name": "get_time", "args": {}, "id": "g-7"}}]
    out, _ = GEMINI.translate_response(Operation.CHAT, answer(parts), ctx())
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"}),
        ("function", "get_time", {}),
    ]
    assert calls[0]["id"].startswith("call_") and calls[1]["id"] == "g-7"
    again, _ = GEMINI.translate_response(Operation.CHAT, answer(parts), ctx())
    assert again["choices"][0]["message"]["tool_calls"][0]["id"] == calls[0]["id"]  # stable for a request


@pytest.mark.parametrize(
    ("reason", "mapped"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("OTHER", "stop"),
        ("NEW_ONE", "stop"),
    ],
)
def test_finish_reasons_map(reason, mapped):
    out, _ = GEMINI.translate_response(Operation.CHAT, answer([{"text": "x"}], finish=reason), ctx())
    assert out["choices"][0]["finish_reason"] == mapped


def test_a_safety_stop_without_content_and_a_blocked_prompt_are_content_filter():
    out, _ = GEMINI.translate_response(Operation.CHAT, {"candidates": [{"finishReason": "SAFETY", "index": 0}]}, ctx())
    assert out["choices"][0]["message"]["content"] == "" and out["choices"][0]["finish_reason"] == "content_filter"
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}}
    out, usage = GEMINI.translate_response(Operation.CHAT, blocked, ctx())
    assert out["choices"][0]["finish_reason"] == "content_filter" and usage is not None and usage.prompt_tokens == 4


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"candidates": []},
        {"candidates": "x"},
        {"candidates": ["x"]},
        {"candidates": [{"index": 0}]},
        {"candidates": [{"content": "x", "finishReason": "STOP"}]},
        {"candidates": [{"content": {"parts": {}}, "finishReason": "STOP"}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}, "finishReason": "STOP"}]},
        {"choices": [{"message": {"content": "an OpenAI answer is not Gemini's"}}]},
    ],
)
def test_malformed_answers_are_bad_answers(payload):
    with pytest.raises(BadAnswer):
        GEMINI.translate_response(Operation.CHAT, payload, ctx())


def test_nonsense_usage_is_rejected():
    c = ctx()
    out, usage = GEMINI.translate_response(Operation.CHAT, answer([{"text": "x"}], usage={"promptTokenCount": -1}), c)
    assert usage is None and c.usage_rejected and "usage" not in out


def test_errors_keep_googles_status_name():
    body = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}
    assert GEMINI.error_message(429, body) == "Resource has been exhausted (e.g. check quota). (RESOURCE_EXHAUSTED)"
    assert GEMINI.error_message(503, "no") == "HTTP 503"


# -- the stream -------------------------------------------------------------


def event(parts, finish=None, usage=None):
    candidate = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out = {"candidates": [candidate], "responseId": "r9"}
    if usage:
        out["usageMetadata"] = usage
    return orjson.dumps(out)


def test_stream_events_become_chat_chunks_and_usage_comes_last_when_asked():
    for include in (True, False):
        translator = GEMINI.stream_translator(Operation.CHAT, ctx(include))
        first = orjson.loads(translator.translate(event([{"text": "Hel"}], usage={"promptTokenCount": 21, "totalTokenCount": 21})))
        second = orjson.loads(translator.translate(event([{"text": "lo"}], "STOP", DEFAULT_USAGE)))
        assert first["provider"] == "g" and first["object"] == "chat.completion.chunk" and first["id"] == "chatcmpl-r9"
        assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]
        assert second["choices"] == [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]
        assert "usage" not in first and "usage" not in second
        assert translator.usage is not None and (translator.usage.completion_tokens, translator.usage.reasoning_tokens) == (14, 8)
        tail = [orjson.loads(chunk) for chunk in translator.finish()]
        if include:
            assert tail == [{**{k: first[k] for k in ("provider", "id", "object", "created", "model")}, "choices": [], "usage": translator.usage.to_openai()}]
        else:
            assert tail == []


def test_a_streamed_function_call_is_one_tool_call_delta():
    translator = GEMINI.stream_translator(Operation.CHAT, ctx())
    chunk = orjson.loads(translator.translate(event([{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}], "STOP")))
    delta = chunk["choices"][0]["delta"]
    assert chunk["choices"][0]["finish_reason"] == "tool_calls" and delta["role"] == "assistant" and "content" not in delta
    call = delta["tool_calls"][0]
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}


def test_stream_errors_and_garbage():
    translator = GEMINI.stream_translator(Operation.CHAT, ctx())
    error = orjson.loads(translator.translate(b'{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}'))
    assert error == {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    assert translator.translate(b'{"usageMetadata": {"promptTokenCount": 3}}') is None  # a usage-only event
    for bad in (b"<html>", b"[]", b'{"candidates": [{"index": 0}]}'):
        with pytest.raises(BadAnswer):
            translator.translate(bad)


# -- end to end: the openai SDK, the gateway, the fake ----------------------

PRICE = {"input": 1, "output": 2, "cached_input": 0.5, "reasoning": 4}
# The fake's usage: prompt 21 (8 cached), candidates 6 + thoughts 8 = 14 completion (8 reasoning).
# (21 - 8) * 1 + 8 * 0.5 + (14 - 8) * 2 + 8 * 4 = 61 micro-dollars a call.
COST = 61


async def gateway(make_upstream, start_gateway, tmp_path, *, spare: bool = False):
    up = await make_upstream("gemini")
    providers = {"g1": provider_entry(up)}
    targets = [{"provider": "g1", "model": "gemini-2.5-flash", "price": PRICE}]
    other = None
    if spare:
        other = await make_upstream("gemini")
        providers["g2"] = provider_entry(other)
        targets.append({"provider": "g2", "model": "gemini-2.5-pro", "price": PRICE})
    config = {
        "providers": providers,
        "models": {"gem": {"targets": targets}},
        "ledger": {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "usage.db")}], "journal_dir": str(tmp_path / "journal")},
    }
    return up, other, await start_gateway(config)


def client(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


async def priced(gw, requests: int) -> dict:
    ledger = gw.gateway.ledger
    await wait_for(lambda: ledger.accepted >= requests)
    await ledger.flush()
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/v1/usage?from=1d&group_by=alias", headers=ADMIN_HEADERS) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_sdk_chat_and_stream_with_usage_priced_exactly(make_upstream, start_gateway, tmp_path):
    up, _, gw = await gateway(make_upstream, start_gateway, tmp_path)
    async with client(gw) as c:
        reply = await c.chat.completions.create(
            model="gem", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], max_tokens=20
        )
        stream = await c.chat.completions.create(model="gem", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True})
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
    assert reply.choices[0].message.content == "Hello from gemini" and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (21, 14, 35)
    assert reply.usage.prompt_tokens_details.cached_tokens == 8 and reply.usage.completion_tokens_details.reasoning_tokens == 8
    assert "".join(pieces) == "Hello from gemini"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (21, 14)
    first, second = up.received
    assert first.path == "/v1beta/models/gemini-2.5-flash:generateContent" and first.headers["x-goog-api-key"] == up.api_key
    assert "Authorization" not in first.headers
    assert first.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]} and first.body["generationConfig"] == {"maxOutputTokens": 20}
    assert second.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    usage_report = await priced(gw, 2)
    assert usage_report["total"]["requests"] == 2 and usage_report["total"]["cost_micro_usd"] == 2 * COST


async def test_sdk_tool_call_round_trip(make_upstream, start_gateway, tmp_path):
    up, _, gw = await gateway(make_upstream, start_gateway, tmp_path)
    up.then(Behaviour(call_args={"city": "Paris"}))
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    async with client(gw) as c:
        first = await c.chat.completions.create(model="gem", messages=messages, tools=[WEATHER])
        call = first.choices[0].message.tool_calls[0]
        assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
        second = await c.chat.completions.create(model="gem", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == 'The tool get_weather returned {"temp": 21}'
    sent = up.received[1].body["contents"]
    assert [c["role"] for c in sent] == ["user", "model", "user"]
    assert sent[1]["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]
    assert sent[2]["parts"] == [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]


async def test_a_429_resource_exhausted_fails_over_to_the_next_target(make_upstream, start_gateway, tmp_path):
    up, spare, gw = await gateway(make_upstream, start_gateway, tmp_path, spare=True)
    up.then(Behaviour(status=429))
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(model="gem", messages=[{"role": "user", "content": "hi"}])
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from gemini" and reply.model == "gemini-2.5-pro"
    assert raw.headers["x-router-trace"] == "g1/gemini-2.5-flash=status 429, g2/gemini-2.5-pro=ok"
    assert len(up.received) == 1 and len(spare.received) == 1
    report = await priced(gw, 1)
    assert report["total"]["cost_micro_usd"] == COST  # the refused call consumed nothing


async def test_a_503_unavailable_before_a_stream_fails_over_too(make_upstream, start_gateway, tmp_path):
    up, spare, gw = await gateway(make_upstream, start_gateway, tmp_path, spare=True)
    up.then(Behaviour(status=503))
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(model="gem", messages=[{"role": "user", "content": "hi"}], stream=True)
        chunks = [chunk async for chunk in raw.parse()]
    assert raw.headers["x-router-trace"] == "g1/gemini-2.5-flash=status 503, g2/gemini-2.5-pro=ok"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Hello from gemini"
