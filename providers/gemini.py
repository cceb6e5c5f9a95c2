"""Google Gemini's native API (generativelanguage.googleapis.com), written from Google's public reference.

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse
    x-goog-api-key: <key>

The client's OpenAI chat request becomes a ``GenerateContentRequest``:

    system / developer messages   systemInstruction (their text, in order)
    user                          role "user"; text parts, images from data:
                                  URLs as inlineData (other URLs as fileData)
    assistant                     role "model"; text, and tool_calls as
                                  functionCall parts (arguments parsed)
    tool                          functionResponse parts in a "user" turn,
                                  named after the call they answer
    temperature, top_p, max_(completion_)tokens, stop, n, seed,
    presence/frequency_penalty    generationConfig
    response_format               responseMimeType application/json
                                  (+ responseSchema for json_schema)
    tools / tool_choice           tools[{functionDeclarations}] /
                                  toolConfig.functionCallingConfig
                                  (auto AUTO, none NONE, required ANY, a
                                  named function ANY + allowedFunctionNames)

Gemini wants turns to alternate, so neighbouring turns of one role are
merged (several tool results become one turn, as Google's examples send).
JSON schemas are cut down to the OpenAPI subset ``Schema`` documents.

Answers come back as OpenAI chat completions: a choice per candidate, its
text parts joined (thought parts left out), functionCall parts as tool_calls
(with ids the gateway makes up when Gemini gives none), finishReason mapped
(``_FINISH``).  A prompt blocked outright (``promptFeedback.blockReason``, no
candidates) is one empty choice with finish_reason ``content_filter``.

Usage: prompt = promptTokenCount (which already includes the cached part)
+ toolUsePromptTokenCount; cached = cachedContentTokenCount; completion =
candidatesTokenCount + thoughtsTokenCount, reasoning = thoughtsTokenCount.
Gemini counts thoughts apart from the candidates but bills them as output,
while OpenAI's (and the ledger's) completion_tokens include reasoning
tokens, so the sum is what prices the call right.

A stream's every SSE event is a whole ``GenerateContentResponse`` with the
next piece of each candidate (and usage so far); each becomes one chat
chunk, and the usage of the last reaches the client in a final chunk when
it asked (``stream_options.include_usage``).  There is no ``[DONE]``: the
stream just ends.  Errors are ``{"error": {"code", "message", "status"}}``;
429 RESOURCE_EXHAUSTED and 503 UNAVAILABLE are statuses like any other
provider's, so the gateway's health rules apply unchanged.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson

from providers.base import (
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

_ROLES = {"user": "user", "assistant": "model", "tool": "user"}
_SYSTEM_ROLES = frozenset({"system", "developer"})
# OpenAI's name -> generationConfig's name, for values passed on as they are.
_GENERATION = {
    "temperature": "temperature",
    "top_p": "topP",
    "n": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "stop",
    "OTHER": "stop",
    "MALFORMED_FUNCTION_CALL": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
}
# The keys of the OpenAPI 3.0 subset Gemini's Schema documents; others (additionalProperties, $schema, strict) it refuses.
_SCHEMA_KEYS = frozenset(
    {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties", "required", "minProperties"}
    | {"maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum"}
)
_PARAMS = frozenset({"messages", "max_tokens", "max_completion_tokens", "stop", "tools", "tool_choice", "response_format", *_GENERATION})


class GeminiAdapter(Adapter):
    kind = "gemini"
    capabilities = Capabilities(
        operations=frozenset({Operation.CHAT}),
        streams=frozenset({Operation.CHAT}),
        params=_PARAMS,
        # Attribution and hints Gemini has no field for: dropped rather than skipping the target.
        drops=frozenset({"user", "metadata", "parallel_tool_calls", "store", "service_tier"}),
    )
    default_base_url = "https://generativelanguage.googleapis.com"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-goog-api-key": api_key}

    def build_call(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        return UpstreamCall(f"/v1beta/models/{quote(model, safe='')}{method}", orjson.dumps(gemini_request(body)), stream)

    def translate_response(self, op: Operation, payload: dict[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
        choices = _choices(payload, ctx.request_id)
        usage = gemini_usage(payload.get("usageMetadata"), ctx)
        out: dict[str, Any] = {
            "id": _response_id(payload, ctx),
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": choices,
        }
        if usage is not None:
            out["usage"] = usage.to_openai()
        out["provider"] = ctx.provider
        return out, usage

    def stream_translator(self, op: Operation, ctx: ResponseContext) -> StreamTranslator:
        return GeminiStream(ctx)

    def error_message(self, status: int, payload: Any) -> str:
        """Google's message, with its status name (RESOURCE_EXHAUSTED says more than the message does)."""
        message = super().error_message(status, payload)
        err = payload.get("error") if isinstance(payload, dict) else None
        name = err.get("status") if isinstance(err, dict) else None
        return f"{message} ({name})" if isinstance(name, str) and name not in message else message


