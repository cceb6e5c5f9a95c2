"""Anthropic's Messages API as a front door: its requests in, its answers, events and errors out.

The gateway routes in OpenAI's shape, so an Anthropic client's request is
translated to an OpenAI chat body (``messages_to_chat``) for any target
that is not itself Anthropic, and the OpenAI answer back into a Message
(``chat_to_message``) or, streamed, into Anthropic's named events
(``MessagesStream``).  This is the inverse of ``providers/anthropic.py``, and
shares its tables.

What has no OpenAI slot is dropped, not guessed: ``thinking`` (extended
thinking has no OpenAI-wide switch; a reasoning model reasons anyway), a
past turn's thinking blocks (their signatures mean nothing to another
model), a tool result's ``is_error`` and ``cache_control`` where the chat
shape cannot keep it.  What would change the meaning if dropped (a
document, a server tool, an image inside a tool result) raises
``Untranslatable``: such a request can go to an Anthropic target only.
A malformed body raises ``BadMessagesRequest`` naming the field.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.anthropic import tool_input
from providers.base import estimate_prompt_tokens, usage_from_openai

_ROLES = frozenset({"user", "assistant"})
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
# OpenAI finish_reason -> Anthropic stop_reason: the inverse of STOP_REASONS where it is one to one.
FINISH_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use", "content_filter": "refusal"}

# The error type Anthropic uses for each status.  The gateway's own statuses are mapped by meaning:
# 402 is its budget running out (billing_error); 502, an upstream that answered badly, is an
# unexpected error (api_error); 503 means no target can take the request now, which is what
# overloaded_error tells a client (back off, try again); 504 is Anthropic's own timeout_error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ANTHROPIC_ERROR_TYPES = frozenset(ERROR_TYPES.values())


class BadMessagesRequest(ValueError):
    """The client's Messages body is invalid (a 400 ``invalid_request_error``); ``param`` names the field."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(f"{param}: {problem}")
        self.param = param


class Untranslatable(ValueError):
    """A valid Messages request with something the OpenAI shape cannot carry: only an Anthropic target can take it."""

    def __init__(self, param: str, what: str) -> None:
        super().__init__(f"{param}: {what} cannot be sent to a non-Anthropic target")
        self.param = param


# -- validation -----------------------------------------------------------------


def _kind(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _need(ok: bool, param: str, problem: str) -> None:
    if not ok:
        raise BadMessagesRequest(param, problem)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Optional top-level fields: a check each and what it must be.
_FIELD_CHECKS = {
    "system": (
        lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in v)),
        "a string or a list of text blocks",
    ),
    "stop_sequences": (lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v), "a list of strings"),
    "stream": (lambda v: isinstance(v, bool), "a boolean"),
    "temperature": (_is_number, "a number"),
    "top_p": (_is_number, "a number"),
    "top_k": (_is_int, "an integer"),
    "metadata": (lambda v: isinstance(v, dict), "an object"),
    "tools": (lambda v: isinstance(v, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in v), "a list of tools, each with a name"),
    "tool_choice": (lambda v: isinstance(v, dict) and v.get("type") in ("auto", "any", "none", "tool"), "an object whose type is auto, any, tool or none"),
}


def check_body(body: Any, need_max_tokens: bool = True) -> None:
    """Raise ``BadMessagesRequest`` for the first field that makes ``body`` an invalid Messages request."""
    _need(isinstance(body, dict), "body", "must be a JSON object")
    _need(isinstance(body.get("model"), str) and bool(body["model"]), "model", "is required (a non-empty string)")
    if need_max_tokens or "max_tokens" in body:
        max_tokens = body.get("max_tokens")
        _need(max_tokens is not None, "max_tokens", "is required")
        _need(_is_int(max_tokens) and max_tokens >= 1, "max_tokens", f"must be a positive integer, got {_kind(max_tokens)}")
    for name, (ok, what) in _FIELD_CHECKS.items():
        if body.get(name) is not None:
            _need(ok(body[name]), name, f"must be {what}, got {_kind(body[name])}")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice["type"] == "tool":
        _need(isinstance(choice.get("name"), str) and bool(choice["name"]), "tool_choice.name", "is required when tool_choice.type is tool")
    messages = body.get("messages")
    _need(isinstance(messages, list), "messages", f"must be a list of messages, got {_kind(messages)}")
    _need(bool(messages), "messages", "must contain at least one message")
    for i, message in enumerate(messages):
        _check_message(message, f"messages[{i}]")


