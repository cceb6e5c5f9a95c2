"""Misbehaving upstreams through the whole gateway, on real sockets (issue 13, the request path's part).

A provider key echoed anywhere in a passed-through error or a relayed SSE
error event never reaches the client; a 200 that is not a completion, or a
stream event that is not JSON, fails over (or is a 502), never a garbage
200; nonsense usage is a 200 charged by estimate with a finite cost.
"""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import provider_entry, wait_for
from tests.fakes.upstream import Behaviour

KEY = "sk-provider-secret-0123456789abcdefXYZ"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


def two_targets(bad: Any, good: Any, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {"bad": provider_entry(bad), "good": provider_entry(good)},
        "models": {"chat": {"targets": [{"provider": "bad", "model": "b", "price": {"input": 1, "output": 2}}, {"provider": "good", "model": "g"}]}},
        **extra,
    }


async def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body) as r:
        return r.status, dict(r.headers), await r.read()


async def test_a_key_echoed_in_an_upstream_400_never_reaches_the_client(make_upstream, start_gateway):
    bad, good = await make_upstream("openai", api_key=KEY), await make_upstream("openai")
    echo = {"error": {"message": "bad key", "type": "invalid_request_error", "param": KEY, "code": "x", "details": {"sent": [f"Bearer {KEY}"], KEY: 1}}}
    bad.default = Behaviour(status=400, body=echo)
    gw = await start_gateway(two_targets(bad, good))
    status, headers, body = await post(gw.url, CHAT)
    assert status == 400
    assert KEY.encode() not in body and KEY[:20].encode() not in body
    assert KEY not in str(headers)


async def test_a_key_echoed_in_a_mid_stream_error_event_never_reaches_the_client(make_upstream, start_gateway):
    bad, good = await make_upstream("openai", api_key=KEY), await make_upstream("openai")
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "b",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    }
    bad.default = Behaviour(events=[orjson.dumps(chunk), orjson.dumps({"error": {"message": f"key {KEY} over quota", "param": KEY}})])
    gw = await start_gateway(two_targets(bad, good))
    status, _, body = await post(gw.url, {**CHAT, "stream": True})
    assert status == 200 and b"hi" in body
    assert KEY.encode() not in body


@pytest.mark.parametrize(
    "answer",
    [
        Behaviour(raw=b'{"choices": "nope"}'),
        Behaviour(raw=b'{"id": "x", "choices": [{"index": 0, "message": null, "finish_reason": "stop"}]}'),
        Behaviour(raw=b"not json at all"),
    ],
    ids=["choices-not-a-list", "message-null", "not-json"],
)
async def test_a_200_that_is_no_completion_fails_over_to_the_next_target(make_upstream, start_gateway, answer):
    bad, good = await make_upstream("openai", api_key=KEY), await make_upstream("openai")
    bad.default = answer
    gw = await start_gateway(two_targets(bad, good))
    status, headers, body = await post(gw.url, CHAT)
    assert status == 200, body
    assert headers["x-router-trace"] == "bad/b=protocol, good/g=ok"
    assert orjson.loads(body)["choices"][0]["message"]["content"]


async def test_a_200_that_is_no_completion_with_nothing_left_is_a_502_in_openai_shape(make_upstream, start_gateway):
    bad = await make_upstream("openai", api_key=KEY)
    bad.default = Behaviour(raw=b'{"choices": "nope"}')
    gw = await start_gateway({"providers": {"bad": provider_entry(bad)}, "models": {"chat": {"targets": [{"provider": "bad", "model": "b"}]}}})
    status, _, body = await post(gw.url, CHAT)
    assert status == 502
    assert orjson.loads(body)["error"]["code"] == "all_upstreams_failed"


async def test_a_stream_whose_first_event_is_not_json_fails_over(make_upstream, start_gateway):
    bad, good = await make_upstream("openai", api_key=KEY), await make_upstream("openai")
    bad.default = Behaviour(events=[b"this is not json"])
    gw = await start_gateway(two_targets(bad, good))
    status, headers, body = await post(gw.url, {**CHAT, "stream": True})
    assert status == 200 and headers["x-router-trace"] == "bad/b=protocol, good/g=ok"
    assert body.rstrip().endswith(b"data: [DONE]")


