"""OpenAI's Responses API (``POST /v1/responses``) served from chat targets: the pure translation both ways.

Clients built on OpenAI's newer tooling (``client.responses.create`` and
``.stream``, the Vercel AI SDK's default model, the Agents SDK) speak the
Responses API; every provider behind the gateway speaks chat completions.
This module turns a Responses request into a chat request body, a chat
completion into a Response object, and a chat stream into the Responses
event stream, so the request path routes, fails over and charges the chat
request as it does any other.  No I/O here: the request path calls these.

What cannot be carried is refused with a 400 naming the field, rather than
silently answered differently from what the client asked:

- ``previous_response_id``, ``conversation``, ``prompt`` (a stored prompt)
  and ``background``: each needs a store of past responses, and the gateway
  keeps none.  Storing conversations would put every client's transcripts in
  the gateway (a privacy and retention question for each company running it)
  and tie a conversation to one replica; sending the whole ``input`` each
  time works through any replica and any target.
- Built-in tools (``web_search``, ``file_search``, ``computer_use``...): they
  run inside OpenAI; a chat target has only function tools.

Left out on purpose (accepted, not carried): ``store`` (nothing is stored),
``include``, ``truncation``, ``top_logprobs``, ``max_tool_calls``,
``stream_options``, ``prompt_cache_retention``, ``context_management``,
``reasoning.summary``.  Any other field the module does not know is passed
through to the chat body unchanged: gateway extensions (``models``,
``max_price``) ride along, and a field a target does not take is named by it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from router.errors import InvalidRequest, NativeOnly

Json = dict[str, Any]


class BadResponsesRequest(InvalidRequest, ValueError):
    """A Responses request this gateway cannot serve: a 400 ``invalid_request_error`` whose ``param`` names the field.

    An ``InvalidRequest`` so the request path renders it like any other
    client mistake (``to_body``); a ``ValueError`` so pure callers need not
    know the gateway's error tree.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param=param)


class NeedsNative(BadResponsesRequest, NativeOnly):
    """A Responses feature only a provider that speaks the Responses API itself can serve (state, built-in tools)."""


_NO_STATE = "this gateway keeps no conversation state: send the whole conversation in `input` each time"
_STATEFUL = {
    "previous_response_id": f"previous_response_id is not supported: {_NO_STATE}",
    "conversation": f"conversation is not supported: {_NO_STATE}",
    "prompt": "prompt (a stored prompt template) is not supported: this gateway stores no prompts; send `instructions` and `input`",
}
# Fields of a Responses request that are translated (or dropped) here rather than passed through as they are.
_HANDLED = frozenset(
    {"input", "instructions", "tools", "tool_choice", "text", "stream", "max_output_tokens", "reasoning", "background"}
    | {"store", "include", "truncation", "top_logprobs", "max_tool_calls", "stream_options", "prompt_cache_retention", "context_management"}
)
_SYSTEM_ROLES = {"system": "system", "developer": "system"}  # "system" is the role every chat target takes
_TOOL_CHOICE_OPTIONS = frozenset({"none", "auto", "required"})


def new_response_id() -> str:
    """A fresh ``resp_…`` id, in the shape OpenAI's are (clients sometimes check the prefix)."""
    return "resp_" + secrets.token_hex(24)


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _present(body: Json) -> Json:
    """The body without its ``null`` fields: a client sending ``"previous_response_id": null`` means it is absent."""
    return {key: value for key, value in body.items() if value is not None}


