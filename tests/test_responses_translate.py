"""The Responses API front door's translation: JSON in, JSON out, with the openai SDK's own types as the oracle.

Every Response and every stream event produced here is parsed by the SDK
(``Response.model_validate``, the ``ResponseStreamEvent`` union) and the
stream is run through the SDK's own accumulator (``ResponseStreamState``,
what ``client.responses.stream`` uses), so a shape the SDK would refuse or
misread fails here rather than in a client.  Each chat body produced is
checked against the SDK's chat request type the same way.
"""

from __future__ import annotations

import copy
import importlib
import json
from typing import Any

import orjson
import pytest
from openai import OpenAI, omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming
from pydantic import TypeAdapter

from router.errors import InvalidRequest, NativeOnly
from router.frontdoor.responses import BadResponsesRequest, ResponsesStream, chat_to_response, new_response_id, responses_to_chat

EVENTS = TypeAdapter(ResponseStreamEvent)
CHAT_REQUEST = TypeAdapter(CompletionCreateParamsNonStreaming)
RESPONSES_REQUEST = TypeAdapter(ResponseCreateParamsNonStreaming)
# The HTTP library the SDK itself is built on (httpx2 in openai 3, httpx before): its MockTransport answers in-process.
_SDK_CLIENT = importlib.import_module("openai._client")  # `openai._client` as an attribute is the module-level client, not the module
HTTP = getattr(_SDK_CLIENT, "httpx2", None) or _SDK_CLIENT.httpx

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    "strict": True,
}


def chat_of(body: dict[str, Any]) -> dict[str, Any]:
    """responses_to_chat, with both sides checked against the SDK's request types and the body left untouched."""
    RESPONSES_REQUEST.validate_python({k: v for k, v in body.items() if k != "stream"})
    before = copy.deepcopy(body)
    chat = responses_to_chat(body)
    assert body == before
    CHAT_REQUEST.validate_python({k: v for k, v in chat.items() if k not in ("stream", "stream_options")})
    return chat


def completion(message: dict[str, Any], finish_reason: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "up-model",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
        "usage": usage or {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        "provider": "openai-main",
    }
    ChatCompletion.model_validate(answer)  # the fixture is a real chat completion
    return answer


def response_of(answer: dict[str, Any], request: dict[str, Any]) -> Response:
    produced = chat_to_response(answer, request)
    orjson.dumps(produced)  # JSON-ready as it is
    return Response.model_validate(produced)


# ---------------------------------------------------------------- request


def test_string_input_and_instructions_become_a_system_then_a_user_message():
    chat = chat_of({"model": "alias", "instructions": "Be brief.", "input": "Hello", "temperature": 0.2, "top_p": 0.9, "user": "u1", "metadata": {"team": "a"}})
    assert chat == {
        "model": "alias",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u1",
        "metadata": {"team": "a"},
    }


def test_item_lists_map_roles_and_content_parts():
    body = {
        "model": "alias",
        "input": [
            {"role": "developer", "content": "Answer in French."},
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be "}, {"type": "input_text", "text": "kind."}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
                    {"type": "input_file", "file_data": "data:application/pdf;base64,AAAA", "filename": "a.pdf"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Un chat.", "annotations": []}],
            },
            {"role": "user", "content": "Merci"},
        ],
    }
    assert chat_of(body)["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "system", "content": "Be kind."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA", "filename": "a.pdf"}},
            ],
        },
        {"role": "assistant", "content": "Un chat."},
        {"role": "user", "content": "Merci"},
    ]


def test_tools_tool_choice_and_a_function_call_fed_back():
    body = {
        "model": "alias",
        "tools": [WEATHER, {"type": "function", "name": "now", "parameters": None}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "input": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"type": "message", "role": "assistant", "content": "Let me look."},
            {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}', "status": "completed"},
            {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city":"Rome"}'},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
            {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "21C"}]},
        ],
    }
    chat = chat_of(body)
    assert chat["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}},
        {"type": "function", "function": {"name": "now"}},
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "21C"},
    ]


def test_a_function_call_with_no_assistant_text_opens_its_own_assistant_turn():
    chat = chat_of({"model": "m", "input": [{"role": "user", "content": "x"}, {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]})
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        (
            {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]},
            {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_weather"}}]}},
        ),
    ],
)
def test_tool_choice_options(choice, expected):
    assert chat_of({"model": "m", "input": "x", "tools": [WEATHER], "tool_choice": choice})["tool_choice"] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            {"format": {"type": "json_schema", "name": "city", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}, "strict": True}},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "city", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}, "strict": True},
                }
            },
        ),
        ({"format": {"type": "json_object"}}, {"response_format": {"type": "json_object"}}),
        ({"format": {"type": "text"}, "verbosity": "low"}, {"verbosity": "low"}),
    ],
)
def test_text_format_becomes_response_format(text, expected):
    chat = chat_of({"model": "m", "input": "x", "text": text})
    assert {k: chat[k] for k in expected} == expected
    assert set(chat) == {"model", "messages", *expected}


