"""Any OpenAI-compatible API (Forii, the generic host in openai-compatible-chat.txt, OpenAI itself).

Everything the client sent passes through, extension parameters included
(Forii's ``reasoning_effort``, ``top_k``, ``metadata`` ...); only ``model`` is
replaced by the target's upstream model, and a streamed call always asks for
usage in its final chunk so that streamed requests are priced from real
numbers.  Chunks without usage are relayed byte for byte, once they parse
as a JSON object (about 1.5 µs a chunk with orjson).  Embeddings
(``POST /embeddings``) pass through the same way and are never streamed; their
usage is prompt tokens only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.base import (
    GATEWAY_FIELDS,
    Adapter,
    Capabilities,
    ResponseContext,
    StreamTranslator,
    UpstreamCall,
    Usage,
    check_completion,
    check_embeddings,
    checked_usage,
    event_object,
    usage_from_embedding,
    usage_from_openai,
)
from providers.openai_responses import NativeResponsesStream, check_response, native_call, read_responses_usage
from providers.operations import Operation

PATHS = {Operation.CHAT: "/chat/completions", Operation.COMPLETION: "/completions", Operation.EMBEDDING: "/embeddings"}
_INCLUDE_USAGE = {"include_usage": True}


def label_embeddings(payload: dict[str, Any], ctx: ResponseContext) -> Usage | None:
    """Check an OpenAI embedding list, label it in place; return its usage (prompt tokens only).

    Raises ``BadAnswer`` when ``data`` is not a list of embeddings.
    """
    check_embeddings(payload)
    usage = usage_from_embedding(payload.get("usage"), ctx)
    if usage is not None:
        payload["usage"] = {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total}
    elif ctx.usage_rejected:
        del payload["usage"]
    payload.setdefault("object", "list")
    payload.setdefault("model", ctx.model)
    payload["provider"] = ctx.provider
    return usage


def translate_openai(op: Operation, payload: dict[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
    """An OpenAI-shaped answer of any operation, checked and labelled (``BadAnswer`` if it is not of ``op``'s shape)."""
    if op is Operation.EMBEDDING:
        return payload, label_embeddings(payload, ctx)
    return payload, label_response(op, payload, ctx)


def openai_payload(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """The client's body for an OpenAI-shaped upstream: a shallow copy, never the original."""
    payload = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    payload["model"] = model
    if stream:
        payload["stream"] = True
        options = body.get("stream_options")
        payload["stream_options"] = {**options, **_INCLUDE_USAGE} if isinstance(options, dict) else _INCLUDE_USAGE
    return payload


def label_response(op: Operation, payload: dict[str, Any], ctx: ResponseContext) -> Usage | None:
    """Check an OpenAI-shaped answer, add the gateway's labels in place; return its usage.

    Raises ``BadAnswer`` when it is not a completion of ``op``'s shape.  A
    rejected usage is removed rather than shown to the client.
    """
    check_completion(op, payload)
    usage = usage_from_openai(payload.get("usage"), ctx)
    if usage is not None:
        payload["usage"] = usage.to_openai()
    elif ctx.usage_rejected:
        del payload["usage"]
    payload.setdefault("model", ctx.model)
    payload["provider"] = ctx.provider
    return usage


class OpenAIStream(StreamTranslator):
    """Every chunk is labelled with the provider entry in ``provider``, as the whole answer is.

    A chunk without usage or a ``provider`` of its own gets the label spliced
    in front of its first key (no re-encoding); one that names its upstream's
    vendor in ``provider`` (Interactive) keeps it as ``upstream_provider``.
    """

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._label = b'{"provider":' + orjson.dumps(ctx.provider) + b","

    def translate(self, data: bytes) -> bytes | None:
        chunk = event_object(data)  # parsed once: the key checks below are dict lookups, not scans of the bytes
        if "usage" in chunk:
            return self._with_usage(chunk, data)
        if not chunk or "provider" in chunk or data[:1] != b"{":
            return self._labelled(chunk)
        return self._label + data[1:]

    def _with_usage(self, chunk: dict[str, Any], data: bytes) -> bytes | None:
        if self.ctx.usage_rejected:
            # One nonsense count rejects the stream's usage: a later report is not trusted either.
            return self._without_usage(chunk)
        usage = usage_from_openai(chunk.get("usage"), self.ctx)
        if usage is None:
            return self._without_usage(chunk) if self.ctx.usage_rejected else self._labelled(chunk)
        self.usage = usage
        if self.ctx.include_usage:
            chunk["usage"] = usage.to_openai()
            return self._labelled(chunk)
        if not chunk.get("choices"):
            return None
        del chunk["usage"]
        return self._labelled(chunk)

    def _without_usage(self, chunk: dict[str, Any]) -> bytes | None:
        chunk.pop("usage", None)
        return self._labelled(chunk) if chunk.get("choices") else None

    def _labelled(self, chunk: dict[str, Any]) -> bytes:
        if "provider" in chunk and "upstream_provider" not in chunk:
            chunk["upstream_provider"] = chunk["provider"]
        chunk["provider"] = self.ctx.provider
        return orjson.dumps(chunk)


class OpenAIAdapter(Adapter):
    kind = "openai"
    capabilities = Capabilities(
        operations=frozenset({Operation.CHAT, Operation.COMPLETION, Operation.EMBEDDING}),
        streams=frozenset({Operation.CHAT, Operation.COMPLETION}),  # embeddings are never streamed
    )
    default_base_url = "https://api.openai.com/v1"

    def configured(self, options: Mapping[str, Any]) -> Adapter:
        """``options.responses: native``: this provider speaks /responses itself (providers/openai_responses.py)."""
        mode = options.get("responses", "translate")
        if mode == "translate":
            return self
        if mode != "native" or self.kind != "openai":
            raise ValueError(
                f"responses: {mode!r} is not an option here; 'native' (kind openai only) passes /v1/responses through, 'translate' maps it onto chat"
            )
        return NATIVE_RESPONSES

    def build_call(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        return UpstreamCall(PATHS[op], orjson.dumps(openai_payload(body, model, stream)), stream)

    def translate_response(self, op: Operation, payload: dict[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
        return translate_openai(op, payload, ctx)

    def stream_translator(self, op: Operation, ctx: ResponseContext) -> StreamTranslator:
        return OpenAIStream(ctx)


class OpenAIResponsesAdapter(OpenAIAdapter):
    """The ``openai`` kind for a provider entry with ``options.responses: native``: /v1/responses goes through as it came."""

    native_doors = frozenset({"responses"})

    def configured(self, options: Mapping[str, Any]) -> Adapter:
        return self

    def build_native_call(self, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        return native_call(body, model, stream)

    def native_usage(self, payload: dict[str, Any], ctx: ResponseContext) -> Usage | None:
        check_response(payload)
        payload["provider"] = ctx.provider
        return checked_usage(read_responses_usage, payload.get("usage"), ctx)

    def native_stream(self, ctx: ResponseContext) -> StreamTranslator:
        return NativeResponsesStream(ctx)


NATIVE_RESPONSES = OpenAIResponsesAdapter()