def _need(value: Any, kind: type | tuple[type, ...], param: str, what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BadResponsesRequest(f"{param} must be {what}", param)
    return value


# ---------------------------------------------------------------- request


def responses_to_chat(body: Json) -> Json:
    """A Responses request body → the chat completions request body that asks a chat target the same thing.

    Raises ``BadResponsesRequest`` (a 400 naming the field) for what a chat
    target cannot do or the request gets wrong.
    """
    body = _present(_need(body, dict, "body", "a JSON object"))
    _refuse_state(body)
    chat: Json = {key: value for key, value in body.items() if key not in _HANDLED}
    chat["messages"] = _instruction_messages(body) + input_messages(body.get("input"))
    if "max_output_tokens" in body:
        chat["max_completion_tokens"] = _need(body["max_output_tokens"], int, "max_output_tokens", "an integer")
    if "tools" in body:
        chat["tools"] = chat_tools(body["tools"])
    if "tool_choice" in body:
        chat["tool_choice"] = chat_tool_choice(body["tool_choice"])
    chat.update(_text_fields(body.get("text")))
    chat.update(_reasoning_fields(body.get("reasoning")))
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the Response's usage comes from the last chunk
    return chat


def _refuse_state(body: Json) -> None:
    for name, message in _STATEFUL.items():
        if name in body:
            raise NeedsNative(message, name)
    if body.get("background") is True:
        raise NeedsNative("background is not supported: a background response is kept to be polled later, and this gateway keeps no responses", "background")


def _instruction_messages(body: Json) -> list[Json]:
    if "instructions" not in body:
        return []
    return [{"role": "system", "content": _need(body["instructions"], str, "instructions", "a string")}]


def input_messages(value: Any) -> list[Json]:
    """``input`` (a string, or a list of items) → chat messages, in order."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadResponsesRequest("input must be a string or a non-empty list of input items", "input")
    messages: list[Json] = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        item = _present(_need(item, dict, where, "an object"))
        kind = item.get("type", "message")
        handler = _ITEM_HANDLERS.get(kind)
        if handler is None:
            raise BadResponsesRequest(
                f"{where}: input items of type {kind!r} are not supported here (message, function_call, function_call_output)", f"{where}.type"
            )
        handler(messages, item, where)
    return messages


def _message_item(messages: list[Json], item: Json, where: str) -> None:
    role = item.get("role")
    content = item.get("content")
    if not isinstance(content, (str, list)):
        raise BadResponsesRequest(f"{where}.content must be a string or a list of content parts", f"{where}.content")
    if role == "user":
        messages.append({"role": "user", "content": content if isinstance(content, str) else user_parts(content, f"{where}.content")})
    elif role in _SYSTEM_ROLES:
        messages.append({"role": _SYSTEM_ROLES[role], "content": _text_only(content, f"{where}.content")})
    elif role == "assistant":
        messages.append(_assistant_message(content, f"{where}.content"))
    else:
        raise BadResponsesRequest(f"{where}.role must be one of user, system, developer, assistant", f"{where}.role")


def _assistant_message(content: str | list[Any], where: str) -> Json:
    """An assistant turn fed back (text, maybe a refusal): chat takes its text as a string and a refusal beside it."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    parts = [_need(part, dict, f"{where}[{i}]", "an object") for i, part in enumerate(content)]
    refusals = [part.get("refusal", "") for part in parts if part.get("type") == "refusal"]
    message: Json = {"role": "assistant", "content": _text_only([p for p in parts if p.get("type") != "refusal"], where)}
    if refusals:
        message["refusal"] = "".join(refusals)
    return message


def _function_call_item(messages: list[Json], item: Json, where: str) -> None:
    """A call the model made, fed back: it joins the assistant turn just before it (parallel calls share one)."""
    call = {
        "id": _need(item.get("call_id"), str, f"{where}.call_id", "a string"),
        "type": "function",
        "function": {
            "name": _need(item.get("name"), str, f"{where}.name", "a string"),
            "arguments": _need(item.get("arguments"), str, f"{where}.arguments", "a string"),
        },
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_output_item(messages: list[Json], item: Json, where: str) -> None:
    output = item.get("output")
    if not isinstance(output, (str, list)):
        raise BadResponsesRequest(f"{where}.output must be a string or a list of content parts", f"{where}.output")
    messages.append(
        {"role": "tool", "tool_call_id": _need(item.get("call_id"), str, f"{where}.call_id", "a string"), "content": _text_only(output, f"{where}.output")}
    )


def _skip_item(messages: list[Json], item: Json, where: str) -> None:
    """A reasoning item fed back from an earlier answer: a chat target cannot take it, and it changes nothing it needs."""


_ITEM_HANDLERS = {
    "message": _message_item,
    "function_call": _function_call_item,
    "function_call_output": _function_output_item,
    "reasoning": _skip_item,
}
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def _text_only(content: str | list[Any], where: str) -> str:
    """Content a chat role takes only as text (system, assistant, tool): its text parts joined."""
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content):
        part = _need(part, dict, f"{where}[{index}]", "an object")
        if part.get("type") not in _TEXT_PARTS:
            raise BadResponsesRequest(
                f"{where}[{index}]: only text parts can go here through a chat target, not {part.get('type')!r}", f"{where}[{index}].type"
            )
        texts.append(_need(part.get("text"), str, f"{where}[{index}].text", "a string"))
    return "".join(texts)


def user_parts(parts: list[Any], where: str) -> list[Json]:
    """A user message's content parts → chat content parts (text, image_url, file)."""
    out = []
    for index, part in enumerate(parts):
        here = f"{where}[{index}]"
        part = _present(_need(part, dict, here, "an object"))
        convert = _PART_CONVERTERS.get(part.get("type"))
        if convert is None:
            raise BadResponsesRequest(
                f"{here}: content parts of type {part.get('type')!r} are not supported (input_text, input_image, input_file)", f"{here}.type"
            )
        out.append(convert(part, here))
    return out


def _text_part(part: Json, where: str) -> Json:
    return {"type": "text", "text": _need(part.get("text"), str, f"{where}.text", "a string")}


def _image_part(part: Json, where: str) -> Json:
    if "image_url" not in part:
        raise BadResponsesRequest(
            f"{where}: an input_image needs image_url (a URL or a data: URL); file_id refers to OpenAI's file store, which a chat target cannot read",
            f"{where}.image_url",
        )
    image = {"url": _need(part["image_url"], str, f"{where}.image_url", "a string")}
    if "detail" in part:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file_part(part: Json, where: str) -> Json:
    if "file_url" in part:
        raise BadResponsesRequest(f"{where}: an input_file by file_url is not supported through a chat target; send file_data", f"{where}.file_url")
    file = {key: part[key] for key in ("file_data", "file_id", "filename") if key in part}
    if not file:
        raise BadResponsesRequest(f"{where}: an input_file needs file_data or file_id", where)
    return {"type": "file", "file": file}


_PART_CONVERTERS = {"input_text": _text_part, "output_text": _text_part, "input_image": _image_part, "input_file": _file_part}


def chat_tools(tools: Any) -> list[Json]:
    """Function tools → chat function tools; a built-in tool is refused by its type."""
    _need(tools, list, "tools", "a list")
    out = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        tool = _present(_need(tool, dict, where, "an object"))
        kind = tool.get("type")
        if kind != "function":
            raise NeedsNative(
                f"{where}: the {kind!r} tool is not supported: built-in tools run inside OpenAI's Responses API, and this gateway serves the model through chat completions, which take function tools only",
                f"{where}.type",
            )
        function = {"name": _need(tool.get("name"), str, f"{where}.name", "a string")}
        function.update({key: tool[key] for key in ("description", "parameters", "strict") if key in tool})
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: Any) -> Any:
    """``tool_choice`` → chat's: the options as they are, a function by name, allowed_tools with chat's nesting."""
    if isinstance(choice, str) and choice in _TOOL_CHOICE_OPTIONS:
        return choice
    choice = _need(choice, dict, "tool_choice", "none, auto, required or an object")
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "function": {"name": _need(choice.get("name"), str, "tool_choice.name", "a string")}}
    if kind == "allowed_tools":
        names = [_allowed_name(tool, f"tool_choice.tools[{i}]") for i, tool in enumerate(_need(choice.get("tools"), list, "tool_choice.tools", "a list"))]
        tools = [{"type": "function", "function": {"name": name}} for name in names]
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": tools}}
    raise BadResponsesRequest(f"tool_choice of type {kind!r} is not supported: only function tools reach a chat target", "tool_choice.type")


