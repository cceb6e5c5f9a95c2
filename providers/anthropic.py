"""Anthropic's Messages API (``POST /v1/messages``), spoken natively.

Requests: the client's OpenAI chat body becomes a Messages body.  System and
developer messages move to the top-level ``system``; consecutive messages of
one role are merged, since Anthropic wants user and assistant turns to
alternate; ``role: tool`` answers become ``tool_result`` blocks in a user turn
and an assistant's ``tool_calls`` become ``tool_use`` blocks.  ``max_tokens``
is required by Anthropic, so a request without one gets ``DEFAULT_MAX_TOKENS``.
A trailing assistant message is a prefill that Anthropic continues
(``Capabilities.prefill``); its trailing whitespace is removed, which
Anthropic requires of a final assistant turn.

Answers: text blocks become ``content``, ``tool_use`` blocks ``tool_calls``
(arguments as a JSON string) and ``thinking`` blocks the message's
``reasoning_content`` (the field DeepSeek-style OpenAI hosts use, so OpenAI
clients that show reasoning find it).  Usage counts the prompt as OpenAI
does: Anthropic's ``input_tokens`` are only the uncached part, so
``prompt_tokens`` = input + cache reads + cache writes, with the reads in
``cached_tokens`` and the writes in ``cache_write_tokens``; pricing then bills
each part at its own rate.

Streams are named SSE events whose ``type`` is also inside each data JSON
(the SSE reader hands over the data only); ``AnthropicStream`` turns them into
``chat.completion.chunk``s.  ``build_native_call``, ``native_usage`` and
``NativeStreamUsage`` serve the ``/v1/messages`` ingress, where an Anthropic
body is passed through unchanged but for its model.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.base import (
    GATEWAY_FIELDS,
    Adapter,
    BadAnswer,
    Capabilities,
    ResponseContext,
    StreamTranslator,
    UpstreamCall,
    Usage,
    checked_usage,
    event_object,
    token_count,
)
from providers.operations import Operation

ANTHROPIC_VERSION = "2023-06-01"  # the one stable version of the Messages API; sent as anthropic-version
# Anthropic requires max_tokens; OpenAI clients often send none.  4096 is what every current
# Claude model can produce and large enough that a normal answer is not cut.
DEFAULT_MAX_TOKENS = 4096
MESSAGES_PATH = "/v1/messages"

# Fields of one name and meaning in both APIs, copied as they are.
_COPIED = ("temperature", "top_p", "top_k", "thinking")
PARAMS = frozenset({"messages", "max_tokens", "max_completion_tokens", "stop", "tools", "tool_choice", "parallel_tool_calls", "user", *_COPIED})

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TOOL_CHOICES = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}
_ROLES = {"user": "user", "assistant": "assistant", "tool": "user", "function": "user"}
_SYSTEM_ROLES = frozenset({"system", "developer"})


# -- requests: OpenAI chat -> Messages ------------------------------------------


def messages_payload(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """The Messages body for an OpenAI chat body (never changed itself)."""
    system, turns = split_system(body.get("messages") or [])
    payload: dict[str, Any] = {"model": model, "max_tokens": max_tokens(body), "messages": merge_turns(turns)}
    if system:
        payload["system"] = system
    for name in _COPIED:
        if body.get(name) is not None:
            payload[name] = body[name]
    stop = body.get("stop")
    if stop:
        payload["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    payload.update(tool_fields(body))
    if isinstance(body.get("user"), str) and body["user"]:
        payload["metadata"] = {"user_id": body["user"]}
    if stream:
        payload["stream"] = True
    return payload


def max_tokens(body: dict[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_MAX_TOKENS


def split_system(messages: list[Any]) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    """System and developer messages as Anthropic's ``system``; the other messages in order.

    A plain string when no part carries ``cache_control``; text blocks (that
    keep it) otherwise, so prompt caching of a system prompt survives.
    """
    blocks: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") in _SYSTEM_ROLES:
            blocks.extend(b for b in content_blocks(message.get("content")) if b.get("type") == "text")
        else:
            turns.append(message)
    if any("cache_control" in b for b in blocks):
        return blocks, turns
    return "\n\n".join(b["text"] for b in blocks), turns


def content_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content (a string or a list of parts) as Messages content blocks; empty text is dropped."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return []
    blocks = []
    for part in content:
        if isinstance(part, str):
            part = {"type": "text", "text": part}
        block = _part_block(part) if isinstance(part, dict) else None
        if block is not None:
            blocks.append(block)
    return blocks


def _part_block(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str) or not text:
            return None
        block: dict[str, Any] = {"type": "text", "text": text}
    elif kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            return None
        block = {"type": "image", "source": image_source(url)}
    else:
        return dict(part)  # already a Messages block (document, tool_result ...): Anthropic judges it
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def image_source(url: str) -> dict[str, Any]:
    """A ``data:`` URL as a base64 source, any other URL as a url source."""
    if url.startswith("data:") and ";base64," in url:
        head, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": head or "image/png", "data": data}
    return {"type": "url", "url": url}


def turn(message: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI message as one Messages turn (before merging)."""
    role = message.get("role")
    if role in ("tool", "function"):
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id") or message.get("name") or "")}
        content = message.get("content")
        result["content"] = content if isinstance(content, str) else content_blocks(content)
        return {"role": "user", "content": [result]}
    blocks = content_blocks(message.get("content"))
    if role == "assistant":
        blocks.extend(tool_use_block(call) for call in message.get("tool_calls") or [] if isinstance(call, dict))
    return {"role": _ROLES.get(str(role), "user"), "content": blocks}


def tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    return {"type": "tool_use", "id": str(call.get("id") or ""), "name": str(function.get("name") or ""), "input": tool_input(function.get("arguments"))}


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic wants.

    An empty string is ``{}``.  Arguments that are not a JSON object (a model
    can emit broken JSON) are kept whole under ``_raw_arguments`` rather than
    failing the request: the conversation goes on and nothing is lost.
    """
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": str(arguments)}


def merge_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages turns, consecutive turns of one role merged (their blocks in order); a lone text turn stays a string."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        current = turn(message)
        if merged and merged[-1]["role"] == current["role"]:
            merged[-1]["content"].extend(current["content"])
        else:
            merged.append(current)
    for item in merged:
        item["content"] = _compact(item["content"])
    if merged and merged[-1]["role"] == "assistant":
        _strip_prefill(merged[-1])
    return merged


def _compact(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if len(blocks) == 1 and blocks[0]["type"] == "text" and len(blocks[0]) == 2:
        return str(blocks[0]["text"])
    return blocks


def _strip_prefill(message: dict[str, Any]) -> None:
    content = message["content"]
    if isinstance(content, str):
        message["content"] = content.rstrip()
    elif content and content[-1].get("type") == "text":
        content[-1] = {**content[-1], "text": str(content[-1]["text"]).rstrip()}


def tool_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` in Messages form (``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``).

    A ``tool_choice`` without tools is left out: it means nothing to Anthropic.
    """
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return {}
    out: dict[str, Any] = {"tools": [tool_definition(tool) for tool in tools if isinstance(tool, dict)]}
    choice = tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice
    return out


