"""The built-in ``mock`` provider: an OpenAI-compatible upstream that lives in the process.

It lets the quick start answer with no provider keys, and gives tests and the
benchmark a deterministic upstream.  The adapter is the OpenAI one (the mock
speaks OpenAI's wire format); ``MockUpstream`` is what the transport calls
instead of the network.  Options (``providers.<name>.options`` in routes.yaml):

    latency_ms         wait before the first byte (default 0)
    chunk_delay_ms     wait between streamed chunks (default 0)
    completion_tokens  words in a plain text answer, one token each (default 12)
    fail_status        status of injected failures (default 503)
    fail_every         every Nth call fails with fail_status (default 0: never)

Embeddings (``POST /embeddings``) are deterministic unit vectors drawn from a
hash of each input (a string, or a token-id list), ``dimensions`` long
(default 8), as float lists or, with ``encoding_format: base64``,
little-endian float32 bytes in base64 as OpenAI sends them; usage is
``estimate_prompt_tokens`` of the request, prompt tokens only.

A request whose last message (its text, or any of its text parts; an
embedding's first string input) contains ``[mock-status NNN]`` is answered with that status, for trying failover by hand.

It answers the way a model does, so that client libraries built on tool
calls and structured output (LangChain's ``bind_tools`` and
``with_structured_output``, the openai SDK's ``parse``, instructor) work
against the quick start unchanged:

    tools, tool_choice  a tool call when tool_choice is "required" or names a
                        function, or is "auto" (the default) and the last
                        message is the user's; text for "none" and right after
                        a tool result, text that quotes the result.  The
                        arguments are an instance of the function's
                        ``parameters`` schema (providers/mock_schema.py); the
                        tool is the one whose name the user's last message
                        mentions most (get_weather: "weather"), else the
                        first.  finish_reason "tool_calls".
    response_format     json_object: a JSON object, an instance of the JSON
                        schema the prompt contains if it has one (as
                        instructor's and LangChain's JSON modes put it there),
                        else {"answer": <text>}; json_schema: an instance of
                        the schema.
    n                   n identical choices, indexes 0..n-1, streamed too.
    stop                the answer is cut before the first stop sequence.
    max_tokens,         the answer is cut to that many tokens, finish_reason
    max_completion_tokens   "length" (as a model's, JSON so cut is invalid).

A token is a word of text, or four characters of JSON (structured content,
a tool call's arguments); streams send one token a chunk, and usage counts
exactly the tokens sent, over all choices.  The same request gets the same
answer (ids and timestamps aside; a tool call's id is a digest of the request).
Streamed tool calls come as OpenAI sends them: a first delta with the call's
index, id, type, name and empty arguments, then the arguments in fragments.
A request the real API would refuse (``tool_choice`` naming a function that
is not in ``tools``, or "required" with no tools; ``n`` of 0) gets a 400 in
OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import struct
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from providers.base import UpstreamCall, estimate_prompt_tokens
from providers.mock_schema import instance_of
from providers.openai import OpenAIAdapter

_WORDS = ("The", "gateway", "answered", "this", "from", "the", "built-in", "mock", "provider", "with", "no", "keys.")
_STATUS_DIRECTIVE = re.compile(r"\[mock-status (\d{3})\]")
# JSON is produced four characters a token: the gateway's own rule for guessing token counts.
_JSON_TOKEN_CHARS = 4
# Attempts at finding a JSON schema in one message: prompts are the client's, and may be large.
_SCHEMA_SEARCH_TRIES = 200
# Small vectors by default: the mock's embeddings are for trying the plumbing, not for search quality.
DEFAULT_DIMENSIONS = 8
MAX_DIMENSIONS = 4096


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


class _Refused(Exception):
    """A request the real API answers with a 400; the mock says so in the same words."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class _ToolCall:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class _Answer:
    """One choice: its tokens (the content, or the tool call's arguments), the call if it is one, why it ended."""

    tokens: list[str]
    tool_call: _ToolCall | None
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(self.tokens)


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
        messages = _messages(body)
        last = _text_of(messages[-1]) if messages else body.get("prompt", _first_string(body.get("input")))
        match = _STATUS_DIRECTIVE.search(last) if isinstance(last, str) else None
        return int(match.group(1)) if match else None

    async def send(self, call: UpstreamCall) -> MockResponse:
        body = orjson.loads(call.body)
        if self.latency:
            await asyncio.sleep(self.latency)
        status = self._injected_status(body)
        if status is not None and status >= 400:
            return _error(status, f"mock provider injected status {status}", "mock_error", None)
        if call.path.endswith("/embeddings"):
            return _embeddings(body)
        chat = call.path.endswith("/chat/completions")
        try:
            answers = _answers(body, chat, self.completion_tokens)
        except _Refused as exc:
            return _error(400, str(exc), "invalid_request_error", exc.param)
        prompt_tokens = estimate_prompt_tokens(body)
        completion = sum(len(answer.tokens) for answer in answers)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}
        kind = ("chat.completion.chunk" if call.stream else "chat.completion") if chat else "text_completion"
        head = {"id": f"mock-{time.monotonic_ns()}", "object": kind, "created": int(time.time()), "model": body.get("model", "mock")}
        if not call.stream:
            choices = [_whole_choice(i, answer, chat) for i, answer in enumerate(answers)]
            return MockResponse(200, orjson.dumps({**head, "choices": choices, "usage": usage}))
        return MockResponse(200, events=_events(head, answers, chat, usage), chunk_delay=self.chunk_delay)