# -- the request ------------------------------------------------------------


def gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """A GenerateContentRequest for an OpenAI chat body (never changed: everything is built anew)."""
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    names = _call_names(messages)
    system = [_text_of(m.get("content")) for m in messages if m.get("role") in _SYSTEM_ROLES]
    turns = [(_ROLES.get(m.get("role"), "user"), _parts(m, names)) for m in messages if m.get("role") not in _SYSTEM_ROLES]
    out: dict[str, Any] = {"contents": _merged(turns)}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    tools = _function_declarations(body.get("tools"))
    if tools:
        out["tools"] = [{"functionDeclarations": tools}]
    tool_config = _tool_config(body.get("tool_choice"))
    if tool_config is not None:
        out["toolConfig"] = tool_config
    return out


def _merged(turns: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    for role, parts in turns:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": list(parts)})
    return [c for c in contents if c["parts"]]


def _call_names(messages: list[dict[str, Any]]) -> dict[str, str]:
    """tool_call_id -> function name: a functionResponse is matched to its call by name."""
    names = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(call.get("id"), str):
                names[call["id"]] = str(function.get("name", ""))
    return names


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _parts(message: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    role = message.get("role")
    if role == "tool":
        name = names.get(str(message.get("tool_call_id")), "") or str(message.get("name", ""))
        return [{"functionResponse": {"name": name, "response": _tool_result(_text_of(message.get("content")))}}]
    content = message.get("content")
    parts = [{"text": content}] if isinstance(content, str) and content else _content_parts(content)
    if role == "assistant":
        parts += [_function_call(call) for call in message.get("tool_calls") or () if isinstance(call, dict)]
    return parts


def _tool_result(text: str) -> dict[str, Any]:
    """A tool's result as the JSON object functionResponse.response must be: the JSON it is, or ``{"result": text}``."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _function_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    raw = function.get("arguments")
    try:
        args = orjson.loads(raw) if isinstance(raw, str) and raw else {}
    except orjson.JSONDecodeError:
        args = {}
    return {"functionCall": {"name": str(function.get("name", "")), "args": args if isinstance(args, dict) else {}}}


def _content_parts(content: Any) -> list[dict[str, Any]]:
    parts = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            url = part["image_url"].get("url") if isinstance(part.get("image_url"), dict) else part.get("image_url")
            if isinstance(url, str):
                parts.append(_image(url))
    return parts


def _image(url: str) -> dict[str, Any]:
    """``data:<mime>;base64,<data>`` is sent inline; any other URL as fileData (Gemini fetches only the URIs it accepts)."""
    if url.startswith("data:") and ";base64," in url:
        head, data = url[5:].split(";base64,", 1)
        return {"inlineData": {"mimeType": head or "application/octet-stream", "data": data}}
    return {"fileData": {"mimeType": mimetypes.guess_type(url)[0] or "image/jpeg", "fileUri": url}}


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config = {name: body[key] for key, name in _GENERATION.items() if body.get(key) is not None}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            config["responseSchema"] = gemini_schema(schema)
    return config


def gemini_schema(schema: Any) -> Any:
    """A JSON schema cut down to Gemini's OpenAPI subset: unknown keys dropped, ``["T", "null"]`` as ``T`` + nullable."""
    if isinstance(schema, list):
        return [gemini_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = gemini_schema(value)
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            out["type"] = types[0] if types else "string"
            if len(types) < len(value):
                out["nullable"] = True
        else:
            out[key] = value
    return out


def _function_declarations(tools: Any) -> list[dict[str, Any]]:
    found = []
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        declaration: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            declaration["description"] = function["description"]
        parameters = function.get("parameters")
        if isinstance(parameters, dict) and parameters.get("properties"):
            declaration["parameters"] = gemini_schema(parameters)
        found.append(declaration)
    return found


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, str) and choice in _TOOL_MODES:
        return {"functionCallingConfig": {"mode": _TOOL_MODES[choice]}}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [function["name"]]}}
    return None


