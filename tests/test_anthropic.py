"""Anthropic: the ``anthropic`` provider kind (JSON in, JSON out, then end to end with the openai SDK) and the Messages front door's translators."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp
import aiohttp.web
import anthropic
import openai
import orjson
import pytest

from providers import ADAPTERS
from providers.anthropic import DEFAULT_MAX_TOKENS, STOP_REASONS, AnthropicStream, NativeStreamUsage, frame
from providers.base import BadAnswer, ResponseContext
from providers.operations import Operation
from router.errors import RETRYABLE_STATUSES
from router.frontdoor.anthropic import (
    FINISH_REASONS,
    BadMessagesRequest,
    MessagesStream,
    Untranslatable,
    chat_to_message,
    count_tokens,
    error_body,
    error_event,
    messages_to_chat,
)
from tests.conftest import ADMIN_HEADERS, provider_entry, wait_for
from tests.fakes.upstream import ANTHROPIC_TOOL_INPUT, Behaviour

ADAPTER = ADAPTERS["anthropic"]
CTX = ResponseContext(provider="claude", model="claude-x", request_id="rid", created=1700000000, include_usage=True)
WEATHER = {
    "type": "function",
    "function": {"name": "weather", "description": "Weather for a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def sent(body: dict[str, Any], stream: bool = False) -> dict[str, Any]:
    call = ADAPTER.build_call(Operation.CHAT, body, "claude-up", stream)
    assert call.path == "/v1/messages"
    return orjson.loads(call.body)


def events(*items: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(item) for item in items]


# -- requests -------------------------------------------------------------------


def test_auth_headers_and_path_are_anthropics():
    assert ADAPTER.auth_headers("sk-ant") == {"x-api-key": "sk-ant", "anthropic-version": "2023-06-01"}
    assert ADAPTER.default_base_url == "https://api.anthropic.com"
    assert ADAPTER.capabilities.prefill


def test_chat_becomes_messages_with_system_extracted_roles_merged_and_max_tokens_defaulted():
    body = {
        "model": "alias",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "and?"},
        ],
        "stop": "END",
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-7",
        "metadata": {"team": "a"},
    }
    before = json.dumps(body, sort_keys=True)
    out = sent(body, stream=True)
    assert out["system"] == "Be brief.\n\nUse French."
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "and?"},
    ]
    assert out["max_tokens"] == DEFAULT_MAX_TOKENS
    assert (out["stop_sequences"], out["temperature"], out["top_p"], out["metadata"], out["stream"]) == (["END"], 0.2, 0.9, {"user_id": "u-7"}, True)
    assert json.dumps(body, sort_keys=True) == before  # the client's body is never changed
    assert sent({**body, "max_completion_tokens": 77})["max_tokens"] == 77
    assert sent({**body, "max_tokens": 12})["max_tokens"] == 12


def test_a_cached_system_block_keeps_its_cache_control():
    cached = {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}
    out = sent({"messages": [{"role": "system", "content": [cached]}, {"role": "user", "content": "q"}]})
    assert out["system"] == [cached]


def test_tools_tool_choice_tool_calls_and_tool_results_map_to_blocks():
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": False,
    }
    out = sent(body)
    assert out["tools"] == [{"name": "weather", "description": "Weather for a city", "input_schema": WEATHER["function"]["parameters"]}]
    assert out["tool_choice"] == {"type": "tool", "name": "weather", "disable_parallel_tool_use": True}
    assert out["messages"][1] == {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}]}
    assert out["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "21C"}, {"type": "text", "text": "Thanks"}],
    }
    choices = {choice: sent({**body, "tool_choice": choice, "parallel_tool_calls": None})["tool_choice"] for choice in ("auto", "none", "required")}
    assert choices == {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}
    assert "tool_choice" not in sent({"messages": body["messages"][:1], "tool_choice": "auto"})  # no tools: nothing to choose


def test_images_data_urls_become_base64_and_http_urls_url_sources():
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AAA="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    out = sent({"messages": [{"role": "user", "content": parts}]})
    assert out["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AAA="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]


def test_a_trailing_assistant_prefill_loses_its_trailing_whitespace_and_broken_arguments_are_kept():
    out = sent({"messages": [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "One, two, "}]})
    assert out["messages"][-1] == {"role": "assistant", "content": "One, two,"}
    broken = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
    out = sent(
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [broken]}, {"role": "tool", "tool_call_id": "c", "content": "?"}]}
    )
    assert out["messages"][1]["content"][0]["input"] == {"_raw_arguments": '{"a"'}


def test_params_anthropic_cannot_take_make_the_target_ineligible():
    caps = ADAPTER.capabilities
    assert caps.unsupported_param({"messages": [], "response_format": {"type": "json_object"}}) == "response_format"
    assert caps.unsupported_param({"messages": [], "tools": [], "tool_choice": "auto", "user": "u", "metadata": {"team": "a"}, "top_k": 3}) is None


# -- answers --------------------------------------------------------------------

MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000},
}


def test_a_message_becomes_a_chat_completion_with_tool_calls_reasoning_and_cache_usage():
    out, usage = ADAPTER.translate_response(Operation.CHAT, MESSAGE, CTX)
    assert (out["id"], out["object"], out["model"], out["provider"]) == ("msg_01", "chat.completion", "claude-sonnet", "claude")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Let me check.",
        "reasoning_content": "The user wants weather.",
        "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}],
    }
    assert usage is not None and (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.completion_tokens) == (1110, 1000, 100, 7)
    assert out["usage"] == {
        "prompt_tokens": 1110,
        "completion_tokens": 7,
        "total_tokens": 1117,
        "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 100},
    }


@pytest.mark.parametrize("stop, finish", sorted(STOP_REASONS.items()))
def test_stop_reasons_map_to_finish_reasons(stop, finish):
    out, _ = ADAPTER.translate_response(Operation.CHAT, {**MESSAGE, "content": [{"type": "text", "text": "x"}], "stop_reason": stop}, CTX)
    assert out["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(
    "payload",
    [
        {"choices": [{"message": {"content": "openai shape"}}]},
        {"type": "message", "content": "not a list"},
        {"type": "message", "content": [{"type": "tool_use", "input": {}}]},
    ],
)
def test_an_answer_that_is_no_message_is_a_bad_answer(payload):
    with pytest.raises(BadAnswer):
        ADAPTER.translate_response(Operation.CHAT, payload, CTX)


def test_nonsense_usage_is_rejected_and_flagged():
    ctx = ResponseContext("claude", "m", "r", 0)
    out, usage = ADAPTER.translate_response(Operation.CHAT, {**MESSAGE, "usage": {"input_tokens": -1, "output_tokens": 2}}, ctx)
    assert usage is None and ctx.usage_rejected and "usage" not in out


def test_error_message_reads_anthropics_error_shape():
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert ADAPTER.error_message(529, body) == "Overloaded"
    assert ADAPTER.error_message(502, None) == "HTTP 502"
    assert 529 in RETRYABLE_STATUSES  # overloaded: the gateway fails over


# -- streams --------------------------------------------------------------------

START = {
    "type": "message_start",
    "message": {
        "id": "msg_s",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet",
        "content": [],
        "usage": {"input_tokens": 5, "cache_read_input_tokens": 20, "output_tokens": 1},
    },
}
STREAM = events(
    START,
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "abc"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 15}},
    {"type": "message_stop"},
)


def translate_all(translator: Any, stream: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(out) for out in map(translator.translate, stream) if out is not None]


def test_stream_events_become_openai_chunks_labelled_with_the_provider():
    translator = ADAPTER.stream_translator(Operation.CHAT, CTX)
    assert isinstance(translator, AnthropicStream)
    chunks = translate_all(translator, STREAM)
    assert all(c["provider"] == "claude" and c["id"] == "msg_s" and c["model"] == "claude-sonnet" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "reasoning_content": "Hmm."}  # the role rides on the first content
    assert deltas[1] == {"content": "Hello"}
    assert deltas[2] == {"tool_calls": [{"index": 0, "id": "toolu_9", "type": "function", "function": {"name": "weather", "arguments": ""}}]}
    assert [d["tool_calls"][0]["function"]["arguments"] for d in deltas[3:5]] == ['{"city":', '"Paris"}']
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 25,
        "completion_tokens": 15,
        "total_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 20},
    }
    assert translator.usage is not None and translator.usage.completion_tokens == 15


def test_stream_usage_reaches_the_client_only_when_asked_but_is_always_kept():
    translator = ADAPTER.stream_translator(Operation.CHAT, ResponseContext("claude", "m", "r", 0, include_usage=False))
    chunks = translate_all(translator, STREAM)
    assert not any("usage" in c for c in chunks)
    assert translator.usage is not None and translator.usage.prompt_tokens == 25


def test_an_error_event_becomes_an_openai_error_chunk_and_bad_events_are_bad_answers():
    translator = ADAPTER.stream_translator(Operation.CHAT, CTX)
    assert translator.translate(orjson.dumps(START)) is None  # nothing relayed yet: an error now can still fail over
    error = orjson.loads(translator.translate(b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'))
    assert error == {"error": {"message": "Overloaded", "type": "overloaded_error", "code": None}, "provider": "claude"}
    no_index = b'{"type":"content_block_start","content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}'
    for bad in (b"not json", b"[1]", b'{"no":"type"}', b'{"type":"message_start"}', no_index):
        with pytest.raises(BadAnswer):
            ADAPTER.stream_translator(Operation.CHAT, CTX).translate(bad)
    assert ADAPTER.stream_translator(Operation.CHAT, CTX).translate(b'{"type":"a_future_event"}') is None


# -- native pass-through --------------------------------------------------------


def test_native_call_replaces_the_model_and_keeps_everything_anthropic_takes():
    body = {"model": "alias", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}], "metadata": {"user_id": "u", "team": "t"}, "models": ["x"]}
    call = ADAPTER.build_native_call(body, "claude-up", stream=True)
    assert (call.path, call.stream) == ("/v1/messages", True)
    assert orjson.loads(call.body) == {"model": "claude-up", "max_tokens": 9, "messages": body["messages"], "metadata": {"user_id": "u"}, "stream": True}
    assert "metadata" not in orjson.loads(ADAPTER.build_native_call({**body, "metadata": {"team": "t"}}, "m", False).body)
    usage = ADAPTER.native_usage(MESSAGE, CTX)
    assert usage is not None and (usage.prompt_tokens, usage.cached_tokens) == (1110, 1000)


def test_native_stream_passes_events_unchanged_and_collects_usage():
    watcher = ADAPTER.native_stream(CTX)
    assert isinstance(watcher, NativeStreamUsage)
    relayed = [frame(watcher.event_type, out) for out in map(watcher.translate, STREAM)]
    assert relayed[0] == b"event: message_start\ndata: " + STREAM[0] + b"\n\n"
    assert len(relayed) == len(STREAM) and watcher.text_parts == ["Hello"]
    assert watcher.usage is not None and (watcher.usage.prompt_tokens, watcher.usage.completion_tokens, watcher.usage.cached_tokens) == (25, 15, 20)


# -- the front door's translators ------------------------------------------------

MESSAGES_REQUEST = {
    "model": "claude-alias",
    "max_tokens": 256,
    "system": [{"type": "text", "text": "You are terse."}],
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "call the tool", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21C"}]},
                {"type": "text", "text": "And tomorrow?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            ],
        },
    ],
    "stop_sequences": ["END"],
    "temperature": 0.5,
    "stream": True,
    "tools": [{"name": "weather", "description": "Weather for a city", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "metadata": {"user_id": "u-1"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
}


def test_a_messages_request_becomes_a_chat_request():
    chat = messages_to_chat(MESSAGES_REQUEST)
    assert chat["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
    ]
    assert chat["tools"] == [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "description": "Weather for a city"}}]
    assert (chat["tool_choice"], chat["parallel_tool_calls"], chat["stop"], chat["user"]) == ("required", False, ["END"], "u-1")
    assert (chat["max_tokens"], chat["temperature"], chat["stream"], chat["stream_options"]) == (256, 0.5, True, {"include_usage": True})
    assert "thinking" not in chat and "metadata" not in chat


def test_round_trip_chat_to_messages_to_chat_keeps_text_tools_and_tool_results():
    chat = {
        "model": "m",
        "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "-3C"},
            {"role": "assistant", "content": "It is cold."},
        ],
        "tools": [WEATHER],
        "tool_choice": "auto",
    }
    anthropic_body = sent(chat)
    back = messages_to_chat({**anthropic_body, "model": "m"})
    assert back["messages"] == chat["messages"]
    assert back["tools"] == [{"type": "function", "function": {**WEATHER["function"]}}]
    assert back["tool_choice"] == "auto" and back["max_tokens"] == 50


@pytest.mark.parametrize(
    "change, param",
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"model": ""}, "model"),
        ({"messages": {"role": "user"}}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]"),
        ({"system": 5}, "system"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_a_bad_messages_request_names_the_field(change, param):
    body = {k: v for k, v in {**MESSAGES_REQUEST, **change}.items() if v is not None}
    with pytest.raises(BadMessagesRequest) as caught:
        messages_to_chat(body)
    assert caught.value.param == param and str(caught.value).startswith(param + ":")
    assert isinstance(caught.value, ValueError)


def test_what_only_an_anthropic_target_can_take_is_untranslatable():
    document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}
    with pytest.raises(Untranslatable, match=r"messages\[0\]\.content\[0\]"):
        messages_to_chat({**MESSAGES_REQUEST, "messages": [{"role": "user", "content": [document]}]})
    with pytest.raises(Untranslatable, match="web_search"):
        messages_to_chat({**MESSAGES_REQUEST, "tools": [{"type": "web_search_20250305", "name": "web_search"}]})


def test_count_tokens_estimates_without_max_tokens():
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}], "system": "y" * 40}
    assert count_tokens(body) == {"input_tokens": 110}
    with pytest.raises(BadMessagesRequest):
        count_tokens({"model": "m"})


def test_a_chat_completion_becomes_a_message():
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "On it.",
                    "tool_calls": [{"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129, "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 15}},
    }
    assert chat_to_message(answer, "claude-alias") == {
        "id": "msg_chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "claude-alias",
        "content": [{"type": "text", "text": "On it."}, {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 9, "cache_creation_input_tokens": 15, "cache_read_input_tokens": 100},
    }
    for finish, stop in FINISH_REASONS.items():
        assert chat_to_message({"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}, "m")["stop_reason"] == stop


def parse_sse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in data.decode().split("\n\n"):
        if block:
            kind, payload = block.split("\n")
            assert kind.startswith("event: ") and payload.startswith("data: ")
            parsed = json.loads(payload[6:])
            assert parsed["type"] == kind[7:]
            out.append((kind[7:], parsed))
    return out


def openai_chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "choices": choices, **extra}


def test_openai_chunks_become_messages_events():
    stream = MessagesStream("claude-alias", input_tokens=12)
    out = b"".join(
        [
            stream.feed(openai_chunk({"role": "assistant", "content": ""})),
            stream.feed(openai_chunk({"content": "Hel"})),
            stream.feed(openai_chunk({"content": "lo"})),
            stream.feed(openai_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]})),
            stream.feed(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Rome"}'}}]})),
            stream.feed(openai_chunk({}, "tool_calls")),
            stream.feed(
                openai_chunk(None, usage={"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38, "prompt_tokens_details": {"cached_tokens": 10}})
            ),
            stream.finish(),
        ]
    )
    got = parse_sse(out)
    assert [kind for kind, _ in got] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = got[0][1]["message"]
    assert (start["id"], start["model"], start["usage"]) == ("msg_chatcmpl-9", "claude-alias", {"input_tokens": 12, "output_tokens": 0})
    assert [e["delta"]["text"] for k, e in got if k == "content_block_delta" and e["index"] == 0] == ["Hel", "lo"]
    assert got[5][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "weather", "input": {}}
    assert got[6][1] == {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city":"Rome"}'}}
    assert got[8][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert got[8][1]["usage"] == {"input_tokens": 20, "output_tokens": 8, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10}
    assert stream.finish() == b"" and stream.feed(openai_chunk({"content": "late"})) == b""


def test_an_error_chunk_ends_the_messages_stream_with_an_error_event():
    stream = MessagesStream("m")
    stream.feed(openai_chunk({"content": "Hi"}))
    got = parse_sse(stream.feed({"error": {"message": "the upstream stream broke", "type": "upstream_error"}}))
    assert got == [("error", {"type": "error", "error": {"type": "api_error", "message": "the upstream stream broke"}})]
    assert stream.finish() == b""
    assert parse_sse(error_event("overloaded_error", "Overloaded"))[0][1]["error"] == {"type": "overloaded_error", "message": "Overloaded"}


@pytest.mark.parametrize(
    "status, kind",
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (422, "invalid_request_error"),
        (599, "api_error"),
    ],
)
def test_error_bodies_use_anthropics_type_for_the_status(status, kind):
    assert error_body(status, "why") == {"type": "error", "error": {"type": kind, "message": "why"}}


# -- end to end: the openai SDK against an alias whose target is anthropic --------

PRICE = {"input": 3, "output": 15, "cached_input": "0.3", "cache_write": "3.75"}


async def claude_gateway(make_upstream, start_gateway, tmp_path=None, **alias: Any):
    up = await make_upstream("anthropic")
    config: dict[str, Any] = {
        "providers": {"claude": provider_entry(up)},
        "models": {"sonnet": {"targets": [{"provider": "claude", "model": "claude-sonnet-up", "price": PRICE}], **alias}},
    }
    if tmp_path is not None:
        config["ledger"] = {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j")}
    return up, await start_gateway(config)


def sdk(gw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


async def test_openai_sdk_chat_through_an_anthropic_target(make_upstream, start_gateway):
    up, gw = await claude_gateway(make_upstream, start_gateway)
    async with sdk(gw) as client:
        reply = await client.chat.completions.create(
            model="sonnet", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], max_tokens=64
        )
    assert reply.choices[0].message.content == "Hello from anthropic" and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (21, 6)
    got = up.received[0]
    assert got.path == "/v1/messages" and got.headers["x-api-key"] == up.api_key and got.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in got.headers
    assert got.body["system"] == "Be brief." and got.body["max_tokens"] == 64 and got.body["model"] == "claude-sonnet-up"


async def test_openai_sdk_stream_through_an_anthropic_target(make_upstream, start_gateway):
    _, gw = await claude_gateway(make_upstream, start_gateway)
    async with sdk(gw) as client:
        stream = await client.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from anthropic"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (21, 6, 27)
    assert all(getattr(c, "provider", None) == "claude" for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_sdk_tools_round_trip_through_an_anthropic_target(make_upstream, start_gateway, stream):
    up, gw = await claude_gateway(make_upstream, start_gateway)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    async with sdk(gw) as client:
        if stream:
            chunks = [c async for c in await client.chat.completions.create(model="sonnet", messages=ask, tools=[WEATHER], tool_choice="required", stream=True)]
            calls = [call for c in chunks if c.choices and c.choices[0].delta.tool_calls for call in c.choices[0].delta.tool_calls]
            call_id, name = calls[0].id, calls[0].function.name
            arguments = "".join(call.function.arguments or "" for call in calls)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        else:
            reply = await client.chat.completions.create(model="sonnet", messages=ask, tools=[WEATHER], tool_choice="required")
            call = reply.choices[0].message.tool_calls[0]
            call_id, name, arguments, finish = call.id, call.function.name, call.function.arguments, [reply.choices[0].finish_reason]
        assert (name, json.loads(arguments), finish) == ("weather", ANTHROPIC_TOOL_INPUT, ["tool_calls"])
        assistant = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        }
        follow = await client.chat.completions.create(
            model="sonnet", messages=[*ask, assistant, {"role": "tool", "tool_call_id": call_id, "content": "21C"}], tools=[WEATHER]
        )
    assert follow.choices[0].message.content == "The tool said 21C"
    assert up.received[0].body["tool_choice"] == {"type": "any"}
    assert up.received[1].body["messages"][-1]["content"] == [{"type": "tool_result", "tool_use_id": call_id, "content": "21C"}]


async def test_cache_tokens_are_reported_and_priced_exactly(make_upstream, start_gateway, tmp_path):
    up, gw = await claude_gateway(make_upstream, start_gateway, tmp_path)
    cache = {"input_tokens": 50, "output_tokens": 40, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 300}
    up.then(Behaviour(usage=cache), Behaviour(usage=cache))
    async with sdk(gw) as client:
        reply = await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "hi"}])
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="sonnet", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
            )
        ]
    for usage in (reply.usage, chunks[-1].usage):
        assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2350, 40, 2390)
        assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 2000
        assert (usage.prompt_tokens_details.model_dump().get("cache_write_tokens")) == 300
    # per million tokens: 50 fresh at $3, 2000 cached at $0.30, 300 written at $3.75, 40 out at $15 -> micro-dollars
    one = Decimal(50) * 3 + Decimal(2000) * Decimal("0.3") + Decimal(300) * Decimal("3.75") + Decimal(40) * 15
    assert one == Decimal("2475.0")

    async def totals() -> dict[str, Any] | None:
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/v1/usage?from=1d", headers=ADMIN_HEADERS) as r:
            total = (await r.json())["total"]
            return total if total["requests"] == 2 else None

    total = await wait_for(totals)
    assert total["cost_micro_usd"] == 2 * 2475
    assert (total["prompt_tokens"], total["cached_tokens"], total["cache_write_tokens"], total["completion_tokens"]) == (4700, 4000, 600, 80)


async def test_a_529_overloaded_anthropic_target_fails_over_to_an_openai_one(make_upstream, start_gateway):
    claude, spare = await make_upstream("anthropic"), await make_upstream("openai")
    claude.default = Behaviour(status=529)
    gw = await start_gateway(two_kinds(claude, spare))
    async with sdk(gw) as client:
        raw = await client.chat.completions.with_raw_response.create(model="sonnet", messages=[{"role": "user", "content": "hi"}])
        reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from openai"
    assert raw.headers["x-router-trace"] == "claude/claude-up=status 529, spare/gpt-up=ok"
    assert len(claude.received) == 1 and len(spare.received) == 1


def two_kinds(claude: Any, spare: Any) -> dict[str, Any]:
    return {
        "providers": {"claude": provider_entry(claude), "spare": provider_entry(spare)},
        "models": {"sonnet": {"targets": [{"provider": "claude", "model": "claude-up"}, {"provider": "spare", "model": "gpt-up"}]}},
    }


OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


async def test_an_error_event_before_any_content_fails_over(make_upstream, start_gateway):
    claude, spare = await make_upstream("anthropic"), await make_upstream("openai")
    # message_start and the error in one write, so they reach the gateway in one read, before anything was relayed
    claude.then(Behaviour(events=[orjson.dumps(START) + b"\n\ndata: " + orjson.dumps(OVERLOADED)]))
    gw = await start_gateway(two_kinds(claude, spare))
    async with sdk(gw) as client:
        raw = await client.chat.completions.with_raw_response.create(model="sonnet", messages=[{"role": "user", "content": "hi"}], stream=True)
        chunks = [c async for c in raw.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from openai"
    assert raw.headers["x-router-trace"].startswith("claude/claude-up=error event, spare/gpt-up=ok")


async def test_an_error_event_after_content_ends_the_stream_as_failed(make_upstream, start_gateway):
    claude, spare = await make_upstream("anthropic"), await make_upstream("openai")
    text = [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    ]
    claude.then(Behaviour(events=events(START, *text, OVERLOADED)))
    gw = await start_gateway(two_kinds(claude, spare))
    records: list[Any] = []
    gw.gateway.record_listeners.append(records.append)
    pieces: list[str] = []
    async with sdk(gw) as client:
        with pytest.raises(openai.APIError, match="Overloaded"):
            async for chunk in await client.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "hi"}], stream=True):
                pieces.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(pieces) == "Hi" and not spare.received
    await wait_for(lambda: records)
    assert records[0].status_label == "stream_error"


# -- the front door's shapes, read by the official anthropic SDK ------------------
# A stand-in for the coming ingress: a loopback server that answers /v1/messages with
# the translators above over canned OpenAI answers, so the SDK itself judges the shapes.

CANNED_CHUNKS = [
    openai_chunk({"role": "assistant", "content": ""}),
    openai_chunk({"content": "Hello"}),
    openai_chunk({"content": " there"}),
    openai_chunk({"tool_calls": [{"index": 0, "id": "call_7", "type": "function", "function": {"name": "weather", "arguments": '{"city":'}}]}),
    openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
    openai_chunk({}, "tool_calls"),
    openai_chunk(None, usage={"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49, "prompt_tokens_details": {"cached_tokens": 30}}),
]
CANNED_ANSWER = {
    "id": "chatcmpl-5",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49},
}


async def stand_in(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
    body = await request.json()
    if body.get("model") == "overloaded":
        return aiohttp.web.json_response(error_body(529, "Overloaded"), status=529)
    try:
        chat = messages_to_chat(body)
    except BadMessagesRequest as exc:
        return aiohttp.web.json_response(error_body(400, str(exc)), status=400)
    if not chat.get("stream"):
        return aiohttp.web.json_response(chat_to_message(CANNED_ANSWER, body["model"]))
    response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    stream = MessagesStream(body["model"])
    for chunk in CANNED_CHUNKS:
        await response.write(stream.feed(chunk))
    await response.write(stream.finish())
    return response


async def count(request: aiohttp.web.Request) -> aiohttp.web.Response:
    return aiohttp.web.json_response(count_tokens(await request.json()))


@pytest.fixture
async def stand_in_url():
    app = aiohttp.web.Application()
    app.router.add_post("/v1/messages", stand_in)
    app.router.add_post("/v1/messages/count_tokens", count)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_the_anthropic_sdk_reads_our_message_stream_count_and_errors(stand_in_url):
    ask = [{"role": "user", "content": "hi"}]
    async with anthropic.AsyncAnthropic(base_url=stand_in_url, api_key="k", max_retries=0) as client:
        message = await client.messages.create(model="claude-alias", max_tokens=64, system="Be brief.", messages=ask)
        assert (message.content[0].text, message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("Hello there", "end_turn", 40, 9)
        async with client.messages.stream(model="claude-alias", max_tokens=64, messages=ask) as stream:
            texts = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        assert "".join(texts) == "Hello there"
        assert [block.type for block in final.content] == ["text", "tool_use"]
        assert (final.content[1].name, final.content[1].input, final.stop_reason) == ("weather", {"city": "Oslo"}, "tool_use")
        assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (10, 30, 9)
        counted = await client.messages.count_tokens(model="claude-alias", messages=[{"role": "user", "content": "x" * 40}])
        assert counted.input_tokens == 10
        with pytest.raises(anthropic.InternalServerError) as overloaded:
            await client.messages.create(model="overloaded", max_tokens=8, messages=ask)
        assert overloaded.value.status_code == 529 and overloaded.value.body["error"]["type"] == "overloaded_error"
        with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
            await client.messages.create(model="claude-alias", max_tokens=0, messages=ask)
