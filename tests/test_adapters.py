"""Adapters are pure translators: JSON in, JSON out, no I/O."""

from __future__ import annotations

import json

import orjson
import pytest

from providers import ADAPTERS
from providers.base import ResponseContext, usage_from_openai
from router.operations import Operation
from router.sse import chunks_from_response

CTX = ResponseContext(provider="p", model="up-model", request_id="rid", created=1700000000, include_usage=False)
CHAT = {"model": "alias", "models": ["b"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True, "metadata": {"team": "a"}}
TEXT = {"model": "alias", "prompt": ["a", "b"], "max_tokens": 5}


def test_every_adapter_has_a_transform_for_what_it_claims():
    for kind, adapter in ADAPTERS.items():
        caps = adapter.capabilities
        assert caps.operations, kind
        assert caps.streams <= caps.operations, kind
        for op in caps.operations:
            body = CHAT if op is Operation.CHAT else TEXT
            call = adapter.build_call(op, body, "up-model", op in caps.streams)
            assert orjson.loads(call.body)["model"] == "up-model", kind
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
    assert translator.translate(plain) is plain  # relayed byte for byte
    final = b'{"id":"1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
    out = translator.translate(final)
    assert translator.usage is not None and translator.usage.total_tokens == 5
    if include_usage:
        assert out is not None and orjson.loads(out)["usage"]["total_tokens"] == 5
    else:
        assert out is None


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