def _allowed_name(tool: Any, where: str) -> str:
    tool = _need(tool, dict, where, "an object")
    if tool.get("type") != "function":
        raise BadResponsesRequest(f"{where}: only function tools can be allowed through a chat target, not {tool.get('type')!r}", f"{where}.type")
    return _need(tool.get("name"), str, f"{where}.name", "a string")


def _text_fields(text: Any) -> Json:
    """``text.format`` → ``response_format``; ``text.verbosity`` → ``verbosity``."""
    if text is None:
        return {}
    text = _present(_need(text, dict, "text", "an object"))
    out: Json = {"verbosity": text["verbosity"]} if "verbosity" in text else {}
    fmt = _present(_need(text.get("format", {"type": "text"}), dict, "text.format", "an object"))
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = {
            "name": _need(fmt.get("name"), str, "text.format.name", "a string"),
            "schema": _need(fmt.get("schema"), dict, "text.format.schema", "an object"),
        }
        schema.update({key: fmt[key] for key in ("description", "strict") if key in fmt})
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif kind != "text":
        raise BadResponsesRequest("text.format.type must be text, json_object or json_schema", "text.format.type")
    return out


def _reasoning_fields(reasoning: Any) -> Json:
    if reasoning is None:
        return {}
    effort = _need(reasoning, dict, "reasoning", "an object").get("effort")
    return {} if effort is None else {"reasoning_effort": effort}