@pytest.mark.parametrize("tokens", [1e308, 10**20, -5, "12"], ids=["1e308", "10**20", "negative", "string"])
async def test_nonsense_usage_is_a_200_charged_by_estimate_with_a_finite_cost(make_upstream, start_gateway, tmp_path, tokens):
    bad, good = await make_upstream("openai", api_key=KEY), await make_upstream("openai")
    bad.default = Behaviour(usage={"prompt_tokens": tokens, "completion_tokens": 5, "total_tokens": 7})
    ledger = tmp_path / "usage.db"
    gw = await start_gateway(two_targets(bad, good, ledger={"sinks": [{"kind": "sqlite", "path": str(ledger)}], "flush_interval": 0.02}))
    status, _, body = await post(gw.url, CHAT)
    assert status == 200
    usage = orjson.loads(body)["usage"]
    assert all(isinstance(usage[k], int) and 0 <= usage[k] < 10**9 for k in ("prompt_tokens", "completion_tokens", "total_tokens"))

    def row() -> Any:
        with sqlite3.connect(ledger) as db:
            return db.execute("SELECT usage_estimated, cost_micro_usd, prompt_tokens FROM usage").fetchone()

    found = await wait_for(row, timeout=5)
    estimated, cost, prompt = found
    assert estimated == 1 and 0 <= Decimal(cost) < 10**6 and 0 <= prompt < 10**6
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/metrics") as r:
        assert 'llm_router_upstream_usage_rejected_total{provider="bad"} 1.0' in await r.text()


async def raw_exchange(port: int, data: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(2000)) + b"\r\n", 431),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"k" * 60_000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", 400),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
    ],
    ids=["100KB-header", "2000-headers", "60KB-authorization", "long-request-line", "bad-chunk-framing", "length-and-chunked"],
)
async def test_what_aiohttp_cannot_parse_is_answered_in_openai_shape_with_one_log_line(spawn_gateway, request_bytes, status):
    gp = await spawn_gateway({"providers": {"m": {"kind": "mock"}}, "models": {"chat": {"targets": [{"provider": "m", "model": "x"}]}}})
    got, body = await raw_exchange(gp.port, request_bytes)
    assert got == status
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"].startswith("the request could not be read")
    await wait_for(lambda: any("could not read a request" in line for line in gp.output))
    assert "Traceback" not in "\n".join(gp.output)


async def test_a_client_trickling_its_body_gets_408_after_the_body_timeout(start_gateway):
    gw = await start_gateway(
        {"server": {"body_timeout": 0.3}, "providers": {"m": {"kind": "mock"}}, "models": {"chat": {"targets": [{"provider": "m", "model": "x"}]}}}
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model"')
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    body = await reader.readexactly(length)
    assert head.startswith(b"HTTP/1.1 408")
    assert orjson.loads(body)["error"]["code"] == "request_timeout"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection is closed: it holds nothing more
    writer.close()


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


async def test_a_48_mib_upstream_answer_is_a_502_with_bounded_memory_and_a_long_stream_still_streams(make_upstream, spawn_gateway):
    huge = await make_upstream("openai")
    huge.default = Behaviour(raw=b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "' + b"x" * (48 * 1024 * 1024) + b'"}}]}')
    gp = await spawn_gateway({"providers": {"huge": provider_entry(huge)}, "models": {"chat": {"targets": [{"provider": "huge", "model": "h"}]}}})
    status, _, body = await post(gp.url, CHAT)
    assert status == 502 and b"max_response_bytes" in body
    assert peak_rss_mb(gp.proc.pid) < 120  # the default cap is 8 MiB: the rest of the answer is never held
    huge.default = Behaviour(text="y" * 50_000)  # a stream is relayed as it comes, whatever its length
    status, _, body = await post(gp.url, {**CHAT, "stream": True})
    assert status == 200 and body.count(b"y") >= 50_000 and body.rstrip().endswith(b"[DONE]")
