"""Streaming: relayed as it arrives, usage only when asked, disconnects cancel the upstream."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import orjson

from tests.conftest import provider_entry, wait_for
from tests.fakes.upstream import Behaviour


def one_target(upstream, model="m", ops=("chat",)) -> dict:
    return {"providers": {"p": provider_entry(upstream)}, "models": {"chat": {"operations": list(ops), "targets": [{"provider": "p", "model": model}]}}}


def two_targets(first, second) -> dict:
    config = one_target(first)
    config["providers"]["q"] = provider_entry(second)
    config["models"]["chat"]["targets"].append({"provider": "q", "model": "m2"})
    return config


async def stream_chat(gw) -> tuple[int, dict, list[str]]:
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json=body) as r:
        return r.status, dict(r.headers), await read_events(r)


async def read_events(response: aiohttp.ClientResponse) -> list[str]:
    events = []
    async for line in response.content:
        line = line.strip()
        if line.startswith(b"data: "):
            events.append(line[6:].decode())
    return events


async def test_first_chunk_reaches_client_before_upstream_sends_the_last(make_upstream, start_gateway):
    gate = asyncio.Event()
    up = await make_upstream("forii")
    up.then(Behaviour(gate=gate, text="one two three"))
    gw = await start_gateway(one_target(up))
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        first = await asyncio.wait_for(r.content.readline(), 5)
        # The upstream is still holding the rest behind the gate: this chunk was relayed, not buffered.
        assert not gate.is_set()
        assert json.loads(first[6:])["choices"][0]["delta"]["content"] == "one"
        gate.set()
        rest = await read_events(r)
    assert rest[-1] == "[DONE]"
    contents = [json.loads(e)["choices"][0]["delta"].get("content") for e in rest[:-1] if json.loads(e)["choices"]]
    assert "".join(c for c in contents if c) == " two three"
    # The client did not ask for usage: no usage in any chunk, though the upstream was asked for it.
    assert all("usage" not in json.loads(e) for e in rest[:-1])
    assert up.received[0].body["stream_options"] == {"include_usage": True}


async def test_client_disconnect_closes_the_upstream_within_a_second(make_upstream, start_gateway):
    gate = asyncio.Event()
    up = await make_upstream("openai")
    up.then(Behaviour(gate=gate, text="a b c d"))
    gw = await start_gateway(one_target(up))
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    session = aiohttp.ClientSession()
    response = await session.post(gw.url + "/v1/chat/completions", json=body)
    await asyncio.wait_for(response.content.readline(), 5)
    response.close()
    await session.close()
    await asyncio.wait_for(up.disconnected.wait(), 1.0)
    gate.set()


async def test_usage_chunk_passed_only_when_asked(make_upstream, start_gateway):
    up = await make_upstream("openai")
    gw = await start_gateway(one_target(up))
    body = {"model": "chat", "stream": True, "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json=body) as r:
        events = await read_events(r)
    usage_chunks = [json.loads(e) for e in events[:-1] if "usage" in json.loads(e)]
    assert len(usage_chunks) == 1
    usage = usage_chunks[0]["usage"]
    assert usage["prompt_tokens"] == 20 and usage["completion_tokens"] == 5
    assert usage["prompt_tokens_details"]["cached_tokens"] == 4
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 2


async def test_forii_usage_on_the_finish_chunk_is_stripped_unless_asked(make_upstream, start_gateway):
    up = await make_upstream("forii")
    gw = await start_gateway(one_target(up))
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json=body) as r:
        events = await read_events(r)
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


async def test_provider_that_cannot_stream_gets_a_synthesised_stream(make_upstream, start_gateway):
    up = await make_upstream("forefront")
    gw = await start_gateway(one_target(up))
    body = {"model": "chat", "stream": True, "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200
        events = await read_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello from forefront"
    usage = chunks[-1]["usage"]
    assert {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == {"prompt_tokens": 28, "completion_tokens": 10, "total_tokens": 38}
    assert usage["cost"] == 0.0  # unpriced target: it cost nothing the gateway knows of, and says so
    assert "stream" not in up.received[0].body


async def test_upstream_breaking_mid_stream_ends_with_an_error_event(make_upstream, start_gateway):
    up = await make_upstream("openai")
    up.then(Behaviour(drop_after_first=True, text="x y z"))
    second = await make_upstream("openai")
    status, _, events = await stream_chat(await start_gateway(two_targets(up, second)))
    assert status == 200
    last = json.loads(events[-1])
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert second.received == []  # after the first byte there is no failover


async def test_stream_fails_over_before_the_first_byte(make_upstream, start_gateway):
    first, second = await make_upstream("openai"), await make_upstream("forii")
    first.then(Behaviour(status=503))
    status, headers, events = await stream_chat(await start_gateway(two_targets(first, second)))
    assert status == 200 and headers["x-router-attempts"] == "2"
    assert events[-1] == "[DONE]"


async def test_text_completion_stream_through_interactive(make_upstream, start_gateway):
    up = await make_upstream("interactive")
    gw = await start_gateway(one_target(up, ops=("completion",)))
    body = {"model": "chat", "stream": True, "prompt": "Say hi"}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/completions", json=body) as r:
        assert r.status == 200
        events = await read_events(r)
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1] if json.loads(e)["choices"])
    assert text == "Hello from interactive"
    await wait_for(lambda: up.received)


async def test_a_streaming_client_that_leaves_gives_one_499_line_and_no_traceback(spawn_gateway):
    config = {"logging": {"level": "info", "format": "json"}, "providers": {"m": {"kind": "mock", "options": {"chunk_delay_ms": 20, "completion_tokens": 200}}}}
    config["models"] = {"chat": {"targets": [{"provider": "m", "model": "x"}]}}
    gp = await spawn_gateway(config)
    for i in range(5):  # leaving at different points of the stream, the last ones right at its start
        async with aiohttp.ClientSession() as s:
            body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            async with s.post(gp.url + "/v1/chat/completions", json=body, headers={"x-request-id": f"leaver-{i}"}) as r:
                assert r.status == 200
                await r.content.readany()
                for _ in range(4 - i):
                    await r.content.readany()
            # leaving the block closes the connection with the stream still running

    def lines() -> list[dict]:
        found = []
        for line in gp.output:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and str(record.get("request_id", "")).startswith("leaver-"):
                found.append(record)
        return found

    await wait_for(lambda: len(lines()) == 5, timeout=10)
    assert sorted((r["request_id"], r["status"]) for r in lines()) == [(f"leaver-{i}", 499) for i in range(5)]
    output = "\n".join(gp.output)
    assert "Traceback" not in output and "unhandled error" not in output