# ---------------------------------------------------------------- response

# A chat completion's own fields; any other top-level key is a gateway label (``provider``...) kept on the Response.
_CHAT_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"})
# finish_reason → (status, incomplete_details.reason)
_FINISH = {"length": ("incomplete", "max_output_tokens"), "content_filter": ("incomplete", "content_filter")}


def response_shell(request: Json, response_id: str, created_at: float, model: str | None) -> Json:
    """A Response with no output yet, echoing the request as OpenAI's do (every field the SDK's ``Response`` requires)."""
    request = _present(request)
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata", {}),
        "model": model or request.get("model", ""),
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": request.get("reasoning"),
        "temperature": request.get("temperature"),
        "text": {"format": {"type": "text"}, **request.get("text", {})},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
    }


def usage_to_responses(usage: Any) -> Json | None:
    """Chat usage → Responses usage (input/output names, cached and reasoning tokens in their details)."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": prompt_details.get("cached_tokens") or 0,
            "cache_write_tokens": prompt_details.get("cache_write_tokens") or 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


def finish_status(finish_reason: str | None) -> tuple[str, Json | None]:
    """A chat finish_reason → the Response's status and incomplete_details."""
    status, reason = _FINISH.get(finish_reason or "", ("completed", None))
    return status, None if reason is None else {"reason": reason}


def output_text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str, refusal: str | None, status: str) -> Json:
    content = [output_text_part(text)] if text or not refusal else []
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> Json:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, "status": status}


def gateway_labels(answer: Json) -> Json:
    """The keys the gateway added to a chat answer or chunk (``provider``, ``upstream_provider``...)."""
    return {key: value for key, value in answer.items() if key not in _CHAT_KEYS}