def tool_definition(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI function tool as ``{name, description, input_schema}``; other tools are passed as they are."""
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        return tool
    out: dict[str, Any] = {"name": function.get("name"), "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    return out


def tool_choice(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, str):
        return _TOOL_CHOICES.get(choice)
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and function.get("name"):
            return {"type": "tool", "name": function["name"]}
    return None


# -- answers: Messages -> OpenAI chat -------------------------------------------


def _read_usage(raw: dict[str, Any]) -> Usage:
    fresh = token_count(raw.get("input_tokens"))
    read = token_count(raw.get("cache_read_input_tokens"))
    write = token_count(raw.get("cache_creation_input_tokens"))
    completion = token_count(raw.get("output_tokens"))
    prompt = token_count(fresh + read + write)  # OpenAI's prompt_tokens includes the cached part; Anthropic's input_tokens does not
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion, cached_tokens=read, cache_write_tokens=write)


def usage_from_anthropic(raw: Any, ctx: ResponseContext | None = None) -> Usage | None:
    """A Messages usage object as ``Usage``; ``None`` when absent or nonsense (flagged on ``ctx``)."""
    return checked_usage(_read_usage, raw, ctx)


def check_message(payload: Any) -> list[dict[str, Any]]:
    """The answer's content blocks; ``BadAnswer`` unless it is a Message object."""
    if not isinstance(payload, dict) or payload.get("type") != "message":
        raise BadAnswer("the answer is not a Message object (type is not 'message')")
    content = payload.get("content")
    if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
        raise BadAnswer("the answer's content is not a list of blocks")
    return content


def chat_message(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Content blocks as an OpenAI assistant message: text, ``tool_calls`` and ``reasoning_content``."""
    text = "".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
    thinking = "".join(str(b.get("thinking") or "") for b in blocks if b.get("type") == "thinking")
    calls = [tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = thinking
    return message


def tool_call(block: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise BadAnswer("a tool_use block has no string id and name")
    arguments = orjson.dumps(block.get("input") if isinstance(block.get("input"), dict) else {}).decode()
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


def finish_reason(stop_reason: Any) -> str:
    return STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def chat_completion(payload: dict[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
    blocks = check_message(payload)
    usage = usage_from_anthropic(payload.get("usage"), ctx)
    out: dict[str, Any] = {
        "id": payload["id"] if isinstance(payload.get("id"), str) else f"chatcmpl-{ctx.request_id}",
        "object": "chat.completion",
        "created": ctx.created,
        "model": payload["model"] if isinstance(payload.get("model"), str) else ctx.model,
        "choices": [{"index": 0, "message": chat_message(blocks), "finish_reason": finish_reason(payload.get("stop_reason")), "logprobs": None}],
    }
    if usage is not None:
        out["usage"] = usage.to_openai()
    out["provider"] = ctx.provider
    return out, usage


def anthropic_error_message(payload: Any) -> str | None:
    """The message of Anthropic's ``{"type": "error", "error": {"type", "message"}}``; ``None`` for another shape."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return None


# -- streams --------------------------------------------------------------------


def event_type(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if not isinstance(kind, str):
        raise BadAnswer("a stream event has no string type")
    return kind


def frame(kind: str, data: bytes) -> bytes:
    """One named SSE event as Anthropic sends it: ``event: <type>`` then its data."""
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


class AnthropicStream(StreamTranslator):
    """Messages stream events as OpenAI ``chat.completion.chunk``s, each labelled with ``provider``.

    The role rides on the first chunk with content, not on ``message_start``:
    an ``error`` event right after ``message_start`` then leaves nothing
    relayed, and the gateway can still fail over.  ``usage`` is set once
    ``message_delta`` brings the final output count (its counts are
    cumulative and override ``message_start``'s); a stream cut before it is
    charged by the gateway's estimate, as for every provider.
    """

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self.ident = f"chatcmpl-{ctx.request_id}"
        self.model = ctx.model
        self.raw_usage: dict[str, Any] = {}
        self.tools: dict[int, int] = {}  # content block index -> tool_calls index
        self.role_sent = False

    def translate(self, data: bytes) -> bytes | None:
        event = event_object(data)
        handler = _HANDLERS.get(event_type(event))
        return handler(self, event) if handler is not None else None  # ping and event types to come are dropped

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if not self.role_sent:
            delta = {"role": "assistant", **delta}
            self.role_sent = True
        return self.envelope([{"index": 0, "delta": delta, "finish_reason": finish}])

    def envelope(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {"id": self.ident, "object": "chat.completion.chunk", "created": self.ctx.created, "model": self.model, "provider": self.ctx.provider}
        return orjson.dumps({**chunk, "choices": choices, **extra})

    def on_message_start(self, event: dict[str, Any]) -> None:
        message = event.get("message")
        if not isinstance(message, dict):
            raise BadAnswer("message_start has no message object")
        if isinstance(message.get("id"), str):
            self.ident = message["id"]
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        if isinstance(message.get("usage"), dict):
            self.raw_usage.update(message["usage"])
        return None

    def on_block_start(self, event: dict[str, Any]) -> bytes | None:
        block = event.get("content_block")
        if not isinstance(block, dict) or block.get("type") != "tool_use":
            return None  # a text or thinking block starts empty; its deltas carry the content
        index = len(self.tools)
        self.tools[_index(event)] = index
        call = {"index": index, "id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": ""}}
        return self.chunk({"tool_calls": [call]})

    def on_block_delta(self, event: dict[str, Any]) -> bytes | None:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            raise BadAnswer("content_block_delta has no delta object")
        kind = delta.get("type")
        if kind == "text_delta":
            self.text_parts.append(str(delta.get("text") or ""))
            return self.chunk({"content": str(delta.get("text") or "")})
        if kind == "thinking_delta":
            return self.chunk({"reasoning_content": str(delta.get("thinking") or "")})
        if kind == "input_json_delta" and _index(event) in self.tools:
            call = {"index": self.tools[_index(event)], "function": {"arguments": str(delta.get("partial_json") or "")}}
            return self.chunk({"tool_calls": [call]})
        return None  # signature_delta, citations_delta: no OpenAI slot

    def on_message_delta(self, event: dict[str, Any]) -> bytes | None:
        if isinstance(event.get("usage"), dict):
            self.raw_usage.update(event["usage"])
            self.usage = usage_from_anthropic(self.raw_usage, self.ctx)
        delta = event.get("delta")
        stop = delta.get("stop_reason") if isinstance(delta, dict) else None
        if stop is None:
            return None
        return self.chunk({}, finish_reason(stop))

    def on_message_stop(self, event: dict[str, Any]) -> bytes | None:
        if not self.ctx.include_usage or self.usage is None:
            return None
        return self.envelope([], usage=self.usage.to_openai())

    def on_error(self, event: dict[str, Any]) -> bytes:
        """An ``error`` event as an OpenAI ``{"error": ...}`` chunk: the gateway ends the stream as failed."""
        error = event.get("error") if isinstance(event.get("error"), dict) else {}
        message = anthropic_error_message(event) or "the upstream sent an error event"
        return orjson.dumps({"error": {"message": message, "type": error.get("type") or "api_error", "code": None}, "provider": self.ctx.provider})


def _index(event: dict[str, Any]) -> int:
    index = event.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        raise BadAnswer(f"a {event.get('type')} event has no integer index")
    return index


_HANDLERS = {
    "message_start": AnthropicStream.on_message_start,
    "content_block_start": AnthropicStream.on_block_start,
    "content_block_delta": AnthropicStream.on_block_delta,
    "message_delta": AnthropicStream.on_message_delta,
    "message_stop": AnthropicStream.on_message_stop,
    "error": AnthropicStream.on_error,
}


class NativeStreamUsage(StreamTranslator):
    """Watches Messages events passed through to an Anthropic-speaking client unchanged, collecting usage.

    ``translate`` returns each event's data as it came (``None`` never: ping
    keeps the client's connection alive too) and sets ``event_type``, so the
    relay can write ``frame(self.event_type, data)``.  An ``error`` event's
    data is an object with ``error`` in it, which the gateway's relay already
    treats as the stream failing.
    """

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self.event_type = ""
        self.raw_usage: dict[str, Any] = {}

    def translate(self, data: bytes) -> bytes | None:
        event = event_object(data)
        self.event_type = event_type(event)
        if self.event_type == "message_start" and isinstance(event.get("message"), dict):
            self._add_usage(event["message"].get("usage"), final=False)
        elif self.event_type == "message_delta":
            self._add_usage(event.get("usage"), final=True)
        elif self.event_type == "content_block_delta" and isinstance(event.get("delta"), dict):
            text = event["delta"].get("text")
            if isinstance(text, str):
                self.text_parts.append(text)
        return data

    def framed(self, data: bytes) -> bytes:
        """The event as Anthropic's SDK reads it: named by its type."""
        return frame(self.event_type, data)

    def _add_usage(self, raw: Any, final: bool) -> None:
        if isinstance(raw, dict) and not self.ctx.usage_rejected:
            self.raw_usage.update(raw)
            if final:
                self.usage = usage_from_anthropic(self.raw_usage, self.ctx)


# -- the adapter ----------------------------------------------------------------


class AnthropicAdapter(Adapter):
    kind = "anthropic"
    native_doors = frozenset({"anthropic"})  # /v1/messages reaches an anthropic target as it came (router/frontdoor)
    capabilities = Capabilities(
        operations=frozenset({Operation.CHAT}),
        streams=frozenset({Operation.CHAT}),
        params=PARAMS,
        drops=frozenset({"metadata"}),  # the gateway's attribution; Anthropic's metadata takes only user_id (from ``user``)
        prefill=True,
    )
    default_base_url = "https://api.anthropic.com"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}

    def build_call(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        return UpstreamCall(MESSAGES_PATH, orjson.dumps(messages_payload(body, model, stream)), stream)

    def translate_response(self, op: Operation, payload: dict[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
        return chat_completion(payload, ctx)

    def stream_translator(self, op: Operation, ctx: ResponseContext) -> StreamTranslator:
        return AnthropicStream(ctx)

    def error_message(self, status: int, payload: Any) -> str:
        return anthropic_error_message(payload) or super().error_message(status, payload)

    # -- native pass-through, for the /v1/messages ingress ----------------------

    def build_native_call(self, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        """The client's Messages body with the target's model, the gateway's own fields removed.

        ``metadata`` keeps only ``user_id``: Anthropic rejects any other key,
        and the gateway reads its attribution keys before this.
        """
        payload = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
        payload["model"] = model
        if stream:
            payload["stream"] = True
        metadata = body.get("metadata")
        if isinstance(metadata, dict):
            kept = {k: v for k, v in metadata.items() if k == "user_id"}
            if kept:
                payload["metadata"] = kept
            else:
                payload.pop("metadata")
        return UpstreamCall(MESSAGES_PATH, orjson.dumps(payload), stream)

    def native_usage(self, payload: dict[str, Any], ctx: ResponseContext) -> Usage | None:
        """A whole Message's usage (``BadAnswer`` when the answer is no Message)."""
        check_message(payload)
        return usage_from_anthropic(payload.get("usage"), ctx)

    def native_stream(self, ctx: ResponseContext) -> NativeStreamUsage:
        return NativeStreamUsage(ctx)