def _check_message(message: Any, param: str) -> None:
    _need(isinstance(message, dict), param, f"must be an object, got {_kind(message)}")
    role = message.get("role")
    _need(role in _ROLES, f"{param}.role", f"must be 'user' or 'assistant', got {role!r}" if isinstance(role, str) else "is required")
    content = message.get("content")
    _need(isinstance(content, (str, list)), f"{param}.content", f"must be a string or a list of content blocks, got {_kind(content)}")
    if isinstance(content, list):
        for j, block in enumerate(content):
            _need(isinstance(block, dict) and isinstance(block.get("type"), str), f"{param}.content[{j}]", "must be a content block with a string type")


# -- requests: Messages -> OpenAI chat ------------------------------------------


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat request body.

    ``BadMessagesRequest`` when the body is invalid, ``Untranslatable`` when
    it is valid but holds what only an Anthropic target can take.  A stream
    asks for usage in its last chunk, which ``MessagesStream`` needs.
    """
    check_body(body)
    return _chat_body(body)


def _chat_body(body: dict[str, Any]) -> dict[str, Any]:
    chat: dict[str, Any] = {"model": body["model"], "messages": system_messages(body.get("system")) + chat_messages(body["messages"])}
    if "max_tokens" in body:
        chat["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if body.get("tools"):
        chat["tools"] = [chat_tool(tool, f"tools[{i}]") for i, tool in enumerate(body["tools"])]
        chat.update(chat_tool_choice(body.get("tool_choice")))
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        chat["user"] = user
    return chat


def system_messages(system: Any) -> list[dict[str, Any]]:
    """``system`` as one system message: a string, or text parts when a block carries ``cache_control``."""
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if not system:
        return []
    if any("cache_control" in block for block in system):
        return [{"role": "system", "content": [_text_part(block) for block in system]}]
    return [{"role": "system", "content": "\n\n".join(str(block.get("text") or "") for block in system)}]


def _text_part(block: dict[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": str(block.get("text") or "")}
    if "cache_control" in block:
        part["cache_control"] = block["cache_control"]
    return part


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        translate = _assistant_messages if message["role"] == "assistant" else _user_messages
        out.extend(translate(message["content"], f"messages[{i}].content"))
    return out


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _user_messages(content: str | list[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as ``role: tool`` messages first, then the rest as one user message."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content)):
        where = f"{param}[{j}]"
        if block["type"] == "tool_result":
            tools.append(tool_message(block, where))
        else:
            parts.append(user_part(block, where))
    if not parts:
        return tools
    if len(parts) == 1 and len(parts[0]) == 2 and parts[0]["type"] == "text":
        return [*tools, {"role": "user", "content": parts[0]["text"]}]
    return [*tools, {"role": "user", "content": parts}]


def user_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    if block["type"] == "text":
        return _text_part(block)
    if block["type"] == "image":
        return {"type": "image_url", "image_url": {"url": image_url(block.get("source"), param)}}
    raise Untranslatable(param, f"a {block['type']} block")


def image_url(source: Any, param: str) -> str:
    """An image source as the URL OpenAI wants: a ``data:`` URL for base64, the URL itself for a url source."""
    if isinstance(source, dict) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise Untranslatable(f"{param}.source", "an image that is neither base64 nor a URL")


def tool_message(block: dict[str, Any], param: str) -> dict[str, Any]:
    """A ``tool_result`` block as an OpenAI tool message (its content as text; ``is_error`` has no slot)."""
    _need(isinstance(block.get("tool_use_id"), str), f"{param}.tool_use_id", "is required")
    content = block.get("content")
    if isinstance(content, list):
        for k, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise Untranslatable(f"{param}.content[{k}]", "a tool result that is not text")
        content = "".join(str(part.get("text") or "") for part in content)
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": content if isinstance(content, str) else ""}


def _assistant_messages(content: str | list[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    """An assistant turn: its text as ``content``, its ``tool_use`` blocks as ``tool_calls``; thinking dropped."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content)):
        if block["type"] == "text":
            texts.append(str(block.get("text") or ""))
        elif block["type"] == "tool_use":
            arguments = orjson.dumps(block.get("input") if isinstance(block.get("input"), dict) else {}).decode()
            calls.append({"id": str(block.get("id") or ""), "type": "function", "function": {"name": str(block.get("name") or ""), "arguments": arguments}})
        elif block["type"] not in ("thinking", "redacted_thinking"):
            raise Untranslatable(f"{param}[{j}]", f"a {block['type']} block")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def chat_tool(tool: dict[str, Any], param: str) -> dict[str, Any]:
    """A client tool ``{name, description, input_schema}`` as an OpenAI function tool."""
    if tool.get("type") not in (None, "custom"):
        raise Untranslatable(param, f"the server tool {tool['type']}")
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def chat_tool_choice(choice: dict[str, Any] | None) -> dict[str, Any]:
    """``tool_choice`` (and ``disable_parallel_tool_use``) in OpenAI's fields."""
    if choice is None:
        return {}
    out: dict[str, Any] = {}
    if choice["type"] == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        out["tool_choice"] = _TOOL_CHOICES[choice["type"]]
    if choice.get("disable_parallel_tool_use") is True and choice["type"] != "none":
        out["parallel_tool_calls"] = False
    return out