def _text_of(content: Any) -> str:
    """A chat message's content: a string, or (from some providers) a list of text parts."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def chat_to_response(answer: Json, request: Json, response_id: str | None = None) -> Json:
    """A chat completion (as the gateway returns it) → the Response object answering ``request`` (the Responses body)."""
    choices = answer.get("choices") or [{}]
    choice, message = choices[0], choices[0].get("message") or {}
    status, incomplete = finish_status(choice.get("finish_reason"))
    item_status = "incomplete" if status == "incomplete" else "completed"
    calls = [
        function_call_item(
            _item_id("fc"), call.get("id") or _item_id("call"), call["function"].get("name", ""), call["function"].get("arguments") or "", item_status
        )
        for call in message.get("tool_calls") or []
        if isinstance(call, dict) and isinstance(call.get("function"), dict)
    ]
    text, refusal = _text_of(message.get("content")), message.get("refusal")
    output = [message_item(_item_id("msg"), text, refusal, item_status)] if text or refusal or not calls else []
    response = response_shell(request, response_id or new_response_id(), answer.get("created") or time.time(), answer.get("model"))
    response.update(status=status, incomplete_details=incomplete, output=output + calls, usage=usage_to_responses(answer.get("usage")))
    return {**gateway_labels(answer), **response}


# ---------------------------------------------------------------- stream


def sse_event(event: Json) -> bytes:
    """One Responses stream event: named by its type (``event:``) as OpenAI's are, the JSON in ``data:``."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


@dataclass(slots=True)
class _OpenItem:
    """An output item still streaming: where it sits in ``output`` and what has arrived for it."""

    index: int
    item: Json
    parts: list[str] = field(default_factory=list)