def _error(status: int, message: str, kind: str, param: str | None) -> MockResponse:
    return MockResponse(status, orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": str(status)}}))


# -- embeddings -------------------------------------------------------------


def _embeddings(body: dict[str, Any]) -> MockResponse:
    """An OpenAI embedding list for the request's inputs, or the 400 OpenAI gives a request it refuses."""
    try:
        inputs, dimensions, encoding = _embedding_request(body)
    except _Refused as exc:
        return _error(400, str(exc), "invalid_request_error", exc.param)
    data = [{"object": "embedding", "index": i, "embedding": _encoded(_vector(item, dimensions), encoding)} for i, item in enumerate(inputs)]
    tokens = estimate_prompt_tokens(body)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return MockResponse(200, orjson.dumps({"object": "list", "data": data, "model": body.get("model", "mock"), "usage": usage}))


def _embedding_request(body: dict[str, Any]) -> tuple[list[str | list[int]], int, str]:
    """The inputs (one per vector), the vector length and the encoding, checked as OpenAI checks them."""
    raw = body.get("input")
    if isinstance(raw, str) or _is_token_list(raw):
        inputs: list[str | list[int]] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(item, str) or _is_token_list(item) for item in raw):
        inputs = list(raw)
    else:
        raise _Refused("input", "input must be a string, a list of strings, a token-id list or a list of token-id lists")
    if any(item == "" or item == [] for item in inputs):
        raise _Refused("input", "input must not be empty")
    dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= MAX_DIMENSIONS:
        raise _Refused("dimensions", f"dimensions must be an integer from 1 to {MAX_DIMENSIONS}")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _Refused("encoding_format", "encoding_format must be 'float' or 'base64'")
    return inputs, dimensions, encoding


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _first_string(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    return next((v for v in value if isinstance(v, str)), None) if isinstance(value, list) else None


def _vector(item: str | list[int], dimensions: int) -> list[float]:
    """A unit vector from the input's hash: the same input always gets the same vector, others point elsewhere."""
    seed = item.encode() if isinstance(item, str) else orjson.dumps(item)
    raw = struct.unpack(f"<{dimensions}I", hashlib.shake_256(seed).digest(4 * dimensions))
    values = [x / 0xFFFFFFFF * 2 - 1 for x in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Rounded through float32, so the float and base64 forms of one vector are the same numbers.
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in values))))


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


# -- what to answer ---------------------------------------------------------