def count_tokens(body: dict[str, Any]) -> dict[str, int]:
    """``/v1/messages/count_tokens``: the gateway's estimate, ``{"input_tokens": n}``, over the translated messages.

    ``max_tokens`` is not needed for a count (Anthropic's own endpoint takes
    none).  A request only an Anthropic target could take is still counted,
    from its messages as they are.
    """
    check_body(body, need_max_tokens=False)
    try:
        chat = _chat_body(body)
    except Untranslatable:
        chat = {"messages": list(body["messages"])}
    return {"input_tokens": estimate_prompt_tokens(chat)}


# -- answers: OpenAI chat -> Message --------------------------------------------


def message_id(ident: Any) -> str:
    """Anthropic's ids start with ``msg_``; another id is kept after that prefix so logs still match."""
    text = ident if isinstance(ident, str) and ident else "gateway"
    return text if text.startswith("msg_") else f"msg_{text}"


def anthropic_usage(raw: Any) -> dict[str, int]:
    """OpenAI usage as Anthropic's: ``input_tokens`` is only the uncached part of the prompt."""
    usage = usage_from_openai(raw)
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    return {
        "input_tokens": usage.prompt_tokens - cached - written,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
    }


def stop_reason(finish: Any) -> str:
    return FINISH_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def chat_to_message(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic Message (its first choice).

    ``reasoning_content`` is not shown: a thinking block needs a signature
    only Anthropic can make, and a client sending one back would be refused.
    """
    choices = answer.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    text = _answer_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {"type": "tool_use", "id": str(call.get("id") or ""), "name": str(function.get("name") or ""), "input": tool_input(function.get("arguments"))}
        )
    return {
        "id": message_id(answer.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(answer.get("usage")),
    }


def _answer_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return ""


# -- errors ---------------------------------------------------------------------


def error_type(status: int) -> str:
    """Anthropic's error type for a status; another 4xx is invalid_request_error, as Anthropic documents, another 5xx api_error."""
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def sse_event(kind: str, payload: dict[str, Any]) -> bytes:
    """One named event as Anthropic streams it (its SDK dispatches on the ``event:`` line)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


def error_event(kind: str, message: str) -> bytes:
    return sse_event("error", {"error": {"type": kind, "message": message}})


# -- streams: OpenAI chunks -> Messages events ----------------------------------


class MessagesStream:
    """OpenAI ``chat.completion.chunk`` dicts in, Anthropic's stream events (SSE bytes) out.

    ``feed`` each chunk as it comes, then ``finish`` once the stream ended:
    ``message_delta`` carries the stop reason and the usage, and OpenAI's
    usage arrives in a chunk after the one with ``finish_reason``, so both
    wait for the end.  An error chunk becomes an ``error`` event and ends
    the stream.  Text and tool calls become content blocks in order; a
    block is stopped when the next one starts.  ``reasoning_content`` deltas
    are not shown, as in ``chat_to_message``: a thinking block needs a
    signature that only Anthropic can make.
    """

    def __init__(self, model: str, message_id: str | None = None, input_tokens: int = 0) -> None:
        self.model = model
        self.id = message_id
        self.input_tokens = input_tokens
        self.started = False
        self.done = False
        self.index = -1  # the open content block, -1 for none
        self.open_kind: str | None = None  # "text" or "tool_use"
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool_calls index -> block index
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self.done:
            return b""
        if "error" in chunk:
            return self._failed(chunk["error"])
        out = [self._start(chunk.get("id"))]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out.append(self._choice(choice))
        return b"".join(out)

    def finish(self) -> bytes:
        """The closing events: the open block's stop, ``message_delta`` with stop reason and usage, ``message_stop``."""
        if self.done:
            return b""
        self.done = True
        out = [self._start(None), self._close_block()]
        usage = anthropic_usage(self.usage) if self.usage is not None else {"output_tokens": 0}
        out.append(sse_event("message_delta", {"delta": {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None}, "usage": usage}))
        out.append(sse_event("message_stop", {}))
        return b"".join(out)

    def _start(self, ident: Any) -> bytes:
        if self.started:
            return b""
        self.started = True
        self.id = self.id or message_id(ident)
        usage = {"input_tokens": self.input_tokens, "output_tokens": 0}
        message = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": []}
        return sse_event("message_start", {"message": {**message, "stop_reason": None, "stop_sequence": None, "usage": usage}})

    def _choice(self, choice: dict[str, Any]) -> bytes:
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        out = []
        text = delta.get("content")
        if isinstance(text, str) and text:
            out.append(self._open("text", {"type": "text", "text": ""}))
            out.append(sse_event("content_block_delta", {"index": self.index, "delta": {"type": "text_delta", "text": text}}))
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                out.append(self._tool_delta(call))
        if isinstance(choice.get("finish_reason"), str):
            self.stop_reason = stop_reason(choice["finish_reason"])
        return b"".join(out)

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        out = []
        position = call.get("index", 0)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        if position not in self.tool_blocks:
            block = {"type": "tool_use", "id": str(call.get("id") or ""), "name": str(function.get("name") or ""), "input": {}}
            out.append(self._open("tool_use", block, new=True))
            self.tool_blocks[position] = self.index
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments and self.tool_blocks[position] == self.index:
            out.append(sse_event("content_block_delta", {"index": self.index, "delta": {"type": "input_json_delta", "partial_json": arguments}}))
        return b"".join(out)

    def _open(self, kind: str, block: dict[str, Any], new: bool = False) -> bytes:
        """Start a block unless one of this kind is open (a tool call always starts its own)."""
        if self.open_kind == kind and not new:
            return b""
        out = self._close_block()
        self.index += 1
        self.open_kind = kind
        return out + sse_event("content_block_start", {"index": self.index, "content_block": block})

    def _close_block(self) -> bytes:
        if self.open_kind is None:
            return b""
        self.open_kind = None
        return sse_event("content_block_stop", {"index": self.index})

    def _failed(self, error: Any) -> bytes:
        self.done = True
        kind = error.get("type") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        return error_event(kind if kind in ANTHROPIC_ERROR_TYPES else "api_error", str(message or "the stream failed"))
