"""The quick start as a client sees it: the shipped routes.yaml, a real gateway, real client libraries.

Each test is something people do first with a gateway: LangChain's
``ChatOpenAI`` (plain, streamed, ``bind_tools``, ``with_structured_output``
in each of its methods), the openai SDK (``parse``, ``n``, streamed tool
calls, JSON mode, ``max_tokens``, ``stop``, a tool round trip) and
instructor.  The shipped file is copied byte for byte into the test's own
folder, so its relative paths (the ledger's usage.db) land there and not in
the checkout.
"""

from __future__ import annotations

import json
import shutil
from enum import StrEnum

import instructor
import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from router.config import load_table
from tests.conftest import PROJECT_ROOT


class Unit(StrEnum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class GetWeather(BaseModel):
    """The current weather in a city."""

    city: str = Field(description="The city, e.g. Berlin")
    unit: Unit
    days: int = Field(ge=1, le=7)


class Address(BaseModel):
    street: str
    postcode: str = Field(pattern=r"^\d{5}$")


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str
    age: int = Field(gt=0)
    email: str | None = None
    address: Address | None
    tags: list[str]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "hourly": {"type": "array", "items": {"type": "object", "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}}}},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}
USER = [{"role": "user", "content": "What is the weather in Berlin?"}]


@pytest.fixture
async def gateway(start_gateway, tmp_path):
    """The gateway on the shipped routes.yaml: auth off, the mock answering every alias."""
    shutil.copyfile(PROJECT_ROOT / "routes.yaml", tmp_path / "routes.yaml")
    table = load_table(tmp_path / "routes.yaml", env={})
    assert not table.auth.enabled, "the quick start needs no keys; if that changes, this test must use the quick start's way in"
    return await start_gateway(table)


@pytest.fixture
async def client(gateway):
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture
def llm(gateway):
    return ChatOpenAI(model="chat", base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


# -- LangChain --------------------------------------------------------------


async def test_langchain_invoke_and_stream(llm):
    reply = await llm.ainvoke("hi")
    assert reply.content == "The gateway answered this from the built-in mock provider with no keys."
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 12
    pieces = [chunk.content async for chunk in llm.astream("hi")]
    assert len([p for p in pieces if p]) == 12
    assert "".join(pieces) == reply.content


async def test_langchain_bind_tools_with_a_named_tool_choice(llm):
    reply = await llm.bind_tools([GetWeather, TIME_TOOL], tool_choice="GetWeather").ainvoke("What's the weather like?")
    assert isinstance(reply, AIMessage) and len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call["name"] == "GetWeather" and call["id"]
    jsonschema.validate(call["args"], GetWeather.model_json_schema())
    assert GetWeather.model_validate(call["args"]).days >= 1
    assert reply.response_metadata["finish_reason"] == "tool_calls"


async def test_langchain_streamed_tool_call_adds_up_to_valid_args(llm):
    chunks = [chunk async for chunk in llm.bind_tools([GetWeather], tool_choice="GetWeather").astream("Weather in Paris?")]
    assert len([c for c in chunks if c.tool_call_chunks]) > 2
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    (call,) = whole.tool_calls
    assert call["name"] == "GetWeather"
    jsonschema.validate(call["args"], GetWeather.model_json_schema())


async def test_langchain_tool_round_trip_ends_in_text_quoting_the_result(llm):
    bound = llm.bind_tools([GetWeather])
    question = HumanMessage("What is the weather in Berlin?")
    call = await bound.ainvoke([question])
    assert call.tool_calls and call.tool_calls[0]["name"] == "GetWeather"
    answer = await bound.ainvoke([question, call, ToolMessage("21 degrees and sunny", tool_call_id=call.tool_calls[0]["id"])])
    assert not answer.tool_calls
    assert "21 degrees and sunny" in answer.content and "GetWeather" in answer.content


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
async def test_langchain_with_structured_output_returns_the_pydantic_object(llm, method):
    structured = llm.with_structured_output(Person, method=method)
    prompt = "Extract the person: Ada, 36, lives at 1 Main St."
    if method == "json_mode":  # JSON mode's contract: the prompt shows the schema (LangChain's docs say so too)
        prompt += "\nAnswer with JSON matching this schema:\n" + json.dumps(Person.model_json_schema())
    person = await structured.ainvoke(prompt)
    assert isinstance(person, Person)
    jsonschema.validate(person.model_dump(mode="json"), Person.model_json_schema())


# -- the openai SDK ---------------------------------------------------------


async def test_sdk_parse_with_a_pydantic_response_format(client):
    completion = await client.chat.completions.parse(model="chat", messages=USER, response_format=Person)
    message = completion.choices[0].message
    assert isinstance(message.parsed, Person)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == -(-len(message.content) // 4)


async def test_sdk_parse_with_a_strict_pydantic_tool(client):
    completion = await client.chat.completions.parse(model="chat", messages=USER, tools=[openai.pydantic_function_tool(GetWeather)])
    call = completion.choices[0].message.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, GetWeather)


async def test_sdk_n_choices_whole_and_streamed(client):
    reply = await client.chat.completions.create(model="chat", messages=USER, n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content == reply.choices[1].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 2 * 12
    stream = await client.chat.completions.create(model="chat", messages=USER, n=2, stream=True, stream_options={"include_usage": True})
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    usage = None
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
        usage = chunk.usage or usage
    assert texts == {0: reply.choices[0].message.content, 1: reply.choices[1].message.content}
    assert finishes == {0: "stop", 1: "stop"}
    assert usage is not None and usage.completion_tokens == 2 * 12


async def test_sdk_streamed_forced_tool_call_assembles_into_valid_arguments(client):
    stream = await client.chat.completions.create(
        model="chat", messages=USER, tools=[TIME_TOOL, WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True
    )
    chunks = [chunk async for chunk in stream]
    deltas = [call for chunk in chunks for choice in chunk.choices for call in choice.delta.tool_calls or ()]
    first, rest = deltas[0], deltas[1:]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (0, "function", "get_weather", "")
    assert first.id and all(d.index == 0 and d.id is None and d.function.name is None for d in rest)
    assert len(rest) > 2  # the arguments arrive in fragments, as from a model
    arguments = json.loads("".join(d.function.arguments for d in rest))
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


async def test_sdk_tool_round_trip(client):
    tools = [WEATHER_TOOL, TIME_TOOL]
    asked = await client.chat.completions.create(model="chat", messages=USER, tools=tools)
    choice = asked.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])
    history = [*USER, choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "21 degrees and sunny"}]
    answered = await client.chat.completions.create(model="chat", messages=history, tools=tools)
    assert answered.choices[0].finish_reason == "stop" and not answered.choices[0].message.tool_calls
    assert answered.choices[0].message.content == "The tool get_weather returned: 21 degrees and sunny"


async def test_sdk_tool_choice_none_and_required(client):
    none = await client.chat.completions.create(model="chat", messages=USER, tools=[WEATHER_TOOL], tool_choice="none")
    assert none.choices[0].message.content and not none.choices[0].message.tool_calls
    after_result = [*USER, {"role": "assistant", "content": "Let me check."}, {"role": "user", "content": "And the time?"}]
    required = await client.chat.completions.create(model="chat", messages=after_result, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required")
    assert required.choices[0].message.tool_calls[0].function.name == "get_time"  # the tool the user's message names


REFUSED = {
    "a missing function": ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "'nope'"),
    "required without tools": ({"tool_choice": "required"}, "needs tools"),
    "no choices": ({"n": 0}, "at least 1"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_sdk_what_the_real_api_refuses_is_a_400(client, case):
    extra, words = REFUSED[case]
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="chat", messages=USER, **extra)
    assert words in str(info.value)


async def test_sdk_json_object_mode_returns_a_json_object(client):
    reply = await client.chat.completions.create(model="chat", messages=USER, response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


async def test_sdk_json_schema_mode_is_valid_against_the_schema(client):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "number", "minimum": 2.5}}, "required": ["answer", "score"]}
    reply = await client.chat.completions.create(
        model="chat", messages=USER, response_format={"type": "json_schema", "json_schema": {"name": "graded", "schema": schema, "strict": True}}
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


async def test_sdk_max_tokens_cuts_with_finish_reason_length(client):
    reply = await client.chat.completions.create(model="chat", messages=USER, max_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "The gateway answered"
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    stream = await client.chat.completions.create(model="chat", messages=USER, max_completion_tokens=3, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The gateway answered"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_sdk_stop_sequence_cuts_the_text(client):
    reply = await client.chat.completions.create(model="chat", messages=USER, stop=["built-in", "keys"])
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == "The gateway answered this from the "
    assert reply.usage is not None and reply.usage.completion_tokens == 7  # six words and the space before the stop sequence


async def test_sdk_the_same_request_gets_the_same_answer(client):
    first, second = [await client.chat.completions.create(model="chat", messages=USER, tools=[WEATHER_TOOL]) for _ in range(2)]
    assert first.choices[0].message.model_dump() == second.choices[0].message.model_dump()


async def test_sdk_text_completions_honour_n_stop_and_max_tokens(client):
    reply = await client.completions.create(model="chat", prompt="Say something", n=2, max_tokens=4, stop="this")
    assert [(c.index, c.text, c.finish_reason) for c in reply.choices] == [(0, "The gateway answered ", "stop"), (1, "The gateway answered ", "stop")]
    assert reply.usage is not None and reply.usage.completion_tokens == 2 * 4


# -- instructor -------------------------------------------------------------


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON, instructor.Mode.JSON_SCHEMA])
async def test_instructor_returns_the_response_model(client, mode):
    patched = instructor.from_openai(client, mode=mode)
    person = await patched.chat.completions.create(
        model="chat", response_model=Person, max_retries=0, messages=[{"role": "user", "content": "Ada, 36, lives at 1 Main St."}]
    )
    assert isinstance(person, Person)
    jsonschema.validate(person.model_dump(mode="json"), Person.model_json_schema())


@pytest.mark.parametrize("content", ["[mock-status 400] hi", [{"type": "text", "text": "hi [mock-status 400]"}]])
async def test_the_mock_status_directive_still_injects_a_status(client, content):
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": content}], tools=[WEATHER_TOOL])
    assert "mock provider injected status 400" in str(info.value)
