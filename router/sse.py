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


def _event_data(block: bytes) -> bytes | None:
    """The data of one event (its lines, without the blank line ending it); None if it has none."""
    if block.startswith(b"data: ") and b"\n" not in block:  # the usual one-line event
        return block[6:]
    parts = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
        # "event:", "id:", "retry:" and ":comment" lines carry nothing we relay.
    return b"\n".join(parts) if parts else None


async def iter_event_batches(chunks: AsyncIterable[bytes]) -> AsyncIterator[list[bytes]]:
    """Events as they arrive, one list per read of the network: what came together can leave together.

    ``chunks`` may split anywhere (``StreamReader.iter_any()``); an event
    split across reads is held until its blank line arrives.  Reading whole
    chunks rather than line by line is what keeps the relay near the floor.
    """
    pending = b""
    async for chunk in chunks:
        data = pending + chunk
        held = b""
        if b"\r" in data:
            if data.endswith(b"\r"):  # maybe half of a \r\n: decide when the next read comes
                data, held = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = data.split(b"\n\n")
        pending = blocks.pop() + held
        # A read with no event (a keep-alive comment, half an event) still yields: the stream is alive (timeouts.idle).
        yield [event for event in map(_event_data, blocks) if event is not None]
    tail = _event_data(pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").strip(b"\n")) if pending.strip() else None
    if tail is not None:
        yield [tail]


def chunks_from_response(response: dict[str, Any], include_usage: bool) -> list[bytes]:
    """A well-formed stream made from a whole answer, for providers that cannot stream."""
    chat = response.get("object") == "chat.completion"
    kind = "chat.completion.chunk" if chat else "text_completion"
    head: dict[str, Any] = {k: response[k] for k in ("id", "created", "model", "provider", "upstream_provider", "system_fingerprint") if k in response}
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