def test_limits_stream_and_reasoning_are_renamed_and_responses_only_fields_dropped():
    chat = responses_to_chat(
        {
            "model": "m",
            "input": "x",
            "max_output_tokens": 64,
            "stream": True,
            "reasoning": {"effort": "low", "summary": "auto"},
            "store": True,
            "include": ["message.output_text.logprobs"],
            "truncation": "auto",
            "previous_response_id": None,
            "models": ["backup"],
            "max_price": {"input": 1},
        }
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 64,
        "reasoning_effort": "low",
        "stream": True,
        "stream_options": {"include_usage": True},
        "models": ["backup"],
        "max_price": {"input": 1},
    }


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id", "keeps no conversation state"),
        ({"input": "x", "conversation": "conv_1"}, "conversation", "keeps no conversation state"),
        ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt", "stores no prompts"),
        ({"input": "x", "background": True}, "background", "keeps no responses"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "'web_search' tool"),
        ({"input": "x", "tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[1].type", "'file_search' tool"),
        ({"input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type", "'web_search_preview'"),
        ({}, "input", "input must be"),
        ({"input": []}, "input", "non-empty"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "'item_reference'"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "user, system, developer, assistant"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1", "detail": "auto"}]}]},
            "input[0].content[0].image_url",
            "file_id",
        ),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "https://x", "detail": "auto"}]}]},
            "input[0].content[0].type",
            "only text",
        ),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments", "a string"),
        ({"input": "x", "max_output_tokens": "ten"}, "max_output_tokens", "an integer"),
        ({"input": "x", "max_output_tokens": True}, "max_output_tokens", "an integer"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name", "a string"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type", "json_schema"),
    ],
)
def test_a_request_a_chat_target_cannot_serve_is_a_400_naming_the_field(body, param, words):
    with pytest.raises(BadResponsesRequest) as caught:
        responses_to_chat({"model": "m", **body})
    error = caught.value
    assert isinstance(error, ValueError) and isinstance(error, InvalidRequest) and error.status == 400
    assert error.param == param and words in error.message
    # State and built-in tools only a provider speaking Responses itself can serve: such a target still may (NativeOnly).
    code = "needs_native_target" if isinstance(error, NativeOnly) else "invalid_request"
    assert json.loads(error.to_body())["error"] == {"message": error.message, "type": "invalid_request_error", "param": param, "code": code}


# ---------------------------------------------------------------- response


def test_a_text_answer_becomes_a_completed_response():
    request = {"model": "alias", "input": "Hello", "instructions": "Be brief.", "metadata": {"team": "a"}, "temperature": 0.5}
    response = response_of(completion({"content": "Hi there."}), request)
    assert response.id.startswith("resp_") and response.object == "response" and response.created_at == 1700000000
    assert response.status == "completed" and response.incomplete_details is None and response.error is None
    assert response.model == "up-model" and response.instructions == "Be brief." and response.metadata == {"team": "a"} and response.temperature == 0.5
    assert response.output_text == "Hi there."
    [item] = response.output
    assert item.type == "message" and item.id.startswith("msg_") and item.status == "completed" and item.role == "assistant"
    assert item.content[0].annotations == []
    assert response.tool_choice == "auto" and response.tools == [] and response.parallel_tool_calls is True
    assert response.model_extra["provider"] == "openai-main"  # the gateway's label rides along


def test_usage_is_mapped_with_cached_and_reasoning_tokens():
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
        "completion_tokens_details": {"reasoning_tokens": 25},
    }
    produced = chat_to_response(completion({"content": "x"}, usage=usage), {"model": "m", "input": "x"})
    assert produced["usage"] == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 25},
        "total_tokens": 140,
    }
    assert Response.model_validate(produced).usage.input_tokens_details.cached_tokens == 60
    bare = chat_to_response(completion({"content": "x"}, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}), {"model": "m", "input": "x"})
    assert Response.model_validate(bare).usage.output_tokens_details.reasoning_tokens == 0


def test_max_output_tokens_cut_is_an_incomplete_response():
    request = {"model": "m", "input": "Tell me a story", "max_output_tokens": 5}
    response = response_of(completion({"content": "Once upon a"}, finish_reason="length"), request)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete" and response.max_output_tokens == 5 and response.output_text == "Once upon a"


