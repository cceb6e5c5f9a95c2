"""What every provider adapter is: a pure translator between the OpenAI shape and one upstream API.

An adapter turns the client's parsed request into the upstream's path and
body, and the upstream's answer (whole or one SSE event at a time) back into
the OpenAI shape plus a normalised ``Usage``.  It does no I/O: the transport
(``router/transport.py``) sends what it builds, so adapters are tested with
JSON in, JSON out.  Prices are applied centrally, never here.

Upstream answers are not trusted.  A 200 whose body is not a chat or text
completion, and a stream event that is not a JSON object, raise
``BadAnswer`` (the gateway treats it as an upstream protocol error); so
does an embeddings 200 that is not OpenAI's embedding list.  Token
counts must be non-negative integers no larger than ``MAX_TOKENS``; any
other value rejects the whole usage: the reader returns ``None`` and sets
``ResponseContext.usage_rejected``, and the gateway charges its estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from providers.operations import Operation

# Request fields the gateway itself consumes; never forwarded, never a reason
# to skip a target.
GATEWAY_FIELDS = frozenset({"model", "models", "stream", "stream_options", "max_price", "route"})

# No single call uses a billion tokens; a count above it is an upstream bug
# (1e308 once priced as a 500 with six tracebacks).
MAX_TOKENS = 10**9


class BadAnswer(ValueError):
    """An upstream's 200 (or stream event) is not in the shape its operation promises.

    The message says what is wrong in a few words; it never quotes the body.
    """


class BadUsage(ValueError):
    """A token count that is not a non-negative integer within ``MAX_TOKENS``."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    operations: frozenset[Operation]
    # Operations the upstream can stream itself; others get a stream
    # synthesised by the gateway from the whole response.
    streams: frozenset[Operation]
    # Client fields the upstream understands; ``None`` passes every field on.
    params: frozenset[str] | None = None
    # Fields that are dropped silently rather than making the target
    # ineligible (attribution fields the upstream has no slot for).
    drops: frozenset[str] = frozenset()
    # The upstream continues a trailing assistant message (prefill); mid-stream
    # recovery then sends the partial answer alone, with no continuation prompt.
    prefill: bool = False

    def unsupported_param(self, body: dict[str, Any]) -> str | None:
        if self.params is None:
            return None
        for name in body:
            if name not in self.params and name not in GATEWAY_FIELDS and name not in self.drops:
                return name
        return None


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total(self) -> int:
        """The total as reported, or prompt + completion when the provider gave none."""
        return self.total_tokens or self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total,
        }
        if self.cached_tokens or self.cache_write_tokens:
            details: dict[str, int] = {"cached_tokens": self.cached_tokens}
            if self.cache_write_tokens:
                details["cache_write_tokens"] = self.cache_write_tokens
            out["prompt_tokens_details"] = details
        if self.reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out


def token_count(value: Any) -> int:
    """One reported token count; ``None`` (the field left out) is 0.  Raise ``BadUsage`` for anything else odd."""
    if value is None:
        return 0
    # bool is an int subclass: ``true`` tokens is nonsense, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadUsage(f"a token count is a {type(value).__name__}")
    if isinstance(value, float):
        # Interactive's schema types token counts as doubles: 12.0 is fine, 12.5, inf and NaN are not.
        if not value.is_integer():
            raise BadUsage("a token count is not an integer")
        value = int(value)
    if not 0 <= value <= MAX_TOKENS:
        raise BadUsage(f"a token count is out of range 0..{MAX_TOKENS}")
    return value


def checked_usage(read: Callable[[dict[str, Any]], Usage], raw: Any, ctx: ResponseContext | None) -> Usage | None:
    """``read(raw)`` for a usage object; ``None`` when there is none, or when a count is nonsense (flagged on ``ctx``)."""
    if not isinstance(raw, dict):
        return None
    try:
        return read(raw)
    except BadUsage:
        if ctx is not None:
            ctx.usage_rejected = True
        return None


def _read_openai_usage(raw: dict[str, Any]) -> Usage:
    prompt = token_count(raw.get("prompt_tokens"))
    completion = token_count(raw.get("completion_tokens"))
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    cached = token_count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    cached = cached or token_count(raw.get("cache_read_input_tokens"))
    cache_write = token_count(raw.get("cache_creation_input_tokens"))
    if not cache_write and isinstance(prompt_details, dict):
        cache_write = token_count(prompt_details.get("cache_write_tokens"))
    reasoning = token_count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=token_count(raw.get("total_tokens")) or prompt + completion,
        cached_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