class ResponsesStream:
    """A chat completion stream (one ``chat.completion.chunk`` at a time) → the Responses event stream.

    ``feed`` returns the events for one chunk; ``finish`` the closing ones
    (each item's ``…done``, then ``response.completed``, or
    ``response.incomplete`` when the answer was cut by max_output_tokens, as
    OpenAI's are); ``failed`` a ``response.failed`` for a stream that broke.
    Nothing is written before the first chunk: ``response.created`` goes out
    with it, so a stream that fails before its first byte can still fail
    over.  Every event carries ``sequence_number``, counting from 0.
    """

    def __init__(self, request: Json, response_id: str | None = None) -> None:
        self.request = request
        self.response = response_shell(request, response_id or new_response_id(), time.time(), None)
        self.sequence = 0
        self.started = self.closed = False
        self._message: _OpenItem | None = None
        self._calls: dict[int, _OpenItem] = {}  # chat's tool_call index → its function_call item
        self._finish_reason: str | None = None
        self._labels: Json = {}

    def _event(self, type_: str, **fields: Any) -> bytes:
        event = {"type": type_, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse_event(event)

    def _start(self, chunk: Json) -> bytes:
        if self.started:
            return b""
        self.started = True
        if isinstance(chunk.get("created"), (int, float)):
            self.response["created_at"] = int(chunk["created"])
        if isinstance(chunk.get("model"), str):
            self.response["model"] = chunk["model"]
        return self._event("response.created", response=self.response) + self._event("response.in_progress", response=self.response)

    def feed(self, chunk: Json) -> bytes:
        """The events for one chat chunk (text deltas, tool call deltas; a usage chunk is kept for the end)."""
        if self.closed:
            return b""
        out = self._start(chunk)
        self._labels.update(gateway_labels(chunk))
        if isinstance(chunk.get("usage"), dict):
            self.response["usage"] = usage_to_responses(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # a Response has one answer; n > 1 is not asked for
            delta = choice.get("delta") or {}
            if _text_of(delta.get("content")):
                out += self._text(_text_of(delta["content"]))
            for call in delta.get("tool_calls") or []:
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return out

    def _add_item(self, item: Json) -> _OpenItem:
        self.response["output"].append(item)
        return _OpenItem(len(self.response["output"]) - 1, item)

    def _text(self, text: str) -> bytes:
        out = b""
        if self._message is None:
            self._message = self._add_item(message_item(_item_id("msg"), "", None, "in_progress") | {"content": []})
            out += self._event("response.output_item.added", output_index=self._message.index, item=self._message.item)
            self._message.item["content"].append(output_text_part(""))
            out += self._event(
                "response.content_part.added", item_id=self._message.item["id"], output_index=self._message.index, content_index=0, part=output_text_part("")
            )
        self._message.parts.append(text)
        return out + self._event(
            "response.output_text.delta", item_id=self._message.item["id"], output_index=self._message.index, content_index=0, delta=text, logprobs=[]
        )

    def _tool_call(self, call: Any) -> bytes:
        if not isinstance(call, dict):
            return b""
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        out = b""
        open_call = self._calls.get(call.get("index", 0))
        if open_call is None:
            out += self._close_message("completed")  # output items follow one another: the text before a call is done
            item = function_call_item(_item_id("fc"), call.get("id") or _item_id("call"), function.get("name") or "", "", "in_progress")
            open_call = self._calls[call.get("index", 0)] = self._add_item(item)
            out += self._event("response.output_item.added", output_index=open_call.index, item=item)
        elif function.get("name") and not open_call.item["name"]:
            open_call.item["name"] = function["name"]
        if function.get("arguments"):
            open_call.parts.append(function["arguments"])
            out += self._event(
                "response.function_call_arguments.delta", item_id=open_call.item["id"], output_index=open_call.index, delta=function["arguments"]
            )
        return out

    def _close_message(self, status: str) -> bytes:
        opened, self._message = self._message, None
        if opened is None:
            return b""
        text, item = "".join(opened.parts), opened.item
        part = output_text_part(text)
        item.update(status=status, content=[part])
        where = {"item_id": item["id"], "output_index": opened.index, "content_index": 0}
        return (
            self._event("response.output_text.done", **where, text=text, logprobs=[])
            + self._event("response.content_part.done", **where, part=part)
            + self._event("response.output_item.done", output_index=opened.index, item=item)
        )

    def _close_calls(self, status: str) -> bytes:
        out = b""
        for opened in sorted(self._calls.values(), key=lambda call: call.index):
            item = opened.item
            item.update(arguments="".join(opened.parts), status=status)
            out += self._event(
                "response.function_call_arguments.done", item_id=item["id"], output_index=opened.index, name=item["name"], arguments=item["arguments"]
            )
            out += self._event("response.output_item.done", output_index=opened.index, item=item)
        self._calls.clear()
        return out

    def finish(self) -> bytes:
        """The closing events once the chat stream has ended: each open item's done events, then the whole Response."""
        if self.closed:
            return b""
        out = self._start({})
        self.closed = True
        status, incomplete = finish_status(self._finish_reason)
        item_status = "incomplete" if status == "incomplete" else "completed"
        out += self._close_message(item_status) + self._close_calls(item_status)
        if not self.response["output"]:  # nothing at all was said: an empty message, so output_text is "" rather than missing
            self.response["output"].append(message_item(_item_id("msg"), "", None, item_status))
        self.response.update(status=status, incomplete_details=incomplete)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return out + self._event(kind, response=self.final_response())

    def failed(self, message: str, code: str = "server_error") -> bytes:
        """``response.failed`` for a stream that broke after it began: what had arrived, marked incomplete, and the error."""
        if self.closed:
            return b""
        out = self._start({})
        self.closed = True
        if self._message is not None:
            self._message.item.update(status="incomplete", content=[output_text_part("".join(self._message.parts))])
        for opened in self._calls.values():
            opened.item.update(status="incomplete", arguments="".join(opened.parts))
        self._message = None
        self._calls.clear()
        self.response.update(status="failed", error={"code": code, "message": message})
        return out + self._event("response.failed", response=self.final_response())

    def final_response(self) -> Json:
        """The Response as it stands, with the gateway's labels from the chunks (``provider``)."""
        return {**self._labels, **self.response}
