"""What every provider adapter is: a pure translator between the OpenAI shape and one upstream API.

An adapter turns the client's parsed request into the upstream's path and
body, and the upstream's answer (whole or one SSE event at a time) back into
the OpenAI shape plus a normalised ``Usage``.  It does no I/O: the transport
(``router/transport.py``) sends what it builds, so adapters are tested with
JSON in, JSON out.  Prices are applied centrally, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from providers.operations import Operation

# Request fields the gateway itself consumes; never forwarded, never a reason
# to skip a target.
GATEWAY_FIELDS = frozenset({"model", "models", "stream", "stream_options", "max_price", "route"})


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


def _int(value: Any) -> int:
    # Interactive's schema types token counts as doubles.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value)


def usage_from_openai(raw: Any) -> Usage | None:
    """Normalise an OpenAI-style usage object, including the cache fields some hosts add."""
    if not isinstance(raw, dict):
        return None
    prompt = _int(raw.get("prompt_tokens"))
    completion = _int(raw.get("completion_tokens"))
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    cached = cached or _int(raw.get("cache_read_input_tokens"))
    cache_write = _int(raw.get("cache_creation_input_tokens"))
    if not cache_write and isinstance(prompt_details, dict):
        cache_write = _int(prompt_details.get("cache_write_tokens"))
    reasoning = _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_int(raw.get("total_tokens")) or prompt + completion,
        cached_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A prompt's size in tokens before any provider has counted it: four characters a token.

    One rule for every guess the gateway makes (limits and budgets before a
    call, the ledger where a provider reported nothing, the mock's usage).
    """
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
    else:
        chars = len(str(body.get("prompt", "")))
    return max(1, chars // 4)


@dataclass(frozen=True, slots=True)
class ResponseContext:
    """What the gateway knows about an attempt that an adapter needs to label its output."""

    provider: str
    model: str
    request_id: str
    created: int
    include_usage: bool = False


@dataclass(slots=True)
class UpstreamCall:
    """An attempt as the adapter built it: where to send what."""

    path: str
    body: bytes
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)


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


class Adapter:
    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    default_base_url: ClassVar[str | None] = None

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def build_call(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        raise NotImplementedError

    def translate_response(self, op: Operation, payload: dict[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
        raise NotImplementedError

    def stream_translator(self, op: Operation, ctx: ResponseContext) -> StreamTranslator:
        raise NotImplementedError(f"{self.kind} does not stream {op.value}")

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


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
