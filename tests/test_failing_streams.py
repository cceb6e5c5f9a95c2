"""Streams and failures a client can trust (issue 12): each timeout means one thing, a broken
stream is a failure everywhere it is counted, and the trace names every candidate.

Every upstream here is a real HTTP server on loopback (tests/fakes/upstream.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.accounting.record import RequestRecord
from router.config import load_table
from router.logs import request_fields
from tests.conftest import ADMIN_HEADERS, provider_entry, wait_for
from tests.fakes.upstream import Behaviour

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def two_providers(first: Any, second: Any, *, first_timeouts: dict[str, float] | None = None, **alias: Any) -> dict[str, Any]:
    a = provider_entry(first, **({"timeouts": first_timeouts} if first_timeouts else {}))
    return {
        "providers": {"a": a, "b": provider_entry(second)},
        "models": {"chat": {"targets": [{"provider": "a", "model": "ma"}, {"provider": "b", "model": "mb"}], **alias}},
    }


async def stream(url: str, **extra: Any) -> tuple[int, dict[str, str], list[bytes], list[bytes]]:
    """(status, headers, data payloads, comment lines) of one streamed chat request."""
    body = {"model": "chat", "stream": True, **CHAT, **extra}
    data, comments = [], []
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body) as r:
        async for line in r.content:
            line = line.rstrip(b"\r\n")
            if line.startswith(b"data: "):
                data.append(line[6:])
            elif line.startswith(b":"):
                comments.append(line)
        return r.status, dict(r.headers), data, comments


def texts(events: list[bytes]) -> str:
    out = []
    for event in events:
        if event == b"[DONE]":
            continue
        for choice in orjson.loads(event).get("choices") or []:
            out.append((choice.get("delta") or {}).get("content") or "")
    return "".join(out)


def listen(gw: Any) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    gw.gateway.record_listeners.append(records.append)
    return records


async def test_a_slow_first_token_fails_over_to_the_next_target_before_anything_reached_the_client(make_upstream, start_gateway):
    slow, fast = await make_upstream("openai"), await make_upstream("openai")
    slow.then(Behaviour(first_delay=6, text="late"))
    fast.default = Behaviour(text="served by b")
    gw = await start_gateway(two_providers(slow, fast, first_timeouts={"first_token": 1}))
    started = time.monotonic()
    status, headers, events, _ = await stream(gw.url)
    elapsed = time.monotonic() - started
    assert status == 200 and texts(events) == "served by b" and events[-1] == b"[DONE]"
    assert headers["x-router-trace"] == "a/ma=first token timeout, b/mb=ok"
    assert elapsed < 4, f"the slow target was waited out ({elapsed:.1f} s)"


async def test_first_token_does_not_cut_a_whole_answer_that_takes_longer_than_idle(make_upstream, start_gateway):
    slow, spare = await make_upstream("openai"), await make_upstream("openai")
    slow.then(Behaviour(delay=3, text="worth the wait"))  # 3 s: longer than idle, shorter than first_token
    gw = await start_gateway(two_providers(slow, spare, first_timeouts={"first_token": 5, "idle": 0.5}))
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json={"model": "chat", **CHAT}) as r:
        body = await r.json()
        assert r.status == 200 and body["choices"][0]["message"]["content"] == "worth the wait"
        assert r.headers["x-router-trace"] == "a/ma=ok" and not spare.received


async def test_a_stream_that_stalls_past_idle_ends_with_an_error_event_and_is_a_stream_error(make_upstream, start_gateway, tmp_path):
    stalling, spare = await make_upstream("openai"), await make_upstream("openai")
    never = asyncio.Event()
    stalling.then(Behaviour(gate=never, text="one two three"))
    config = two_providers(stalling, spare, first_timeouts={"idle": 1})
    config["ledger"] = {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j")}
    gw = await start_gateway(config)
    records = listen(gw)
    started = time.monotonic()
    status, _, events, _ = await stream(gw.url)
    elapsed = time.monotonic() - started
    assert status == 200 and texts(events[:1]) == "one"
    error = orjson.loads(events[-1])["error"]
    assert "silent for 1 s" in error["message"] and elapsed < 4 and not spare.received
    await wait_for(lambda: records)
    line = request_fields(records[0])
    assert line["outcome"] == "stream_error" and line["error"] == "StreamStalled" and line["tried"] == ["chat -> a/ma: idle timeout mid-stream"]
    await assert_counted_as_stream_error(gw.url)


async def test_a_cut_stream_is_a_stream_error_in_the_log_line_usage_and_metrics(make_upstream, start_gateway, tmp_path):
    cut, spare = await make_upstream("openai"), await make_upstream("openai")
    cut.then(Behaviour(drop_after_first=True, text="one two"))
    config = two_providers(cut, spare)
    config["ledger"] = {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j")}
    gw = await start_gateway(config)
    records = listen(gw)
    status, _, events, _ = await stream(gw.url)
    assert status == 200 and "error" in orjson.loads(events[-1])
    await wait_for(lambda: records)
    line = request_fields(records[0])
    assert line["status"] == 200 and line["outcome"] == "stream_error" and line["error"] and len(line["tried"]) == 1
    await assert_counted_as_stream_error(gw.url)


async def assert_counted_as_stream_error(url: str) -> None:
    async def by_status() -> dict[str, int]:
        async with aiohttp.ClientSession() as s, s.get(url + "/v1/usage?from=1d&group_by=status", headers=ADMIN_HEADERS) as r:
            assert r.status == 200
            return {row["status"]: row["requests"] for row in (await r.json())["data"]}

    assert await wait_for(lambda: by_status()) == {"stream_error": 1}
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    counted = {s.labels["status"]: s.value for s in families["llm_router_requests"].samples if s.name == "llm_router_requests_total"}
    assert counted == {"stream_error": 1.0}


async def test_streamed_chunks_name_the_provider_entry_for_every_kind(make_upstream, start_gateway):
    for kind, op in (("openai", "chat"), ("forii", "chat"), ("interactive", "completion"), ("forefront", "chat")):
        up = await make_upstream(kind)
        entry = provider_entry(up)
        gw = await start_gateway({"providers": {"entry": entry}, "models": {"m": {"operations": [op], "targets": [{"provider": "entry", "model": "x"}]}}})
        path, body = ("/v1/chat/completions", CHAT) if op == "chat" else ("/v1/completions", {"prompt": "hi"})
        async with aiohttp.ClientSession() as s, s.post(gw.url + path, json={"model": "m", "stream": True, **body}) as r:
            payloads = [line[6:].strip() for line in (await r.read()).split(b"\n") if line.startswith(b"data: {")]
        chunks = [orjson.loads(p) for p in payloads]
        assert chunks and {c["provider"] for c in chunks} == {"entry"}, kind
        if kind == "interactive":
            assert {c.get("upstream_provider") for c in chunks} <= {"anthropic", None}


def test_timeouts_are_read_per_provider_and_overridden_per_target_and_read_is_a_deprecated_alias(tmp_path):
    config = {
        "providers": {"old": {"kind": "mock", "timeouts": {"read": 7, "connect": 2}}, "new": {"kind": "mock", "timeouts": {"first_token": 3}}},
        "models": {
            "chat": {"targets": [{"provider": "old", "model": "a"}, {"provider": "new", "model": "b", "timeouts": {"idle": 4}}]},
        },
        "auth": {"enabled": False},
    }
    path = tmp_path / "routes.yaml"
    path.write_text(orjson.dumps(config).decode())
    table = load_table(path)
    old, new = (t.timeouts for t in table.aliases["chat"].targets)
    assert (old.connect, old.first_token, old.idle, old.total) == (2, 7, 7, 600)
    assert (new.connect, new.first_token, new.idle, new.total) == (5, 3, 4, 600)
    assert table.providers["new"].timeouts.idle == 60  # the target's idle is its own
    checked = subprocess.run([sys.executable, "-m", "router", "check", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0
    assert "warning: providers.old.timeouts.read: is deprecated" in checked.stderr


async def test_every_candidate_answering_429_is_a_429_with_retry_after_that_the_openai_sdk_raises_as_rate_limit(make_upstream, start_gateway):
    a, b = await make_upstream("openai"), await make_upstream("openai")
    a.default = Behaviour(status=429, headers={"Retry-After": "7"})
    b.default = Behaviour(status=429, headers={"retry-after-ms": "2500"})
    gw = await start_gateway(two_providers(a, b))
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(model="chat", **CHAT)
    response = raised.value.response
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"  # the soonest: b's 2.5 s
    assert raised.value.code == "rate_limit_exceeded"
    assert response.headers["x-router-trace"] == "a/ma=status 429, b/mb=status 429"
    # Both now cool down: the next request is refused from shared state, before any I/O, with the same answer.
    with pytest.raises(openai.RateLimitError) as again:
        await client.chat.completions.create(model="chat", **CHAT)
    assert again.value.response.headers["x-router-trace"].count("skipped: cooldown") == 2
    assert 1 <= int(again.value.response.headers["Retry-After"]) <= 3
    assert len(a.received) == len(b.received) == 1
    await client.close()


async def test_a_failure_that_is_not_rate_is_still_a_5xx(make_upstream, start_gateway):
    a, b = await make_upstream("openai"), await make_upstream("openai")
    a.default, b.default = Behaviour(status=429), Behaviour(status=500)
    gw = await start_gateway(two_providers(a, b))
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json={"model": "chat", **CHAT}) as r:
        assert r.status == 502 and (await r.json())["error"]["code"] == "all_upstreams_failed"


async def test_the_trace_names_a_target_with_an_open_circuit_on_every_request(make_upstream, start_gateway):
    dead, good = await make_upstream("openai"), await make_upstream("openai")
    dead.default = Behaviour(status=503)
    config = two_providers(dead, good)
    config["providers"]["a"]["health"] = {"failure_threshold": 1, "cooldown": 60}
    gw = await start_gateway(config)
    traces = []
    for _ in range(4):
        async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json={"model": "chat", **CHAT}) as r:
            assert r.status == 200
            traces.append(r.headers["x-router-trace"])
    assert traces[0] == "a/ma=status 503, b/mb=ok"
    assert traces[1:] == ["a/ma=skipped: open circuit, b/mb=ok"] * 3
    assert len(dead.received) == 1


PRICE = {"input": 1, "output": 2}


def recovering(first: Any, second: Any, tmp_path: Any) -> dict[str, Any]:
    config = two_providers(first, second, first_timeouts={"idle": 1}, stream_recovery="continue")
    for target in config["models"]["chat"]["targets"]:
        target["price"] = PRICE
    config["ledger"] = {"sinks": [{"kind": "sqlite", "path": str(tmp_path / "u.db")}], "journal_dir": str(tmp_path / "j")}
    return config


async def test_stream_recovery_continues_a_stalled_stream_in_the_same_client_stream_and_charges_both(make_upstream, start_gateway, tmp_path):
    stalling, next_one = await make_upstream("openai"), await make_upstream("openai")
    stalling.then(Behaviour(gate=asyncio.Event(), text="Once upon"))
    next_one.then(Behaviour(text="a time."))
    gw = await start_gateway(recovering(stalling, next_one, tmp_path))
    records = listen(gw)
    status, headers, events, comments = await stream(gw.url, stream_options={"include_usage": True})
    assert status == 200 and events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks)
    assert texts(events) == "Oncea time."  # A's part, then B's continuation
    assert len({c["id"] for c in chunks}) == 1  # one stream, one id
    assert comments == [b": router continued the stream with b/mb after a/ma=idle timeout mid-stream"]
    asked = next_one.received[0].body["messages"]
    assert asked[-2] == {"role": "assistant", "content": "Once"} and asked[-1]["role"] == "user" and "Continue" in asked[-1]["content"]
    await wait_for(lambda: records)
    record = records[0]
    assert record.trace == "a/ma=idle timeout mid-stream, b/mb=continued" and record.status_label == "200"
    first, second = record.attempts
    assert first.usage is not None and second.usage is not None and first.cost > 0 and second.cost > 0
    usage = chunks[-1]["usage"]  # what the client sees counts both attempts' tokens
    assert usage["completion_tokens"] == first.usage.completion_tokens + second.usage.completion_tokens

    async def total() -> int:
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/v1/usage?from=1d", headers=ADMIN_HEADERS) as r:
            rows = (await r.json())["data"]
            return rows[0]["cost_micro_usd"] if rows and rows[0]["requests"] else 0

    assert await wait_for(total) == round(first.cost + second.cost)


async def test_a_recovery_nobody_can_take_ends_the_stream_with_the_error_event_as_stream_error(make_upstream, start_gateway, tmp_path):
    stalling, down = await make_upstream("openai"), await make_upstream("openai")
    stalling.then(Behaviour(gate=asyncio.Event(), text="Once upon"))
    down.default = Behaviour(status=503)
    gw = await start_gateway(recovering(stalling, down, tmp_path))
    records = listen(gw)
    status, _, events, _ = await stream(gw.url)
    assert status == 200 and texts(events[:1]) == "Once"
    assert "could not be continued" in orjson.loads(events[-1])["error"]["message"]
    await wait_for(lambda: records)
    assert records[0].status_label == "stream_error" and records[0].trace == "a/ma=idle timeout mid-stream, b/mb=status 503"


async def test_a_tool_call_stream_is_not_continued(make_upstream, start_gateway, tmp_path):
    broken, spare = await make_upstream("openai"), await make_upstream("openai")
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
    tool_chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "x", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
    broken.then(Behaviour(events=[orjson.dumps(tool_chunk), b'{"error": {"message": "overloaded"}}']))
    gw = await start_gateway(recovering(broken, spare, tmp_path))
    records = listen(gw)
    status, _, events, comments = await stream(gw.url)
    assert status == 200 and "overloaded" in orjson.loads(events[-1])["error"]["message"]
    assert not spare.received and not comments
    await wait_for(lambda: records)
    assert records[0].status_label == "stream_error" and records[0].trace == "a/ma=error event mid-stream"


async def test_an_error_event_before_any_content_fails_over(make_upstream, start_gateway):
    broken, good = await make_upstream("openai"), await make_upstream("openai")
    broken.then(Behaviour(events=[b'{"error": {"message": "model overloaded"}}']))
    gw = await start_gateway(two_providers(broken, good))
    status, headers, events, _ = await stream(gw.url)
    assert status == 200 and texts(events) == "Hello from openai"
    assert headers["x-router-trace"] == "a/ma=error event, b/mb=ok"


def test_stream_recovery_needs_another_candidate_to_continue_with(tmp_path):
    path = tmp_path / "routes.yaml"
    config = {"providers": {"m": {"kind": "mock"}}, "models": {"chat": {"stream_recovery": "continue", "targets": [{"provider": "m", "model": "a"}]}}}
    path.write_text(orjson.dumps(config).decode())
    checked = subprocess.run([sys.executable, "-m", "router", "check", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 1
    assert "models.chat.stream_recovery: continue needs a second target or a fallback alias" in checked.stderr


async def test_at_256_concurrent_streams_every_stall_is_continued_and_every_429_is_a_429(make_upstream, start_gateway, tmp_path):
    stalling, next_one = await make_upstream("openai"), await make_upstream("openai")
    stalling.default = Behaviour(gate=asyncio.Event(), text="Once upon")  # every stream stalls after its first chunk
    next_one.default = Behaviour(text="a time.")
    config = recovering(stalling, next_one, tmp_path)
    config["providers"]["a"]["health"] = {"failure_threshold": 1_000_000, "min_requests": 1_000_000}  # keep sending them to a
    gw = await start_gateway(config)
    records = listen(gw)
    connector = aiohttp.TCPConnector(limit=0)
    body = {"model": "chat", "stream": True, **CHAT}

    async def one(s: aiohttp.ClientSession) -> tuple[str, set[str], bool]:
        async with s.post(gw.url + "/v1/chat/completions", json=body) as r:
            events = [line[6:].strip() for line in (await r.read()).split(b"\n") if line.startswith(b"data: ")]
        chunks = [orjson.loads(e) for e in events if e != b"[DONE]"]
        return texts(events), {c["id"] for c in chunks if "id" in c}, events[-1] == b"[DONE]"

    async with aiohttp.ClientSession(connector=connector) as s:
        results = await asyncio.gather(*(one(s) for _ in range(256)))
    assert all(text == "Oncea time." and len(ids) == 1 and done for text, ids, done in results)
    await wait_for(lambda: len(records) == 256)
    assert {r.trace for r in records} == {"a/ma=idle timeout mid-stream, b/mb=continued"}
    assert {r.status_label for r in records} == {"200"}


async def test_at_256_concurrent_clients_every_candidate_429_is_a_429_never_a_5xx(make_upstream, start_gateway):
    a, b = await make_upstream("openai"), await make_upstream("openai")
    a.default = b.default = Behaviour(status=429, headers={"Retry-After": "2"})
    gw = await start_gateway(two_providers(a, b))

    async def one(s: aiohttp.ClientSession) -> tuple[int, str | None, str]:
        async with s.post(gw.url + "/v1/chat/completions", json={"model": "chat", **CHAT}) as r:
            return r.status, r.headers.get("Retry-After"), (await r.json())["error"]["code"]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        results = await asyncio.gather(*(one(s) for _ in range(256)))
    assert {status for status, _, _ in results} == {429}
    assert {code for _, _, code in results} == {"rate_limit_exceeded"} and all(1 <= int(wait or 0) <= 2 for _, wait, _ in results)


async def test_recovery_continues_a_stream_that_came_in_by_another_front_door(make_upstream, start_gateway, tmp_path):
    """The same continuation under the Messages and Responses APIs: one message / one response, both attempts' text."""
    stalling, next_one = await make_upstream("openai"), await make_upstream("openai")
    stalling.default = Behaviour(gate=asyncio.Event(), text="Once upon")
    next_one.default = Behaviour(text="a time.")
    gw = await start_gateway(recovering(stalling, next_one, tmp_path))
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0) as claude:
        async with claude.messages.stream(model="chat", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
            text = "".join([delta async for delta in stream.text_stream])
            message = await stream.get_final_message()
    assert text == "Oncea time." and message.content[0].text == text  # type: ignore[union-attr]
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        async with client.responses.stream(model="chat", input="hi") as responses:
            final = await responses.get_final_response()
    assert final.output_text == "Oncea time."