def test_tool_calls_become_function_call_items_and_round_trip_back_into_chat():
    request = {"model": "m", "input": "Weather in Paris?", "tools": [WEATHER]}
    calls = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    response = response_of(completion({"content": None, "tool_calls": calls}, finish_reason="tool_calls"), request)
    assert response.status == "completed"
    [call] = response.output
    assert call.type == "function_call" and call.id.startswith("fc_") and call.call_id == "call_a" and call.status == "completed"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert response.tools[0].name == "get_weather" and response.output_text == ""
    # The client sends the call back with its output, as the SDK docs show: the next chat turn is the usual tool exchange.
    follow_up = {
        **request,
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
        ],
    }
    assert chat_of(follow_up)["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
    ]


def test_text_with_tool_calls_json_schema_echo_and_a_refusal():
    text = {"format": {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": True}}
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    response = response_of(completion({"content": "Calling.", "tool_calls": calls}, "tool_calls"), {"model": "m", "input": "x", "text": text})
    assert [item.type for item in response.output] == ["message", "function_call", "function_call"]
    assert response.text.format.type == "json_schema" and response.text.format.name == "city"
    refused = response_of(completion({"content": None, "refusal": "I can't help with that."}), {"model": "m", "input": "x"})
    assert refused.output[0].content[0].type == "refusal" and refused.output[0].content[0].refusal == "I can't help with that."


def test_new_response_ids_are_fresh():
    assert new_response_id() != new_response_id()
    assert chat_to_response(completion({"content": "x"}), {"model": "m", "input": "x"}, response_id="resp_given")["id"] == "resp_given"


# ---------------------------------------------------------------- stream


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "up-model", "choices": choices, "provider": "openai-main"}
    if usage is not None:
        data["usage"] = usage
    ChatCompletionChunk.model_validate(data)  # the fixture is a real chunk
    return data


def parse_sse(data: bytes) -> list[dict[str, Any]]:
    """The events of a Responses stream, each checked to be named by its type as OpenAI's are."""
    events = []
    for block in data.split(b"\n\n"):
        if not block:
            continue
        name, payload = block.split(b"\n")
        assert name.startswith(b"event: ") and payload.startswith(b"data: ")
        event = json.loads(payload[6:])
        assert name[7:].decode() == event["type"]
        events.append(event)
    return events


def run_stream(request: dict[str, Any], chunks: list[dict[str, Any]], end: str = "finish") -> tuple[list[dict[str, Any]], ResponseStreamState]:
    """Feed chunks, end the stream; every event validated by the SDK's union and run through its stream accumulator."""
    stream = ResponsesStream(request, new_response_id())
    data = b"".join(stream.feed(c) for c in chunks) + (stream.finish() if end == "finish" else stream.failed("upstream reset the connection"))
    events = parse_sse(data)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    state: ResponseStreamState = ResponseStreamState(input_tools=request.get("tools", []), text_format=omit)
    for event in events:
        state.handle_event(EVENTS.validate_python(event))
    assert stream.finish() == b"" and stream.feed(chunks[0]) == b""  # closed: nothing more
    return events, state


USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": 4}}


def test_a_text_stream_gives_the_responses_events_in_order_and_the_sdk_accumulates_the_text():
    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo!"}), chunk({}, "stop"), chunk(usage=USAGE)]
    events, state = run_stream({"model": "alias", "input": "Hi", "stream": True}, chunks)
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    final = state._completed_response
    assert final.output_text == "Hello!" and final.status == "completed" and final.model == "up-model"
    assert final.usage.input_tokens == 9 and final.usage.input_tokens_details.cached_tokens == 4 and final.usage.total_tokens == 12
    assert final.model_extra["provider"] == "openai-main"
    assert {event["item_id"] for event in events if "item_id" in event} == {final.output[0].id}


def test_a_tool_call_stream_gives_function_call_items_with_argument_deltas():
    calls = [
        chunk({"role": "assistant", "content": "Checking."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        chunk(usage=USAGE),
    ]
    events, state = run_stream({"model": "alias", "input": "Weather?", "tools": [WEATHER], "stream": True}, calls)
    kinds = [event["type"] for event in events]
    assert kinds.index("response.output_item.done") < kinds.index("response.function_call_arguments.delta")  # the text item closes before the calls
    assert kinds.count("response.function_call_arguments.done") == 2 and kinds[-1] == "response.completed"
    final = state._completed_response
    message, paris, rome = final.output
    assert message.content[0].text == "Checking."
    assert (paris.call_id, paris.name, paris.arguments, paris.status) == ("call_a", "get_weather", '{"city":"Paris"}', "completed")
    assert paris.parsed_arguments == {"city": "Paris"}  # strict tools are parsed by the SDK from what we sent
    assert (rome.call_id, json.loads(rome.arguments)) == ("call_b", {"city": "Rome"})
    done = [event for event in events if event["type"] == "response.function_call_arguments.done"]
    assert [(event["name"], event["arguments"]) for event in done] == [("get_weather", '{"city":"Paris"}'), ("get_weather", '{"city":"Rome"}')]


def test_a_stream_cut_by_max_output_tokens_ends_incomplete():
    events, _ = run_stream(
        {"model": "m", "input": "x", "max_output_tokens": 2, "stream": True}, [chunk({"content": "Once"}), chunk({}, "length"), chunk(usage=USAGE)]
    )
    last = events[-1]
    assert last["type"] == "response.incomplete"
    final = Response.model_validate(last["response"])
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens" and final.output[0].status == "incomplete"


def test_a_stream_that_breaks_ends_with_response_failed_holding_what_arrived():
    events, state = run_stream({"model": "m", "input": "x", "stream": True}, [chunk({"content": "Half an ans"})], end="failed")
    assert [event["type"] for event in events][-2:] == ["response.output_text.delta", "response.failed"]
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error.code == "server_error" and failed.error.message == "upstream reset the connection"
    assert failed.output_text == "Half an ans" and failed.output[0].status == "incomplete"
    assert state._completed_response is None


def test_a_stream_that_breaks_mid_call_keeps_the_partial_arguments_marked_incomplete():
    calls = [chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}}]})]
    events, _ = run_stream({"model": "m", "input": "x", "tools": [WEATHER], "stream": True}, calls, end="failed")
    [call] = Response.model_validate(events[-1]["response"]).output
    assert (call.arguments, call.status) == ('{"ci', "incomplete")