def _answers(body: dict[str, Any], chat: bool, words: int) -> list[_Answer]:
    """The request's n choices, all alike but for their tool call ids."""
    n = _choice_count(body)
    tool = _chosen_tool(body) if chat else None
    if tool is not None:
        arguments = _json_tokens(_arguments(tool))
        return [_finished(arguments, body, _ToolCall(_call_id(body, i), tool["name"]), "tool_calls") for i in range(n)]
    text = _reply_text(body, words) if chat else _default_text(words)
    structured = _structured(body, text) if chat else None
    tokens = _word_tokens(text) if structured is None else _json_tokens(structured)
    return [_finished(tokens, body, None, "stop") for _ in range(n)]


def _choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _Refused("n", "n must be an integer of at least 1")
    return n


def _finished(tokens: list[str], body: dict[str, Any], call: _ToolCall | None, natural: str) -> _Answer:
    """Cut at a stop sequence (content only: a model's stop sequences never cut a tool call), then at the token limit."""
    stopped = False
    if call is None:
        tokens, stopped = _cut_at_stop(tokens, _stop_sequences(body))
    limit = _token_limit(body)
    if limit is not None and len(tokens) > limit:
        return _Answer(tokens[:limit], call, "length")
    return _Answer(tokens, call, "stop" if stopped else natural)


def _stop_sequences(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    found = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    return [s for s in found if isinstance(s, str) and s]


def _token_limit(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _cut_at_stop(tokens: list[str], stops: list[str]) -> tuple[list[str], bool]:
    """The tokens before the first stop sequence (the one it cuts into shortened); whether one was found."""
    text = "".join(tokens)
    cuts = [text.find(s) for s in stops if s in text]
    if not cuts:
        return tokens, False
    cut, kept, used = min(cuts), [], 0
    for token in tokens:
        if used >= cut:
            break
        kept.append(token[: cut - used])
        used += len(token)
    return kept, True


def _word_tokens(text: str) -> list[str]:
    words = text.split()
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def _json_tokens(value: Any) -> list[str]:
    text = orjson.dumps(value).decode()
    return [text[i : i + _JSON_TOKEN_CHARS] for i in range(0, len(text), _JSON_TOKEN_CHARS)]


def _default_text(words: int) -> str:
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(words))


# -- messages ---------------------------------------------------------------


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _text_of(message: dict[str, Any]) -> str:
    """A message's text: its content string, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _reply_text(body: dict[str, Any], words: int) -> str:
    """Right after tool results, a sentence quoting them (what an agent's next turn needs); else the usual words."""
    messages = _messages(body)
    results = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.append(message)
    if not results:
        return _default_text(words)
    names = {call.get("id"): call.get("function", {}).get("name") for m in messages for call in m.get("tool_calls") or () if isinstance(call, dict)}
    said = [f"The tool {names.get(m.get('tool_call_id')) or 'call'} returned: {_text_of(m)}" for m in reversed(results)]
    return " ".join(said)


# -- tools ------------------------------------------------------------------


def _function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    found = [t.get("function") for t in tools if isinstance(t, dict) and t.get("type", "function") == "function"] if isinstance(tools, list) else []
    return [f for f in found if isinstance(f, dict) and isinstance(f.get("name"), str)]


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function the model calls, per ``tool_choice``; ``None`` for a text answer."""
    tools = _function_tools(body)
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        named = next((t for t in tools if t["name"] == name), None)
        if named is None:
            raise _Refused("tool_choice", f"tool_choice names the function {name!r}, which is not in tools")
        return named
    if choice == "required" and not tools:
        raise _Refused("tool_choice", "tool_choice 'required' needs tools")
    if not tools or choice == "none":
        return None
    messages = _messages(body)
    if choice != "required" and not (messages and messages[-1].get("role") == "user"):
        return None
    asked = set(re.findall(r"[a-z0-9]+", _text_of(messages[-1]).lower())) if messages else set()
    return max(tools, key=lambda tool: len(_name_words(tool["name"]) & asked))  # the first of the best


def _name_words(name: str) -> set[str]:
    """``get_weather`` and ``GetWeather`` are both {"get", "weather"}: what a user's message may mention."""
    return {word.lower() for word in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+", name)}


def _arguments(tool: dict[str, Any]) -> dict[str, Any]:
    """An instance of the function's parameters; a function without any takes ``{}``."""
    parameters = tool.get("parameters")
    value = instance_of(parameters) if isinstance(parameters, dict) else {}
    return value if isinstance(value, dict) else {}


def _call_id(body: dict[str, Any], index: int) -> str:
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS) + b"#%d" % index).hexdigest()
    return "call_" + digest[:24]


# -- structured output ------------------------------------------------------


def _structured(body: dict[str, Any], text: str) -> Any | None:
    """The JSON value ``response_format`` asks for; ``None`` for plain text."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return instance_of(schema) if isinstance(schema, dict) else _json_object(body, text)
    return _json_object(body, text) if kind == "json_object" else None


def _json_object(body: dict[str, Any], text: str) -> dict[str, Any]:
    """JSON mode: an instance of the last schema the prompt shows, as a model told "answer in this shape" would give."""
    schemas = [schema for message in _messages(body) for schema in _schemas_in(_text_of(message))]
    value = instance_of(schemas[-1]) if schemas else None
    return value if isinstance(value, dict) else {"answer": text}


def _schemas_in(text: str) -> list[dict[str, Any]]:
    """The JSON objects in ``text`` that look like object schemas, in order."""
    decoder = json.JSONDecoder()
    found, start, tries = [], text.find("{"), 0
    while start != -1 and tries < _SCHEMA_SEARCH_TRIES:
        tries += 1
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if _looks_like_schema(value):
            found.append(value)
        start = text.find("{", end)
    return found


def _looks_like_schema(value: Any) -> bool:
    """An object schema: ``properties`` maps names to schemas (LangChain's prompt also shows a non-schema with ``properties``)."""
    properties = value.get("properties") if isinstance(value, dict) else None
    return isinstance(properties, dict) and bool(properties) and all(isinstance(p, dict) for p in properties.values())


# -- the wire ---------------------------------------------------------------


def _whole_choice(index: int, answer: _Answer, chat: bool) -> dict[str, Any]:
    if not chat:
        return {"index": index, "text": answer.text, "finish_reason": answer.finish_reason, "logprobs": None}
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.tool_call is not None:
        call = answer.tool_call
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call.id, "type": "function", "function": {"name": call.name, "arguments": answer.text}}],
        }
    return {"index": index, "message": message, "finish_reason": answer.finish_reason, "logprobs": None}


