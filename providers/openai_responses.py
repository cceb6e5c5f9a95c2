"""OpenAI's Responses API passed through: ``/v1/responses`` to a provider that speaks it itself.

A provider of kind ``openai`` with ``options: {responses: native}`` (OpenAI
itself, or a host that implements ``/responses``) takes a Responses request
as the client sent it, and its answer and events go back untranslated;
without the option the gateway translates Responses onto chat
(router/frontdoor/responses.py), which every chat target can take.  Usage is
read from the Response (``input_tokens`` with the cached ones inside,
``output_tokens`` with the reasoning inside) or from the stream's final
``response.completed`` / ``response.incomplete`` / ``response.failed`` event.
An ``error`` event becomes an ``{"error": ...}`` chunk, so the relay ends the
stream as failed (or fails over before the first byte).
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.base import GATEWAY_FIELDS, BadAnswer, ResponseContext, StreamTranslator, UpstreamCall, Usage, checked_usage, event_object, token_count

_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def read_responses_usage(raw: dict[str, Any]) -> Usage:
    """A Responses ``usage`` object as the gateway's Usage (``BadUsage`` for a nonsense count)."""
    inputs, outputs = raw.get("input_tokens_details") or {}, raw.get("output_tokens_details") or {}
    prompt, completion = token_count(raw.get("input_tokens")), token_count(raw.get("output_tokens"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=token_count(raw.get("total_tokens", prompt + completion)),
        cached_tokens=token_count(inputs.get("cached_tokens", 0)) if isinstance(inputs, dict) else 0,
        reasoning_tokens=token_count(outputs.get("reasoning_tokens", 0)) if isinstance(outputs, dict) else 0,
    )


def check_response(payload: Any) -> None:
    if not isinstance(payload, dict) or payload.get("object") != "response" or not isinstance(payload.get("output"), list):
        raise BadAnswer("the answer is not a Response (object 'response' with an output list)")


class NativeResponsesStream(StreamTranslator):
    """Responses events relayed as they came, each written with its ``event:`` name; usage from the final event."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self.event_type = b"message"

    def translate(self, data: bytes) -> bytes | None:
        event = event_object(data)
        kind = event.get("type")
        self.event_type = kind.encode() if isinstance(kind, str) and kind.isprintable() else b"message"
        if kind == "error":
            return orjson.dumps({"error": {"message": event.get("message"), "code": event.get("code")}})
        response = event.get("response")
        if kind in _FINAL_EVENTS and isinstance(response, dict):
            self.usage = checked_usage(read_responses_usage, response.get("usage"), self.ctx)
        return data

    def framed(self, data: bytes) -> bytes:
        return b"event: " + self.event_type + b"\ndata: " + data + b"\n\n"


def native_call(body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
    """The client's Responses body with the target's model, the gateway's own fields removed."""
    payload = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    payload["model"] = model
    if stream:
        payload["stream"] = True
    return UpstreamCall("/responses", orjson.dumps(payload), stream)