def test_a_stream_with_no_content_still_answers_an_empty_message():
    events, state = run_stream({"model": "m", "input": "x", "stream": True}, [chunk({"role": "assistant"}), chunk({}, "stop")])
    assert [event["type"] for event in events] == ["response.created", "response.in_progress", "response.completed"]
    assert state._completed_response.output_text == "" and state._completed_response.usage is None


def test_nothing_is_written_before_the_first_chunk():
    stream = ResponsesStream({"model": "m", "input": "x"}, "resp_x")
    assert stream.sequence == 0 and not stream.started
    assert [event["type"] for event in parse_sse(stream.failed("no answer"))] == ["response.created", "response.in_progress", "response.failed"]


# ---------------------------------------------------------------- the SDK's client, end to end offline


def sdk_client(answer_chat: Any) -> OpenAI:
    """An OpenAI client whose HTTP goes to an in-process handler: the SDK's own request and parsing, no network.

    The handler translates what the SDK sent with ``responses_to_chat``,
    asks ``answer_chat`` for the chat answer (a completion, or a list of
    chunks for a stream) and translates it back as the gateway will.
    """

    def handle(request: Any) -> Any:
        body = json.loads(request.content)
        chat = responses_to_chat(body)
        assert request.url.path == "/v1/responses" and chat["messages"]
        answer = answer_chat(chat)
        if not chat.get("stream"):
            return HTTP.Response(200, json=chat_to_response(answer, body))
        stream = ResponsesStream(body)
        data = b"".join(stream.feed(c) for c in answer) + stream.finish()
        return HTTP.Response(200, content=data, headers={"content-type": "text/event-stream"})

    return OpenAI(api_key="sk-test", base_url="http://gateway.test/v1", max_retries=0, http_client=HTTP.Client(transport=HTTP.MockTransport(handle)))


def test_the_sdk_responses_create_reads_a_text_answer_and_a_function_call():
    def answer(chat: dict[str, Any]) -> dict[str, Any]:
        if chat.get("tools") and chat["messages"][-1]["role"] == "user":
            return completion(
                {"content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
                "tool_calls",
            )
        return completion({"content": f"Done: {chat['messages'][-1]['content']}"})

    client = sdk_client(answer)
    assert client.responses.create(model="alias", input="Hello", instructions="Be brief.").output_text == "Done: Hello"
    first = client.responses.create(model="alias", input="Weather in Paris?", tools=[WEATHER])
    [call] = first.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    second = client.responses.create(
        model="alias",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
        ],
    )
    assert second.output_text == "Done: 18C"


def test_the_sdk_responses_stream_accumulates_text_and_function_call_arguments():
    def answer(chat: dict[str, Any]) -> list[dict[str, Any]]:
        if chat.get("tools"):
            return [
                chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
                chunk({}, "tool_calls"),
                chunk(usage=USAGE),
            ]
        return [chunk({"role": "assistant", "content": "Bon"}), chunk({"content": "jour"}), chunk({}, "stop"), chunk(usage=USAGE)]

    client = sdk_client(answer)
    with client.responses.stream(model="alias", input="Hi") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Bon", "jour"] and final.output_text == "Bonjour" and final.usage.total_tokens == 12
    with client.responses.stream(model="alias", input="Weather?", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    assert final.output[0].parsed_arguments == {"city": "Paris"}
    streamed = client.responses.create(model="alias", input="Hi", stream=True)
    assert [event.type for event in streamed][-1] == "response.completed"
