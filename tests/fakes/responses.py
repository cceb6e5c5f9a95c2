"""A fake of OpenAI's Responses API (``POST /v1/responses``), written from its reference: a whole Response,
or the event stream (created, in_progress, the message item and its text part, output_text deltas, the done
events, completed), every event with its ``sequence_number`` and named by its type."""

from __future__ import annotations

import json
import time
from typing import Any

USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": 9,
    "output_tokens_details": {"reasoning_tokens": 3},
    "total_tokens": 21,
}


def response(body: dict[str, Any], text: str, ident: str, status: str = "completed") -> dict[str, Any]:
    message = {
        "type": "message",
        "id": f"msg_{ident}",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": f"resp_{ident}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": {},
        "model": body["model"],
        "output": [message] if status == "completed" else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": USAGE if status == "completed" else None,
    }


def events(body: dict[str, Any], text: str, ident: str) -> list[bytes]:
    """The stream of a Response saying ``text``, one output_text delta per word."""
    final = response(body, text, ident)
    shell = {**final, "status": "in_progress", "output": [], "usage": None}
    item = {**final["output"][0], "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    words = text.split(" ")
    deltas = [
        {"type": "response.output_text.delta", "item_id": item["id"], "output_index": 0, "content_index": 0, "delta": w if i == 0 else " " + w, "logprobs": []}
        for i, w in enumerate(words)
    ]
    sequence = [
        {"type": "response.created", "response": shell},
        {"type": "response.in_progress", "response": shell},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", "item_id": item["id"], "output_index": 0, "content_index": 0, "part": part},
        *deltas,
        {"type": "response.output_text.done", "item_id": item["id"], "output_index": 0, "content_index": 0, "text": text, "logprobs": []},
        {"type": "response.content_part.done", "item_id": item["id"], "output_index": 0, "content_index": 0, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]},
        {"type": "response.completed", "response": final},
    ]
    return [f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}\n\n".encode() for n, e in enumerate(sequence)]