def usage_from_openai(raw: Any, ctx: ResponseContext | None = None) -> Usage | None:
    """Normalise an OpenAI-style usage object, including the cache fields some hosts add.

    ``None`` when there is no usage object, or when any count in it is
    nonsense; then ``ctx.usage_rejected`` is set, so the gateway charges its
    estimate and says so.
    """
    return checked_usage(_read_openai_usage, raw, ctx)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A prompt's size in tokens before any provider has counted it: four characters a token.

    One rule for every guess the gateway makes (limits and budgets before a
    call, the ledger where a provider reported nothing, the mock's usage).
    """
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
    elif "input" in body:
        return max(1, _input_tokens(body["input"]))
    else:
        chars = len(str(body.get("prompt", "")))
    return max(1, chars // 4)


def _input_tokens(value: Any) -> int:
    """An embedding request's ``input``: each string at four characters a token (at least one), token-id lists exactly."""
    if isinstance(value, str):
        return max(1, len(value) // 4)
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return len(value)
    if isinstance(value, list):
        return sum(_input_tokens(v) for v in value)
    return len(str(value)) // 4


def _read_embedding_usage(raw: dict[str, Any]) -> Usage:
    # An embedding generates nothing: a reported completion count is not billed as output.
    prompt = token_count(raw.get("prompt_tokens"))
    return Usage(prompt_tokens=prompt, total_tokens=token_count(raw.get("total_tokens")) or prompt)


def usage_from_embedding(raw: Any, ctx: ResponseContext | None = None) -> Usage | None:
    """An OpenAI embedding's usage (``prompt_tokens``, ``total_tokens``); ``None`` as ``usage_from_openai`` says."""
    return checked_usage(_read_embedding_usage, raw, ctx)


@dataclass(slots=True)
class ResponseContext:
    """What the gateway knows about an attempt that an adapter needs to label its output.

    ``usage_rejected`` is the one thing an adapter writes back: the upstream
    reported usage and it was nonsense (see ``token_count``).
    """

    provider: str
    model: str
    request_id: str
    created: int
    include_usage: bool = False
    usage_rejected: bool = False


@dataclass(slots=True)
class UpstreamCall:
    """An attempt as the adapter built it: where to send what."""

    path: str
    body: bytes
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 5.0  # the target's timeouts.connect, set by the gateway (the other timeouts are its own)


class StreamTranslator:
    """Turns the upstream's SSE events into client chunks, one event at a time.

    ``translate`` returns the client chunk's JSON bytes, or ``None`` to drop
    the event.  Usage seen in any event is kept in ``usage``; it reaches the
    client only when the client asked (``stream_options.include_usage``).
    """

    def __init__(self, ctx: ResponseContext) -> None:
        self.ctx = ctx
        self.usage: Usage | None = None
        self.text_parts: list[str] = []

    def translate(self, data: bytes) -> bytes | None:
        raise NotImplementedError

    def finish(self) -> list[bytes]:
        """Chunks to send after the upstream's last event (before ``[DONE]``)."""
        return []

    def framed(self, data: bytes) -> bytes:
        """An event passed through to a client of the upstream's own API, as SSE (a native stream: see ``Adapter.native_doors``)."""
        return b"data: " + data + b"\n\n"


def event_object(data: bytes) -> dict[str, Any]:
    """One stream event's JSON object; ``BadAnswer`` when it is not JSON or not an object."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadAnswer("a stream event is not JSON") from None
    if not isinstance(event, dict):
        raise BadAnswer(f"a stream event is a JSON {_kind(event)}, not an object")
    return event


def check_completion(op: Operation, payload: Any) -> None:
    """Raise ``BadAnswer`` unless ``payload`` is a chat completion (or a text completion for COMPLETION).

    As strict as OpenAI-compatible APIs allow: ``choices`` is a non-empty list
    of objects; a chat choice has a ``message`` object whose ``content`` is a
    string, or is null (or absent) only beside ``tool_calls``, ``function_call``
    or ``refusal``; a text choice has a string ``text``.
    """
    if not isinstance(payload, dict):
        raise BadAnswer(f"the answer is a JSON {_kind(payload)}, not an object")
    choices = payload.get("choices")
    if not isinstance(choices, list):
        raise BadAnswer("the answer has no choices list" if choices is None else f"choices is a {_kind(choices)}, not a list")
    if not choices:
        raise BadAnswer("choices is empty")
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise BadAnswer(f"choices[{i}] is a {_kind(choice)}, not an object")
        if op is Operation.CHAT:
            _check_message(choice.get("message"), i)
        elif not isinstance(choice.get("text"), str):
            raise BadAnswer(f"choices[{i}].text is a {_kind(choice.get('text'))}, not a string")


def check_embeddings(payload: Any) -> None:
    """Raise ``BadAnswer`` unless ``payload`` is an OpenAI embedding list.

    ``data`` is a non-empty list of ``{"object": "embedding", "index": int,
    "embedding": [numbers] | "base64"}``: what a client library decodes
    without looking, so anything else must fail over rather than reach it.
    """
    if not isinstance(payload, dict):
        raise BadAnswer(f"the answer is a JSON {_kind(payload)}, not an object")
    data = payload.get("data")
    if not isinstance(data, list):
        raise BadAnswer("the answer has no data list" if data is None else f"data is a {_kind(data)}, not a list")
    if not data:
        raise BadAnswer("data is empty")
    for i, item in enumerate(data):
        _check_embedding(item, i)


def _check_embedding(item: Any, i: int) -> None:
    if not isinstance(item, dict):
        raise BadAnswer(f"data[{i}] is a {_kind(item)}, not an object")
    if item.get("object") != "embedding":
        raise BadAnswer(f"data[{i}].object is not 'embedding'")
    index = item.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise BadAnswer(f"data[{i}].index is a {_kind(index)}, not a non-negative integer")
    vector = item.get("embedding")
    if isinstance(vector, str):
        return
    if not isinstance(vector, list) or not vector:
        raise BadAnswer(f"data[{i}].embedding is a {_kind(vector)}, not a list of numbers or a base64 string")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vector):
        raise BadAnswer(f"data[{i}].embedding holds something other than finite numbers")


def _check_message(message: Any, i: int) -> None:
    if not isinstance(message, dict):
        raise BadAnswer(f"choices[{i}].message is a {_kind(message)}, not an object")
    content = message.get("content")
    if isinstance(content, str):
        return
    if content is not None:
        raise BadAnswer(f"choices[{i}].message.content is a {_kind(content)}, not a string")
    if not any(message.get(name) for name in ("tool_calls", "function_call", "refusal")):
        raise BadAnswer(f"choices[{i}].message has no content, tool_calls, function_call or refusal")


def _kind(value: Any) -> str:
    """A JSON value's type in JSON's words, for messages that must not quote the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


class Adapter:
    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    default_base_url: ClassVar[str | None] = None
    transport: ClassVar[str] = "http"  # which of the gateway's transports carries its calls (router/transport.py)
    # Front doors (router/frontdoor) whose requests this upstream takes as they are: the client's body goes
    # through ``build_native_call``, the answer comes back untranslated, its usage read by ``native_usage``
    # (whole) or ``native_stream`` (events).
    native_doors: ClassVar[frozenset[str]] = frozenset()

    def configured(self, options: Mapping[str, Any]) -> Adapter:
        """This adapter for a provider entry's ``options`` (routes.yaml ``providers.<name>.options``).

        Most adapters need none and return themselves; one whose calls depend
        on an option (Azure's ``api_version``) returns an adapter bound to it,
        and raises ``ValueError`` for an option it cannot use, so the gateway
        can refuse the config at load rather than at the first call.
        """
        return self

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def build_call(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        raise NotImplementedError

    def translate_response(self, op: Operation, payload: dict[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
        raise NotImplementedError

    def stream_translator(self, op: Operation, ctx: ResponseContext) -> StreamTranslator:
        raise NotImplementedError(f"{self.kind} does not stream {op.value}")

    def build_native_call(self, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        raise NotImplementedError(f"{self.kind} takes no front door's requests natively")

    def native_usage(self, payload: dict[str, Any], ctx: ResponseContext) -> Usage | None:
        raise NotImplementedError(f"{self.kind} takes no front door's requests natively")

    def native_stream(self, ctx: ResponseContext) -> StreamTranslator:
        raise NotImplementedError(f"{self.kind} takes no front door's requests natively")

    def error_message(self, status: int, payload: Any) -> str:
        """The upstream's own words for a failed call, for attempt lines and pass-through 4xx."""
        if isinstance(payload, dict):
            err = payload.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return err["message"]
            if isinstance(err, str):
                return err
            if isinstance(payload.get("message"), str):
                return payload["message"]
            if isinstance(payload.get("detail"), str):
                return payload["detail"]
        return f"HTTP {status}"