def _deltas(answer: _Answer) -> list[dict[str, Any]]:
    """A chat choice's deltas, one token each; a tool call opens with its id and name, as OpenAI streams it."""
    call = answer.tool_call
    if call is None:
        tokens = answer.tokens or [""]
        return [{"role": "assistant", "content": tokens[0]}] + [{"content": token} for token in tokens[1:]]
    opening = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
    return [{"role": "assistant", "content": None, "tool_calls": [opening]}] + [
        {"tool_calls": [{"index": 0, "function": {"arguments": token}}]} for token in answer.tokens
    ]


def _stream_choices(answers: list[_Answer], chat: bool) -> list[list[dict[str, Any]]]:
    if chat:
        return [[{"index": i, "delta": delta, "finish_reason": None} for delta in _deltas(answer)] for i, answer in enumerate(answers)]
    return [[{"index": i, "text": token, "finish_reason": None} for token in answer.tokens] for i, answer in enumerate(answers)]


def _events(head: dict[str, Any], answers: list[_Answer], chat: bool, usage: dict[str, Any]) -> list[bytes]:
    """The choices' chunks interleaved (as OpenAI streams n > 1), each choice's finish, then the usage."""
    per_choice = _stream_choices(answers, chat)
    steps = max(map(len, per_choice), default=0)
    chunks = [choices[step] for step in range(steps) for choices in per_choice if step < len(choices)]
    ending = {"delta": {}} if chat else {"text": ""}
    chunks += [{"index": i, **ending, "finish_reason": answer.finish_reason} for i, answer in enumerate(answers)]
    events = [orjson.dumps({**head, "choices": [choice]}) for choice in chunks]
    events.append(orjson.dumps({**head, "choices": [], "usage": usage}))
    return events
