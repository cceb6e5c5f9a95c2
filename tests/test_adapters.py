"""Adapters are pure translators: JSON in, JSON out, no I/O."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import aiohttp
import orjson
import pytest

from providers import ADAPTERS
from providers.base import MAX_TOKENS, BadAnswer, ResponseContext, usage_from_openai
from router.operations import Operation
from router.sse import chunks_from_response
from tests.fakes.upstream import Behaviour

CTX = ResponseContext(provider="p", model="up-model", request_id="rid", created=1700000000, include_usage=False)
CHAT = {"model": "alias", "models": ["b"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True, "metadata": {"team": "a"}}
TEXT = {"model": "alias", "prompt": ["a", "b"], "max_tokens": 5}
EMBED = {"model": "alias", "input": ["a", "b"]}
BODIES = {Operation.CHAT: CHAT, Operation.COMPLETION: TEXT, Operation.EMBEDDING: EMBED}


def test_every_adapter_has_a_transform_for_what_it_claims():
    for kind, adapter in ADAPTERS.items():
        caps = adapter.capabilities
        assert caps.operations, kind
        assert caps.streams <= caps.operations, kind
        for op in caps.operations:
            call = adapter.build_call(op, BODIES[op], "up-model", op in caps.streams)
            # The target's model goes in the body, or in the path for APIs that address models by URL (Gemini).
            assert orjson.loads(call.body).get("model") == "up-model" or "/up-model:" in call.path, kind
            assert call.path.startswith("/"), kind
        for op in caps.streams:
            assert adapter.stream_translator(op, CTX) is not None, kind


def test_openai_build_replaces_model_drops_gateway_fields_and_never_mutates_the_body():
    before = json.dumps(CHAT, sort_keys=True)
    call = ADAPTERS["openai"].build_call(Operation.CHAT, CHAT, "gpt-x", stream=True)
    sent = orjson.loads(call.body)
    assert sent["model"] == "gpt-x" and "models" not in sent
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["metadata"] == {"team": "a"}
    assert json.dumps(CHAT, sort_keys=True) == before


def test_forefront_request_and_response_translation():
    adapter = ADAPTERS["forefront"]
    call = adapter.build_call(
        Operation.COMPLETION, {"prompt": ["line one", "line two"], "max_tokens": 9, "stop": "\n", "temperature": 0.1}, "ff-model", stream=False
    )
    assert call.path == "/chat/completions"
    assert orjson.loads(call.body) == {"model": "ff-model", "prompt": "line one\nline two", "max_tokens": 9, "stop": ["\n"], "temperature": 0.1}
    doc_answer = {
        "choices": [{"message": {"role": "assistant", "content": "Of course! I'm here to help."}}],
        "usage": {"input_tokens": 28, "output_tokens": 10, "total_tokens": 38},
        "message": {"content": "Of course! I'm here to help."},
    }
    out, usage = adapter.translate_response(Operation.CHAT, doc_answer, CTX)
    assert out["object"] == "chat.completion" and out["model"] == "up-model" and out["provider"] == "p"
    assert out["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Of course! I'm here to help."},
        "finish_reason": "stop",
        "logprobs": None,
    }
    assert out["usage"] == {"prompt_tokens": 28, "completion_tokens": 10, "total_tokens": 38}
    assert usage is not None and usage.prompt_tokens == 28
    text, _ = adapter.translate_response(Operation.COMPLETION, doc_answer, CTX)
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "Of course! I'm here to help."


def test_forefront_cannot_take_tools():
    caps = ADAPTERS["forefront"].capabilities
    assert caps.unsupported_param({"messages": [], "tools": []}) == "tools"
    assert caps.unsupported_param({"messages": [], "user": "u", "metadata": {}}) is None


def test_usage_normalisation_covers_cache_and_reasoning_fields():
    usage = usage_from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "total_tokens": 150,
            "completion_tokens_details": {"reasoning_tokens": 20},
            "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 30,
        }
    )
    assert usage is not None
    assert (usage.cached_tokens, usage.cache_write_tokens, usage.reasoning_tokens) == (30, 10, 20)
    assert usage.to_openai() == {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 10},
        "completion_tokens_details": {"reasoning_tokens": 20},
    }
    interactive = usage_from_openai({"prompt_tokens": 9.0, "completion_tokens": 7.0, "total_tokens": 16.0})
    assert interactive is not None and interactive.prompt_tokens == 9 and isinstance(interactive.prompt_tokens, int)


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_stream_translator_handles_usage(include_usage):
    ctx = ResponseContext("p", "m", "r", 0, include_usage)
    translator = ADAPTERS["openai"].stream_translator(Operation.CHAT, ctx)
    plain = b'{"id":"1","choices":[{"index":0,"delta":{"content":"hi"}}]}'
    # relayed as sent, with the provider entry spliced in front (no re-encoding)
    assert translator.translate(plain) == b'{"provider":"p",' + plain[1:]
    final = b'{"id":"1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
    out = translator.translate(final)
    assert translator.usage is not None and translator.usage.total_tokens == 5
    if include_usage:
        assert out is not None and orjson.loads(out)["usage"]["total_tokens"] == 5 and orjson.loads(out)["provider"] == "p"
    else:
        assert out is None


@pytest.mark.parametrize("kind", ["openai", "interactive", "mock"])
def test_every_streamed_chunk_names_the_provider_entry_and_keeps_the_upstream_vendor(kind):
    op = Operation.COMPLETION if kind == "interactive" else Operation.CHAT
    translator = ADAPTERS[kind].stream_translator(op, ResponseContext("ia", "m", "r", 0, True))
    plain = orjson.loads(translator.translate(b' {"id":"1","choices":[{"index":0,"text":"hi"}]}'))
    vendor = orjson.loads(translator.translate(b'{"id":"1","provider":"acme-cloud","choices":[{"index":0,"text":"x"}]}'))
    empty = orjson.loads(translator.translate(b"{}"))
    assert plain["provider"] == vendor["provider"] == empty["provider"] == "ia"
    assert vendor["upstream_provider"] == "acme-cloud" and "upstream_provider" not in plain


def test_synthesised_stream_from_a_whole_answer():
    whole = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "provider": "p",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hey"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    chunks = [orjson.loads(c) for c in chunks_from_response(whole, include_usage=True)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "hey"}
    assert chunks[1]["choices"][0]["finish_reason"] == "length"
    assert chunks[2]["usage"]["total_tokens"] == 2 and chunks[2]["choices"] == []
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len(chunks_from_response(whole, include_usage=False)) == 2


# -- distrust: answers and usage that are not what the operation promises --------

OPS_OF = {"openai": (Operation.CHAT, Operation.COMPLETION), "interactive": (Operation.COMPLETION,), "forefront": (Operation.CHAT, Operation.COMPLETION)}
WRONG_SHAPES = {
    "choices is a string": {"choices": "nope"},
    "message is null": {"choices": [{"index": 0, "message": None, "text": None}]},
    "missing choices": {"id": "x", "object": "chat.completion"},
    "a choice is not an object": {"choices": ["hello"]},
}


def fresh_ctx(include_usage: bool = False) -> ResponseContext:
    return ResponseContext(provider="p", model="up-model", request_id="rid", created=1700000000, include_usage=include_usage)


def good_answer(kind: str, op: Operation, usage: Any = None) -> dict[str, Any]:
    if kind == "forefront":
        answer: dict[str, Any] = {"choices": [{"message": {"role": "assistant", "content": "hey"}}], "message": {"content": "hey"}}
    elif op is Operation.CHAT:
        answer = {
            "id": "c",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hey"}, "finish_reason": "stop"}],
        }
    else:
        answer = {"id": "t", "object": "text_completion", "choices": [{"index": 0, "text": "hey", "finish_reason": "stop"}]}
    if usage is not None:
        answer["usage"] = usage
    return answer


@pytest.mark.parametrize("shape", WRONG_SHAPES, ids=list(WRONG_SHAPES))
@pytest.mark.parametrize("kind", OPS_OF)
def test_a_wrong_shape_200_is_a_bad_answer_for_every_adapter(kind, shape):
    for op in OPS_OF[kind]:
        with pytest.raises(BadAnswer) as caught:
            ADAPTERS[kind].translate_response(op, copy.deepcopy(WRONG_SHAPES[shape]), fresh_ctx())
        assert "nope" not in str(caught.value) and "hello" not in str(caught.value)  # says what is wrong, never quotes the body


def test_chat_content_may_be_null_only_beside_tool_calls_function_call_or_refusal():
    adapter = ADAPTERS["openai"]
    tool = {"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    refusal = {"role": "assistant", "content": None, "refusal": "no"}
    for message in (tool, refusal, {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}):
        out, _ = adapter.translate_response(Operation.CHAT, {"choices": [{"index": 0, "message": message}]}, fresh_ctx())
        assert out["provider"] == "p"
    for message in ({"role": "assistant", "content": None}, {"role": "assistant"}, {"role": "assistant", "content": 5}):
        with pytest.raises(BadAnswer, match="content"):
            adapter.translate_response(Operation.CHAT, {"choices": [{"index": 0, "message": message}]}, fresh_ctx())
    with pytest.raises(BadAnswer, match="choices is empty"):
        adapter.translate_response(Operation.CHAT, {"choices": []}, fresh_ctx())
    with pytest.raises(BadAnswer, match="text"):
        adapter.translate_response(Operation.COMPLETION, {"choices": [{"index": 0, "text": None}]}, fresh_ctx())
    with pytest.raises(BadAnswer, match="text"):
        adapter.translate_response(Operation.COMPLETION, good_answer("openai", Operation.CHAT), fresh_ctx())


@pytest.mark.parametrize("event", [b"not json at all", b'{"choices": [', b'[{"choices": []}]', b'"a string"', b"42", b"null"])
@pytest.mark.parametrize("kind", ["openai", "interactive"])
def test_a_stream_event_that_is_not_a_json_object_is_a_bad_answer(kind, event):
    adapter = ADAPTERS[kind]
    for op in adapter.capabilities.streams:
        translator = adapter.stream_translator(op, fresh_ctx(include_usage=True))
        with pytest.raises(BadAnswer, match="stream event"):
            translator.translate(event)
        with pytest.raises(BadAnswer):
            translator.translate(event.replace(b"choices", b"usage"))


BAD_COUNTS = [1e308, 10**20, -5, "12", True, math.nan, math.inf, 12.5, [12], {"n": 1}]


def _bad_usage(value: Any, kind: str) -> dict[str, Any]:
    name = "input_tokens" if kind == "forefront" else "prompt_tokens"
    return {name: value, "completion_tokens": 5, "total_tokens": 17}


@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
@pytest.mark.parametrize("kind", OPS_OF)
def test_a_nonsense_token_count_rejects_the_whole_usage_and_flags_the_context(kind, value):
    for op in OPS_OF[kind]:
        ctx = fresh_ctx()
        out, usage = ADAPTERS[kind].translate_response(op, good_answer(kind, op, _bad_usage(value, kind)), ctx)
        assert usage is None and ctx.usage_rejected
        assert "usage" not in out  # the client is not shown the nonsense either


@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
def test_nonsense_in_a_nested_count_rejects_the_usage_too(value):
    for raw in (
        {"prompt_tokens": 1, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": value}},
        {"prompt_tokens": 1, "completion_tokens": 1, "completion_tokens_details": {"reasoning_tokens": value}},
        {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": value},
        {"prompt_tokens": 1, "completion_tokens": 1, "cache_creation_input_tokens": value},
    ):
        ctx = fresh_ctx()
        assert usage_from_openai(raw, ctx) is None and ctx.usage_rejected, raw


FINITE_BAD_COUNTS = [v for v in BAD_COUNTS if not (isinstance(v, float) and not math.isfinite(v))]


@pytest.mark.parametrize("value", FINITE_BAD_COUNTS, ids=repr)
@pytest.mark.parametrize("kind", ["openai", "interactive"])
def test_a_nonsense_count_in_a_stream_rejects_its_usage(kind, value):
    for include_usage in (True, False):
        ctx = fresh_ctx(include_usage)
        translator = ADAPTERS[kind].stream_translator(Operation.COMPLETION, ctx)
        final = json.dumps({"id": "1", "choices": [], "usage": _bad_usage(value, kind)}).encode()  # orjson cannot write 10**20
        assert translator.translate(final) is None  # a usage-only chunk with its usage removed is dropped
        assert translator.usage is None and ctx.usage_rejected
        good = orjson.dumps({"id": "1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        translator.translate(good)
        assert translator.usage is None, "a later report of the same stream is not trusted either"
        with_text = json.dumps({"id": "1", "choices": [{"index": 0, "text": "x"}], "usage": _bad_usage(value, kind)}).encode()
        relayed = orjson.loads(translator.translate(with_text) or b"{}")
        assert relayed == {"id": "1", "choices": [{"index": 0, "text": "x"}], "provider": ctx.provider}


def test_nan_and_infinity_in_a_stream_event_are_not_json():
    translator = ADAPTERS["openai"].stream_translator(Operation.CHAT, fresh_ctx())
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(BadAnswer, match="not JSON"):
            translator.translate(b'{"choices":[],"usage":{"prompt_tokens":' + literal + b"}}")


@pytest.mark.parametrize("kind", OPS_OF)
def test_good_counts_are_kept_and_integral_floats_become_ints(kind):
    raw = {"prompt_tokens": 12.0, "completion_tokens": 0, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": None}}
    if kind == "forefront":
        raw = {"input_tokens": 12.0, "output_tokens": 0, "total_tokens": 12}
    for op in OPS_OF[kind]:
        ctx = fresh_ctx()
        out, usage = ADAPTERS[kind].translate_response(op, good_answer(kind, op, dict(raw)), ctx)
        assert usage is not None and not ctx.usage_rejected
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total) == (12, 0, 12) and isinstance(usage.prompt_tokens, int)
        assert out["usage"]["prompt_tokens"] == 12
    edge = fresh_ctx()
    assert usage_from_openai({"prompt_tokens": MAX_TOKENS, "completion_tokens": 0}, edge) is not None and not edge.usage_rejected
    assert usage_from_openai({"prompt_tokens": MAX_TOKENS + 1}, edge) is None and edge.usage_rejected


@pytest.mark.parametrize("kind", ["openai", "forii", "forefront", "interactive"])
async def test_the_fakes_default_answers_pass_validation(kind, make_upstream):
    # The fakes answer in the shapes the provider docs show: validation must accept every one.
    up = await make_upstream(kind)
    adapter = ADAPTERS["openai" if kind == "forii" else kind]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {up.api_key}"}) as s:
        served = {Operation.CHAT} if kind == "forii" else adapter.capabilities.operations  # Forii has no /completions
        for op in served:
            call = adapter.build_call(op, BODIES[op], "up-model", stream=False)
            async with s.post(up.base_url + call.path, data=call.body, headers={"Content-Type": "application/json"}) as r:
                assert r.status == 200, await r.text()
                payload = await r.json()
            ctx = fresh_ctx()
            _, usage = adapter.translate_response(op, payload, ctx)
            assert usage is not None and not ctx.usage_rejected
        for op in adapter.capabilities.streams & served:
            translator = adapter.stream_translator(op, fresh_ctx(include_usage=True))
            call = adapter.build_call(op, CHAT if op is Operation.CHAT else TEXT, "up-model", stream=True)
            async with s.post(up.base_url + call.path, data=call.body, headers={"Content-Type": "application/json"}) as r:
                events = [line[6:] for line in (await r.read()).split(b"\n") if line.startswith(b"data: ") and line != b"data: [DONE]"]
            for event in events:
                translator.translate(event)
            assert translator.usage is not None


async def test_the_fakes_misbehave_on_purpose_and_the_adapters_notice(make_upstream):
    up = await make_upstream("openai")
    good = b'{"id":"1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}'
    up.then(Behaviour(raw=b'{"choices": "nope"}'), Behaviour(events=[good, b"<html>oops</html>"]))
    adapter = ADAPTERS["openai"]
    headers = {"Authorization": f"Bearer {up.api_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as s:
        call = adapter.build_call(Operation.CHAT, CHAT, "m", stream=False)
        async with s.post(up.base_url + call.path, data=call.body) as r:
            assert r.status == 200
            payload = orjson.loads(await r.read())
        with pytest.raises(BadAnswer, match="choices"):
            adapter.translate_response(Operation.CHAT, payload, fresh_ctx())
        call = adapter.build_call(Operation.CHAT, CHAT, "m", stream=True)
        async with s.post(up.base_url + call.path, data=call.body) as r:
            events = [line[6:] for line in (await r.read()).split(b"\n") if line.startswith(b"data: ")]
    assert events == [good, b"<html>oops</html>", b"[DONE]"]
    translator = adapter.stream_translator(Operation.CHAT, fresh_ctx())
    assert orjson.loads(translator.translate(events[0]) or b"") == {**orjson.loads(good), "provider": fresh_ctx().provider}
    with pytest.raises(BadAnswer, match="not JSON"):
        translator.translate(events[1])