# -- the answer -------------------------------------------------------------


def _read_usage(raw: dict[str, Any]) -> Usage:
    prompt = token_count(raw.get("promptTokenCount")) + token_count(raw.get("toolUsePromptTokenCount"))
    thoughts = token_count(raw.get("thoughtsTokenCount"))
    completion = token_count(raw.get("candidatesTokenCount")) + thoughts
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=token_count(raw.get("totalTokenCount")) or prompt + completion,
        cached_tokens=token_count(raw.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def gemini_usage(raw: Any, ctx: ResponseContext | None = None) -> Usage | None:
    """``usageMetadata`` as a ``Usage`` (see the module's docstring for why the sums); ``None`` as ``checked_usage`` says."""
    return checked_usage(_read_usage, raw, ctx)


def _response_id(payload: dict[str, Any], ctx: ResponseContext) -> str:
    ident = payload.get("responseId")
    return f"chatcmpl-{ident}" if isinstance(ident, str) and ident else f"chatcmpl-{ctx.request_id}"


def _candidates(payload: Any) -> list[dict[str, Any]]:
    """The answer's candidates, checked; ``BadAnswer`` when it has none and does not say its prompt was blocked."""
    if not isinstance(payload, dict):
        raise BadAnswer("the answer is not a JSON object")
    candidates = payload.get("candidates")
    if candidates is None and _blocked(payload):
        return []
    if not isinstance(candidates, list) or not candidates:
        raise BadAnswer("the answer has no candidates list" if candidates is None else "candidates is not a non-empty list")
    for i, candidate in enumerate(candidates):
        if not isinstance(candidate, dict):
            raise BadAnswer(f"candidates[{i}] is not an object")
        content = candidate.get("content")
        if content is None and candidate.get("finishReason") is None:
            raise BadAnswer(f"candidates[{i}] has neither content nor a finishReason")
        if content is not None and not isinstance(content, dict):
            raise BadAnswer(f"candidates[{i}].content is not an object")
        if isinstance(content, dict) and not isinstance(content.get("parts", []), list):
            raise BadAnswer(f"candidates[{i}].content.parts is not a list")
    return candidates


def _blocked(payload: dict[str, Any]) -> bool:
    feedback = payload.get("promptFeedback")
    return isinstance(feedback, dict) and isinstance(feedback.get("blockReason"), str)


def _choices(payload: Any, request_id: str) -> list[dict[str, Any]]:
    candidates = _candidates(payload)
    if not candidates:
        return [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter", "logprobs": None}]
    return [_choice(position, candidate, request_id) for position, candidate in enumerate(candidates)]


def _choice(position: int, candidate: dict[str, Any], request_id: str) -> dict[str, Any]:
    index = _index(candidate, position)
    text, calls = _pieces(candidate, _id_maker(request_id, index))
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {"index": index, "message": message, "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)), "logprobs": None}


def _index(candidate: dict[str, Any], position: int) -> int:
    index = candidate.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else position


def finish_reason(reason: Any, called: bool) -> str | None:
    """Gemini's finishReason in OpenAI's words; a natural stop after function calls is ``tool_calls``, as OpenAI says it."""
    if reason is None:
        return None
    mapped = _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
    return "tool_calls" if called and mapped == "stop" else mapped


def _id_maker(request_id: str, index: int) -> Callable[[int], str]:
    """Call ids for functionCall parts without one: stable for a request, distinct per candidate and call."""
    return lambda n: "call_" + hashlib.sha256(f"{request_id}#{index}#{n}".encode()).hexdigest()[:24]


def _pieces(candidate: dict[str, Any], make_id: Callable[[int], str], first_call: int = 0) -> tuple[str, list[dict[str, Any]]]:
    """A candidate's visible text (thought parts left out) and its functionCall parts as OpenAI tool calls."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts, calls = [], []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            calls.append(_tool_call(part["functionCall"], make_id(first_call + len(calls))))
    return "".join(texts), calls


def _tool_call(call: dict[str, Any], fallback_id: str) -> dict[str, Any]:
    name = call.get("name")
    if not isinstance(name, str) or not name:
        raise BadAnswer("a functionCall has no name")
    args = call.get("args", {})
    ident = call.get("id")
    arguments = orjson.dumps(args if args is not None else {}).decode()
    return {"id": ident if isinstance(ident, str) and ident else fallback_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# -- the stream -------------------------------------------------------------


class GeminiStream(StreamTranslator):
    """Each event (a whole GenerateContentResponse holding the next pieces) becomes one OpenAI chat chunk.

    Per candidate it remembers whether the assistant role was sent and how
    many tool calls came (their OpenAI ``index``); the usage kept is the
    last event's, which is the whole call's.
    """

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}
        self._id: str | None = None

    def translate(self, data: bytes) -> bytes | None:
        event = event_object(data)
        if "error" in event:  # Google's error object mid-stream: the gateway ends the stream as failed
            return orjson.dumps({"error": event["error"]})
        self._id = self._id or _response_id(event, self.ctx)
        self._keep_usage(event.get("usageMetadata"))
        if event.get("candidates") is None and _blocked(event):
            return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}])
        if event.get("candidates") is None:
            return None  # a usage-only event
        choices = [self._choice(position, candidate) for position, candidate in enumerate(_candidates(event))]
        return self._chunk(choices)

    def _keep_usage(self, raw: Any) -> None:
        if raw is None or self.ctx.usage_rejected:
            return
        usage = gemini_usage(raw, self.ctx)
        # Each event's counts are the call's so far: the last is the whole call's.  One nonsense count rejects them all.
        self.usage = None if self.ctx.usage_rejected else usage or self.usage

    def _choice(self, position: int, candidate: dict[str, Any]) -> dict[str, Any]:
        index = _index(candidate, position)
        seen = self._calls.get(index, 0)
        text, calls = _pieces(candidate, _id_maker(self.ctx.request_id, index), seen)
        self._calls[index] = seen + len(calls)
        delta: dict[str, Any] = {}
        if index not in self._started:
            self._started.add(index)
            delta["role"] = "assistant"
        if text or not calls:
            delta["content"] = text
        if calls:
            delta["tool_calls"] = [{"index": seen + n, **call} for n, call in enumerate(calls)]
        return {"index": index, "delta": delta, "finish_reason": finish_reason(candidate.get("finishReason"), bool(self._calls[index]))}

    def _chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "provider": self.ctx.provider,
            "id": self._id or f"chatcmpl-{self.ctx.request_id}",
            "object": "chat.completion.chunk",
            "created": self.ctx.created,
            "model": self.ctx.model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage.to_openai()
        return orjson.dumps(chunk)

    def finish(self) -> list[bytes]:
        if self.ctx.include_usage and self.usage is not None:
            return [self._chunk([], self.usage)]
        return []
