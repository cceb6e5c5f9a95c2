"""The official openai SDK, unchanged, against the gateway: sync and async, streamed and not, per provider kind."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import provider_entry

# (fake upstream kind, expected text, expected usage (prompt, completion), cached, reasoning)
CHAT_KINDS = {
    "openai": ("Hello from openai", (20, 5), 4, 2),
    "forii": ("Hello from forii", (18, 156), 0, 0),
    "forefront": ("Hello from forefront", (28, 10), 0, 0),
}


async def gateway_for(kind, make_upstream, start_gateway, ops=("chat",)):
    up = await make_upstream(kind)
    gw = await start_gateway(
        {"providers": {kind: provider_entry(up)}, "models": {"alias": {"operations": list(ops), "targets": [{"provider": kind, "model": f"{kind}-model"}]}}}
    )
    return up, gw


@pytest.mark.parametrize("kind", sorted(CHAT_KINDS))
async def test_async_client_chat(kind, make_upstream, start_gateway):
    text, (prompt, completion), cached, reasoning = CHAT_KINDS[kind]
    up, gw = await gateway_for(kind, make_upstream, start_gateway)
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        reply = await client.chat.completions.create(model="alias", messages=[{"role": "user", "content": "hi"}], max_tokens=16)
    assert reply.choices[0].message.content == text
    assert reply.model == f"{kind}-model"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, completion)
    assert reply.usage.total_tokens == prompt + completion
    if cached:
        assert reply.usage.prompt_tokens_details is not None and reply.usage.prompt_tokens_details.cached_tokens == cached
    if reasoning:
        assert reply.usage.completion_tokens_details is not None and reply.usage.completion_tokens_details.reasoning_tokens == reasoning
    assert up.received[0].headers["Authorization"] == f"Bearer {up.api_key}"
    assert up.received[0].body["max_tokens"] == 16


@pytest.mark.parametrize("kind", sorted(CHAT_KINDS))
async def test_async_client_chat_stream_with_usage(kind, make_upstream, start_gateway):
    text, (prompt, completion), _, _ = CHAT_KINDS[kind]
    _, gw = await gateway_for(kind, make_upstream, start_gateway)
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="alias", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        )
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
    assert "".join(pieces) == text
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion)


@pytest.mark.parametrize("kind", sorted(CHAT_KINDS))
async def test_sync_client_chat_and_stream(kind, make_upstream, start_gateway):
    text, (prompt, completion), _, _ = CHAT_KINDS[kind]
    _, gw = await gateway_for(kind, make_upstream, start_gateway)

    def use_sync_client() -> tuple[str, int, str]:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
            reply = client.chat.completions.create(model="alias", messages=[{"role": "user", "content": "hi"}])
            streamed = "".join(
                chunk.choices[0].delta.content or ""
                for chunk in client.chat.completions.create(model="alias", messages=[{"role": "user", "content": "hi"}], stream=True)
                if chunk.choices
            )
            assert reply.usage is not None
            return reply.choices[0].message.content or "", reply.usage.prompt_tokens, streamed

    # The sync client blocks its thread; the gateway and the fake keep serving on this loop.
    content, prompt_tokens, streamed = await asyncio.to_thread(use_sync_client)
    assert content == text and streamed == text and prompt_tokens == prompt


async def test_text_completions_through_interactive(make_upstream, start_gateway):
    up, gw = await gateway_for("interactive", make_upstream, start_gateway, ops=("completion",))
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        reply = await client.completions.create(model="alias", prompt=["Say", "hi"], max_tokens=8, extra_body={"metadata": {"team": "search"}})
        stream = await client.completions.create(model="alias", prompt="Say hi", stream=True, stream_options={"include_usage": True})
        streamed, usage = "", None
        async for chunk in stream:
            streamed += "".join(c.text for c in chunk.choices)
            usage = chunk.usage or usage
    assert reply.choices[0].text == "Hello from interactive"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (9, 7)
    extra = reply.choices[0].model_extra or {}
    assert extra.get("native_finish_reason") == "end_turn" and extra.get("reasoning") == "thought briefly"
    assert (reply.model_extra or {}).get("upstream_provider") == "anthropic"
    assert up.received[0].body["metadata"] == {"team": "search"}
    assert up.received[0].path == "/api/v1/completions"
    assert streamed == "Hello from interactive"
    assert usage is not None and usage.completion_tokens == 7


async def test_mock_provider_answers_chat_and_stream(start_gateway):
    gw = await start_gateway(
        {
            "providers": {"mock": {"kind": "mock", "options": {"completion_tokens": 5}}},
            "models": {"alias": {"targets": [{"provider": "mock", "model": "mock-1"}]}},
        }
    )
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        reply = await client.chat.completions.create(model="alias", messages=[{"role": "user", "content": "hi there"}])
        stream = await client.chat.completions.create(
            model="alias", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        models = await client.models.list()
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert reply.choices[0].message.content == "The gateway answered this from"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The gateway answered this from"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert [m.id for m in models.data] == ["alias"]


async def test_forii_extensions_pass_through(make_upstream, start_gateway):
    up, gw = await gateway_for("forii", make_upstream, start_gateway)
    extensions = {"reasoning_effort": "low", "context_length_exceeded_behavior": "truncate", "repetition_penalty": 1.1, "top_k": 40, "metadata": {"team": "ml"}}
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        await client.chat.completions.create(
            model="alias",
            messages=[{"role": "user", "content": "hi"}],
            max_completion_tokens=64,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            tool_choice="auto",
            response_format={"type": "json_object"},
            logprobs=True,
            extra_body=extensions,
        )
    sent = up.received[0].body
    for name, value in extensions.items():
        assert sent[name] == value
    assert sent["max_completion_tokens"] == 64 and sent["tool_choice"] == "auto" and sent["logprobs"] is True
    assert sent["response_format"] == {"type": "json_object"} and sent["tools"][0]["function"]["name"] == "f"
    assert up.received[0].path == "/inference/v1/chat/completions"


async def test_sdk_sees_gateway_errors_as_openai_errors(start_gateway):
    gw = await start_gateway({"providers": {"mock": {"kind": "mock"}}, "models": {"alias": {"targets": [{"provider": "mock", "model": "m"}]}}})
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "hi"}])
    assert "unknown model 'missing'" in str(info.value)
