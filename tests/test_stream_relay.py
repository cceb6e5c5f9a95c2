"""The stream relay: events parsed from whatever reads the network gives, relayed in batches, never held."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from router.sse import iter_event_batches
from tests.conftest import provider_entry
from tests.fakes.upstream import Behaviour

STREAM = b"data: a\r\n\r\n: keep-alive comment\n\ndata: b\n\nevent: x\ndata: c1\ndata: c2\n\nid: 7\n\ndata: [DONE]\n\n"


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, len(STREAM)])
async def test_events_are_the_same_however_the_network_splits_them(size):
    batches = [batch async for batch in iter_event_batches(_chunks(STREAM, size))]
    assert [event for batch in batches for event in batch] == [b"a", b"b", b"c1\nc2", b"[DONE]"]
    # One batch per read, empty when the read completed no event: a keep-alive still proves the stream alive (timeouts.idle).
    assert len(batches) == len(range(0, len(STREAM), size))


async def test_one_read_is_one_batch():
    batches = [batch async for batch in iter_event_batches(_chunks(STREAM, len(STREAM)))]
    assert len(batches) == 1


async def test_relayed_chunk_reaches_the_client_before_the_upstream_sends_the_next(make_upstream, start_gateway):
    gate = asyncio.Event()
    forii = (await make_upstream("forii")).then(Behaviour(gate=gate, text="one two three"))
    gw = await start_gateway({"providers": {"forii": provider_entry(forii)}, "models": {"chat": {"targets": [{"provider": "forii", "model": "m"}]}}})
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200
        first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)  # the upstream holds the rest until the gate opens
        assert json.loads(first.removeprefix(b"data: "))["choices"][0]["delta"]["content"] == "one"
        gate.set()
        rest = (await r.content.read()).split(b"\n\n")
    events = [e.removeprefix(b"data: ") for e in rest if e]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == " two three"
    assert chunks[-1]["usage"]["completion_tokens"] > 0
