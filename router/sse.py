"""Server-sent events: reading the upstream's, writing the client's.

OpenAI streams are ``data: <json>\\n\\n`` events ending with ``data: [DONE]``.
The reader yields each event's data as bytes (multi-line ``data:`` fields
joined with ``\\n``), skipping comments and other fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


def encode(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


async def iter_events(lines: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    parts: list[bytes] = []
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if parts:
                yield parts[0] if len(parts) == 1 else b"\n".join(parts)
                parts = []
            continue
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
        # "event:", "id:", "retry:" and ":comment" lines carry nothing we relay.
    if parts:
        yield parts[0] if len(parts) == 1 else b"\n".join(parts)


def chunks_from_response(response: dict[str, Any], include_usage: bool) -> list[bytes]:
    """A well-formed stream made from a whole answer, for providers that cannot stream."""
    chat = response.get("object") == "chat.completion"
    kind = "chat.completion.chunk" if chat else "text_completion"
    head: dict[str, Any] = {k: response[k] for k in ("id", "created", "model", "provider", "system_fingerprint") if k in response}
    head["object"] = kind
    out: list[bytes] = []
    finishes = []
    for choice in response.get("choices", []):
        index = choice.get("index", 0)
        if chat:
            message = choice.get("message") or {}
            delta = {"role": message.get("role", "assistant"), "content": message.get("content") or ""}
            if message.get("tool_calls"):
                delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(message["tool_calls"])]
            out.append(orjson.dumps({**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}))
            finishes.append({"index": index, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"})
        else:
            out.append(orjson.dumps({**head, "choices": [{"index": index, "text": choice.get("text", ""), "finish_reason": None}]}))
            finishes.append({"index": index, "text": "", "finish_reason": choice.get("finish_reason") or "stop"})
    out.append(orjson.dumps({**head, "choices": finishes}))
    if include_usage and response.get("usage"):
        out.append(orjson.dumps({**head, "choices": [], "usage": response["usage"]}))
    return out
