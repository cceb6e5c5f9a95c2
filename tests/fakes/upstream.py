"""Fake upstreams: one aiohttp server per provider kind, on loopback, following its doc.

Each checks what it receives (path, auth header, body fields the doc allows)
and answers in the shape its doc shows.  A test scripts it per request with
``Behaviour``s (a status, a delay, a gate to hold a stream, or a misbehaviour:
a raw body, raw stream events), and reads back what arrived in ``received``.

    kind         path (under its base URL)           doc
    openai       /v1/chat/completions, /v1/completions,  openai-compatible-chat.txt,
                 /v1/embeddings                       OpenAI's embeddings reference
    forii        /inference/v1/chat/completions       forii-chat-completions.txt
    forefront    /v1/chat/completions                 forefront-*.txt
    interactive  /api/v1/completions                  interactive-completions.txt
    azure        /openai/deployments/{deployment}/    Azure OpenAI's REST reference
                 {chat/completions,completions,embeddings}?api-version=...
    gemini       /v1beta/models/{model}:generateContent,   Google's Gemini API reference
                 :streamGenerateContent?alt=sse       (tests/fakes/gemini.py)
    anthropic    /v1/messages                         Anthropic's public Messages API reference

The anthropic kind answers in Anthropic's own shapes: a Message object, named
SSE events (message_start ... message_stop, usage in message_start and
message_delta, no [DONE]), and ``{"type": "error", "error": {type, message}}``
errors (529 is overloaded_error).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import responses as fake_responses
from tests.fakes.gemini import gemini_answer

BASE_PATHS = {"openai": "/v1", "forii": "/inference/v1", "forefront": "/v1", "interactive": "/api/v1", "azure": "", "gemini": "", "anthropic": ""}
# The GA and preview versions Azure's reference lists; any other api-version is a 404 there.
AZURE_API_VERSIONS = {"2024-02-01", "2024-06-01", "2024-10-21", "2024-12-01-preview", "2025-01-01-preview", "2025-04-01-preview"}
AZURE_FILTERS = {s: {"filtered": False, "severity": "safe"} for s in ("hate", "self_harm", "sexual", "violence")}
ANTHROPIC_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
}
# Anthropic's error type for each status its reference lists.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ANTHROPIC_TOOL_INPUT = {"city": "Paris", "unit": "celsius"}
FOREFRONT_FIELDS = {"model", "messages", "prompt", "max_tokens", "temperature", "temeperature", "stop"}
INTERACTIVE_FIELDS = {
    "model",
    "models",
    "prompt",
    "best_of",
    "echo",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "n",
    "presence_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "suffix",
    "temperature",
    "top_p",
    "user",
    "metadata",
    "response_format",
}


@dataclass
class Behaviour:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # an error body or a whole answer to send instead of the default
    delay: float = 0.0  # before the status line
    gate: asyncio.Event | None = None  # streams: held after the first chunk until set; others: held before the answer
    chunk_delay: float = 0.0
    usage: dict[str, Any] | None = None  # override the usage the answer reports
    text: str | None = None
    drop_after_first: bool = False  # streams: cut the connection after the first chunk
    first_delay: float = 0.0  # streams: headers at once, then this long before the first chunk
    # Misbehaviour, on purpose.  ``raw``: a whole 200 answer sent byte for byte (not JSON, say).
    # ``events``: a stream's SSE data payloads sent instead of the usual chunks (a good chunk,
    # then one that is not JSON, or an error object echoing the key), then ``[DONE]``.
    raw: bytes | None = None
    events: list[bytes] | None = None
    call_args: dict[str, Any] | None = None  # gemini: the arguments of the functionCall it answers with (default {})


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)  # when it arrived, for backoff assertions


class FakeUpstream:
    def __init__(self, kind: str, api_key: str = "sk-test-0123456789abcdef", model_prefix: str = "") -> None:
        assert kind in BASE_PATHS, kind
        self.kind = kind
        self.api_key = api_key
        self.received: list[Received] = []
        self.plan: list[Behaviour] = []
        self.default = Behaviour()
        self.disconnected = asyncio.Event()
        self.stream_started = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BASE_PATHS[self.kind]}"

    def then(self, *behaviours: Behaviour) -> FakeUpstream:
        self.plan.extend(behaviours)
        return self

    async def start(self) -> FakeUpstream:
        app = web.Application()
        base = BASE_PATHS[self.kind]
        if self.kind in ("openai", "forii", "forefront"):
            app.router.add_post(base + "/chat/completions", self._chat)
        if self.kind in ("openai", "interactive"):
            app.router.add_post(base + "/completions", self._completions)
        if self.kind == "openai":
            app.router.add_post(base + "/embeddings", self._embeddings)
            app.router.add_post(base + "/responses", self._responses)
        if self.kind == "azure":
            deployment = "/openai/deployments/{deployment}"
            app.router.add_post(deployment + "/chat/completions", self._chat)
            app.router.add_post(deployment + "/completions", self._completions)
            app.router.add_post(deployment + "/embeddings", self._embeddings)
        if self.kind == "gemini":
            app.router.add_post("/v1beta/models/{call}", self._gemini)
        if self.kind == "anthropic":
            app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- request checks, as the docs state them ------------------------------

    def _error(self, status: int, message: str, code: str = "invalid_request", param: str | None = None) -> web.Response:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        return web.json_response(body, status=status)

    def _refused(self, request: web.Request) -> web.Response | None:
        """A wrong key, or (Azure) an api-version its reference does not list, answered as the real API does."""
        if self.kind == "azure":
            if request.headers.get("api-key") != self.api_key:
                body = {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}}
                return web.json_response(body, status=401)
            if request.query.get("api-version") not in AZURE_API_VERSIONS:
                return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
            return None
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            # Real APIs echo part of a wrong key; the gateway must scrub it.
            got = request.headers.get("Authorization", "")
            return self._error(401, f"Incorrect API key provided: {got[7:]}", "invalid_api_key")
        return None

    async def _accept(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        refused = self._refused(request)
        if refused is not None:
            return None, refused
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            return None, self._error(415, "content-type must be application/json")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return None, self._error(400, "body is not JSON")
        self.received.append(Received(request.path, dict(request.headers), body))
        if not isinstance(body.get("model"), str) or not body["model"]:
            return None, self._error(400, "model is required", param="model")
        if "models" in body and self.kind != "interactive":
            return None, self._error(400, "unknown field models", param="models")
        return body, None

    def _next(self) -> Behaviour:
        return self.plan.pop(0) if self.plan else self.default

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._accept(request)
        if error is not None:
            return error
        assert body is not None
        if self.kind == "forefront":
            unknown = set(body) - FOREFRONT_FIELDS
            if unknown:
                return self._error(400, f"unknown fields {sorted(unknown)}")
            if "messages" not in body and not isinstance(body.get("prompt"), str):
                return self._error(400, "messages or prompt is required")
            if body.get("stream"):
                return self._error(400, "streaming is not supported")
        elif not isinstance(body.get("messages"), list):
            return self._error(400, "messages is required", param="messages")
        return await self._answer(request, body, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._accept(request)
        if error is not None:
            return error
        assert body is not None
        if self.kind == "interactive":
            unknown = set(body) - INTERACTIVE_FIELDS
            if unknown:
                return self._error(400, f"unknown fields {sorted(unknown)}")
        if not isinstance(body.get("prompt"), (str, list)):
            return self._error(400, "prompt is required", param="prompt")
        return await self._answer(request, body, chat=False)

    # -- answers --------------------------------------------------------------

    def _usage(self, behaviour: Behaviour) -> dict[str, Any]:
        if behaviour.usage is not None:
            return behaviour.usage
        if self.kind == "forefront":
            return {"input_tokens": 28, "output_tokens": 10, "total_tokens": 38}
        if self.kind == "interactive":
            return {"prompt_tokens": 9.0, "completion_tokens": 7.0, "total_tokens": 16.0}
        if self.kind == "forii":
            return {"prompt_tokens": 18, "completion_tokens": 156, "total_tokens": 174, "prompt_tokens_details": {"cached_tokens": 0}}
        return {
            "prompt_tokens": 20,
            "completion_tokens": 5,
            "total_tokens": 25,
            "completion_tokens_details": {"reasoning_tokens": 2},
            "cache_read_input_tokens": 4,
        }

    async def _answer(self, request: web.Request, body: dict[str, Any], chat: bool) -> web.StreamResponse:
        behaviour = self._next()
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.status >= 400:
            return web.json_response(behaviour.body or self._status_body(behaviour.status), status=behaviour.status, headers=behaviour.headers)
        text = behaviour.text or f"Hello from {self.kind}"
        ident = f"{self.kind}-{next(self._ids)}"
        if body.get("stream"):
            if behaviour.events is not None:
                return await self._raw_stream(request, behaviour)
            return await self._stream(request, body, behaviour, chat, text, ident)
        if behaviour.gate is not None:
            await behaviour.gate.wait()
        if behaviour.raw is not None:
            return web.Response(body=behaviour.raw, content_type="application/json", headers=behaviour.headers)
        if behaviour.body is not None:
            return web.json_response(behaviour.body, headers=behaviour.headers)
        usage = self._usage(behaviour)
        if self.kind == "forefront":
            answer: dict[str, Any] = {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": usage, "message": {"content": text}}
        elif chat:
            answer = {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            }
            if self.kind == "azure":  # Azure's content filtering, on the prompt and on each choice
                answer["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": AZURE_FILTERS}]
                answer["choices"][0]["content_filter_results"] = AZURE_FILTERS
        else:
            choice: dict[str, Any] = {"text": text, "index": 0.0, "logprobs": None, "finish_reason": "stop"}
            if self.kind == "interactive":
                choice.update(native_finish_reason="end_turn", reasoning="thought briefly")
            answer = {"id": ident, "object": "text_completion", "created": time.time(), "model": body["model"], "choices": [choice], "usage": usage}
            if self.kind == "interactive":
                answer["provider"] = "anthropic"
        return web.json_response(answer, headers=behaviour.headers)

    async def _stream(self, request: web.Request, body: dict[str, Any], behaviour: Behaviour, chat: bool, text: str, ident: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **behaviour.headers})
        await response.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"
        words = text.split(" ")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(piece: str | None, finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
            if chat:
                delta = {} if piece is None else {"content": piece}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": finish}
            data: dict[str, Any] = {"id": ident, "object": kind, "created": int(time.time()), "model": body["model"], "choices": [choice]}
            if usage is not None:
                data["usage"] = usage
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        try:
            if behaviour.first_delay:
                await asyncio.sleep(behaviour.first_delay)
            if self.kind == "azure":  # Azure's first chunk: no choices, the prompt's filter results, an empty model
                head = {"id": "", "object": "", "created": 0, "model": "", "choices": []}
                filters = [{"prompt_index": 0, "content_filter_results": AZURE_FILTERS}]
                await response.write(b"data: " + json.dumps({**head, "prompt_filter_results": filters}).encode() + b"\n\n")
            for i, word in enumerate(words):
                await response.write(chunk(word if i == 0 else " " + word))
                if i == 0:
                    self.stream_started.set()
                    if behaviour.drop_after_first:
                        assert request.transport is not None
                        request.transport.close()
                        return response
                    if behaviour.gate is not None:
                        await behaviour.gate.wait()
                if behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
            usage = self._usage(behaviour)
            if self.kind == "forii":
                # Forii's doc: usage rides on the final chunk, beside finish_reason.
                await response.write(chunk(None, "stop", usage))
            else:
                await response.write(chunk(None, "stop"))
                if include_usage:
                    await response.write(
                        b"data: "
                        + json.dumps({"id": ident, "object": kind, "created": int(time.time()), "model": body["model"], "choices": [], "usage": usage}).encode()
                        + b"\n\n"
                    )
            await response.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected.set()
            raise
        return response

    def _status_body(self, status: int) -> dict[str, Any]:
        if self.kind == "azure":
            return {"error": {"code": str(status), "message": f"fake azure says {status}"}}
        return {"error": {"message": f"fake {self.kind} says {status}", "type": "server_error", "param": None, "code": str(status)}}

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's Responses API (tests/fakes/responses.py), for providers declared to speak it natively."""
        body, error = await self._accept(request)
        if error is not None:
            return error
        assert body is not None
        behaviour = self._next()
        if behaviour.status >= 400:
            return web.json_response(behaviour.body or self._status_body(behaviour.status), status=behaviour.status, headers=behaviour.headers)
        text, ident = behaviour.text or f"Hello from {self.kind} responses", f"fake{next(self._ids)}"
        if not body.get("stream"):
            return web.json_response(fake_responses.response(body, text, ident), headers=behaviour.headers)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", **behaviour.headers})
        await stream.prepare(request)
        for event in fake_responses.events(body, text, ident):
            await stream.write(event)
        return stream

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's (and Azure's) embeddings: one vector per input, floats or base64 float32, usage prompt tokens only."""
        body, error = await self._accept(request)
        if error is not None:
            return error
        assert body is not None
        inputs = embedding_inputs(body.get("input"))
        if inputs is None:
            return self._error(400, "input must be a string, a list of strings or token-id lists", param="input")
        behaviour = self._next()
        if behaviour.status >= 400:
            return web.json_response(behaviour.body or self._status_body(behaviour.status), status=behaviour.status, headers=behaviour.headers)
        if behaviour.raw is not None:
            return web.Response(body=behaviour.raw, content_type="application/json")
        if behaviour.body is not None:
            return web.json_response(behaviour.body)
        dimensions = body.get("dimensions", 4)
        vectors = [[round(0.1 * (i + 1) * (d + 1), 6) for d in range(dimensions)] for i in range(len(inputs))]
        base64_wanted = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i, "embedding": float32_base64(v) if base64_wanted else v} for i, v in enumerate(vectors)]
        usage = behaviour.usage or {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}
        return web.json_response({"object": "list", "data": data, "model": body["model"], "usage": usage})

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        self.received.append(Received(request.path_qs, dict(request.headers), await _json_or_empty(request)))
        return await gemini_answer(self, request, self.received[-1].body, self._next())

    async def _raw_stream(self, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **behaviour.headers})
        await response.prepare(request)
        assert behaviour.events is not None
        for event in behaviour.events:
            await response.write(b"data: " + event + b"\n\n")
            self.stream_started.set()
        if self.kind not in ("gemini", "anthropic"):  # Gemini's streams just end; Anthropic's end with message_stop
            await response.write(b"data: [DONE]\n\n")
        return response

    # -- Anthropic's Messages API ------------------------------------------------

    def _anthropic_error(self, status: int, message: str) -> web.Response:
        kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-api-key") != self.api_key:
            return self._anthropic_error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._anthropic_error(400, "anthropic-version: header is required")
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            return self._anthropic_error(400, "content-type must be application/json")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._anthropic_error(400, "body is not JSON")
        self.received.append(Received(request.path, dict(request.headers), body))
        problem = self._messages_problem(body)
        if problem is not None:
            return self._anthropic_error(400, problem)
        behaviour = self._next()
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.status >= 400:
            if behaviour.body is not None:
                return web.json_response(behaviour.body, status=behaviour.status, headers=behaviour.headers)
            message = "Overloaded" if behaviour.status == 529 else f"fake anthropic says {behaviour.status}"
            return self._anthropic_error(behaviour.status, message)
        if body.get("stream"):
            if behaviour.events is not None:
                return await self._raw_stream(request, behaviour)
            return await self._message_stream(request, body, behaviour)
        if behaviour.gate is not None:
            await behaviour.gate.wait()
        if behaviour.raw is not None:
            return web.Response(body=behaviour.raw, content_type="application/json", headers=behaviour.headers)
        if behaviour.body is not None:
            return web.json_response(behaviour.body, headers=behaviour.headers)
        content, stop = self._message_content(body, behaviour)
        usage = {"output_tokens": 6, **self._anthropic_usage(behaviour)}
        message = {"id": f"msg_fake{next(self._ids)}", "type": "message", "role": "assistant", "model": body["model"], "content": content}
        message.update(stop_reason=stop, stop_sequence=None, usage=usage)
        return web.json_response(message, headers=behaviour.headers)

    @staticmethod
    def _messages_problem(body: Any) -> str | None:
        """What Anthropic's reference says makes a request invalid, in its words; None when it is fine."""
        if not isinstance(body, dict):
            return "body must be an object"
        unknown = set(body) - ANTHROPIC_FIELDS
        if unknown:
            return f"{sorted(unknown)[0]}: Extra inputs are not permitted"
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: Field required"
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return "max_tokens: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: Field required"
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                return f"messages.{i}.role: Input should be 'user' or 'assistant'"
            if i and messages[i - 1].get("role") == message["role"]:
                return "messages: roles must alternate between 'user' and 'assistant'"
        if isinstance(body.get("metadata"), dict) and set(body["metadata"]) - {"user_id"}:
            return "metadata: Extra inputs are not permitted"
        return None

    def _anthropic_usage(self, behaviour: Behaviour) -> dict[str, Any]:
        """Input-side usage; ``Behaviour.usage`` may set any Messages usage field (output_tokens, the cache counts)."""
        usage = {"input_tokens": 21, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        return {**usage, **(behaviour.usage or {})}

    def _message_content(self, body: dict[str, Any], behaviour: Behaviour) -> tuple[list[dict[str, Any]], str]:
        """A tool_use block when the request forces a tool; text otherwise (echoing a tool result it was given)."""
        choice = body.get("tool_choice") or {}
        if body.get("tools") and choice.get("type") in ("any", "tool"):
            name = choice.get("name") or body["tools"][0]["name"]
            return [{"type": "tool_use", "id": f"toolu_fake{next(self._ids)}", "name": name, "input": ANTHROPIC_TOOL_INPUT}], "tool_use"
        last = body["messages"][-1]["content"]
        results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"] if isinstance(last, list) else []
        if results and behaviour.text is None:
            said = results[0]["content"]
            text = said if isinstance(said, str) else "".join(b.get("text", "") for b in said)
            return [{"type": "text", "text": f"The tool said {text}"}], "end_turn"
        return [{"type": "text", "text": behaviour.text or "Hello from anthropic"}], "end_turn"

    async def _message_stream(self, request: web.Request, body: dict[str, Any], behaviour: Behaviour) -> web.StreamResponse:
        """The documented event sequence: message_start, a ping, each block's start/deltas/stop, message_delta, message_stop."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **behaviour.headers})
        await response.prepare(request)
        content, stop = self._message_content(body, behaviour)
        usage = self._anthropic_usage(behaviour)
        output = usage.pop("output_tokens", 6)
        start = {"id": f"msg_fake{next(self._ids)}", "type": "message", "role": "assistant", "model": body["model"], "content": []}
        start.update(stop_reason=None, stop_sequence=None, usage={**usage, "output_tokens": 1})

        async def send(kind: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())

        try:
            await send("message_start", {"message": start})
            await send("ping", {})
            for index, block in enumerate(content):
                await self._stream_block(send, index, block, behaviour)
                if behaviour.drop_after_first:
                    assert request.transport is not None
                    request.transport.close()
                    return response
            await send("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": output}})
            await send("message_stop", {})
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected.set()
            raise
        return response

    async def _stream_block(self, send: Any, index: int, block: dict[str, Any], behaviour: Behaviour) -> None:
        if block["type"] == "tool_use":
            await send("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
            arguments = json.dumps(block["input"])
            pieces = [arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]]
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
        else:
            await send("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            words = block["text"].split(" ")
            deltas = [{"type": "text_delta", "text": word if i == 0 else " " + word} for i, word in enumerate(words)]
        for i, delta in enumerate(deltas):
            await send("content_block_delta", {"index": index, "delta": delta})
            if i == 0:
                self.stream_started.set()
                if behaviour.gate is not None:
                    await behaviour.gate.wait()
            if behaviour.chunk_delay:
                await asyncio.sleep(behaviour.chunk_delay)
        await send("content_block_stop", {"index": index})


def embedding_inputs(raw: Any) -> list[Any] | None:
    """The inputs of an embeddings request, one per vector; ``None`` for what OpenAI refuses."""
    if isinstance(raw, str) and raw:
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        return [raw]
    if isinstance(raw, list) and raw and all((isinstance(x, str) and x) or (isinstance(x, list) and x) for x in raw):
        return list(raw)
    return None


def float32_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def _json_or_empty(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
