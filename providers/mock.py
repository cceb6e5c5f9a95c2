"""The built-in ``mock`` provider: an OpenAI-compatible upstream that lives in the process.

It lets the quick start answer with no provider keys, and gives tests and the
benchmark a deterministic upstream.  The adapter is the OpenAI one (the mock
speaks OpenAI's wire format); ``MockUpstream`` is what the transport calls
instead of the network.  Options (``providers.<name>.options`` in routes.yaml):

    latency_ms         wait before the first byte (default 0)
    chunk_delay_ms     wait between streamed chunks (default 0)
    completion_tokens  words in every answer, one token each (default 12)
    fail_status        status of injected failures (default 503)
    fail_every         every Nth call fails with fail_status (default 0: never)

A request whose last message contains ``[mock-status NNN]`` is answered with
that status, for trying failover by hand.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from providers.base import UpstreamCall, estimate_prompt_tokens
from providers.openai import OpenAIAdapter

_WORDS = ("The", "gateway", "answered", "this", "from", "the", "built-in", "mock", "provider", "with", "no", "keys.")
_STATUS_DIRECTIVE = re.compile(r"\[mock-status (\d{3})\]")


class MockAdapter(OpenAIAdapter):
    kind = "mock"
    default_base_url = "mock://local"
    transport = "mock"  # answered in the process by MockUpstream, like httpx's MockTransport


class MockResponse:
    def __init__(self, status: int, body: bytes = b"", events: list[bytes] | None = None, chunk_delay: float = 0.0) -> None:
        self.status = status
        self.headers: Mapping[str, str] = {"content-type": "text/event-stream" if events is not None else "application/json"}
        self._body = body
        self._events = events
        self._chunk_delay = chunk_delay

    async def read(self) -> bytes:
        return self._body

    async def event_batches(self) -> AsyncIterator[list[bytes]]:
        if not self._chunk_delay:  # all of it is there at once, as from a fast upstream
            yield list(self._events or ())
            return
        for event in self._events or ():
            await asyncio.sleep(self._chunk_delay)
            yield [event]

    def close(self) -> None:
        pass


class MockUpstream:
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.latency = float(options.get("latency_ms", 0)) / 1000
        self.chunk_delay = float(options.get("chunk_delay_ms", 0)) / 1000
        self.completion_tokens = int(options.get("completion_tokens", 12))
        self.fail_status = int(options.get("fail_status", 503))
        self.fail_every = int(options.get("fail_every", 0))
        self.calls = 0

    def _injected_status(self, body: dict[str, Any]) -> int | None:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            return self.fail_status
        messages = body.get("messages")
        last = messages[-1].get("content") if isinstance(messages, list) and messages and isinstance(messages[-1], dict) else body.get("prompt")
        match = _STATUS_DIRECTIVE.search(last) if isinstance(last, str) else None
        return int(match.group(1)) if match else None

    async def send(self, call: UpstreamCall) -> MockResponse:
        body = orjson.loads(call.body)
        if self.latency:
            await asyncio.sleep(self.latency)
        status = self._injected_status(body)
        if status is not None and status >= 400:
            error = {"error": {"message": f"mock provider injected status {status}", "type": "mock_error", "param": None, "code": str(status)}}
            return MockResponse(status, orjson.dumps(error))
        chat = call.path.endswith("/chat/completions")
        words = [_WORDS[i % len(_WORDS)] for i in range(self.completion_tokens)]
        prompt_tokens = estimate_prompt_tokens(body)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
        ident = f"mock-{time.monotonic_ns()}"
        created = int(time.time())
        model = body.get("model", "mock")
        if not call.stream:
            choice: dict[str, Any] = (
                {"index": 0, "message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": "stop", "logprobs": None}
                if chat
                else {"index": 0, "text": " ".join(words), "finish_reason": "stop", "logprobs": None}
            )
            answer = {
                "id": ident,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
            return MockResponse(200, orjson.dumps(answer))
        kind = "chat.completion.chunk" if chat else "text_completion"
        events = []
        for i, word in enumerate(words):
            text = word if i == 0 else " " + word
            delta: dict[str, Any] = ({"role": "assistant", "content": text} if i == 0 else {"content": text}) if chat else {}
            choice = {"index": 0, "delta": delta, "finish_reason": None} if chat else {"index": 0, "text": text, "finish_reason": None}
            events.append(orjson.dumps({"id": ident, "object": kind, "created": created, "model": model, "choices": [choice]}))
        last = {"index": 0, "delta": {}, "finish_reason": "stop"} if chat else {"index": 0, "text": "", "finish_reason": "stop"}
        events.append(orjson.dumps({"id": ident, "object": kind, "created": created, "model": model, "choices": [last]}))
        events.append(orjson.dumps({"id": ident, "object": kind, "created": created, "model": model, "choices": [], "usage": usage}))
        return MockResponse(200, events=events, chunk_delay=self.chunk_delay)
