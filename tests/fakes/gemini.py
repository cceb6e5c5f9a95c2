"""The fake Gemini API, from Google's reference (generateContent, streamGenerateContent, errors).

It checks what the reference states: the ``x-goog-api-key`` header, the
``models/{model}:method`` path, ``alt=sse`` on streams (the only stream form
it serves), and a ``GenerateContentRequest`` with no field the reference
lacks (the real API refuses unknown fields with a 400 INVALID_ARGUMENT).
It answers with text, or, when tools are declared, calling is not NONE and
the last turn is the user's own words, a ``functionCall`` of the first
allowed function; right after a ``functionResponse`` it answers with text
quoting it.  Usage carries cached and thoughts tokens.  ``upstream`` is the
``FakeUpstream`` it serves for (its key, ids, events).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
REQUEST_FIELDS = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings", "cachedContent"}
GENERATION_FIELDS = {
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
}
PART_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}
# Promptly 21 tokens, 8 of them cached; 6 of answer and 8 of thought: 35 in all.
DEFAULT_USAGE = {
    "promptTokenCount": 21,
    "candidatesTokenCount": 6,
    "totalTokenCount": 35,
    "cachedContentTokenCount": 8,
    "thoughtsTokenCount": 8,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 21}],
}


def google_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message, "status": GOOGLE_STATUS.get(status, "UNKNOWN")}}, status=status)


def request_problem(body: dict[str, Any]) -> str | None:
    """What the real API would refuse in a GenerateContentRequest, in a few words; ``None`` if nothing."""
    unknown = set(body) - REQUEST_FIELDS
    if unknown:
        return f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r}: Cannot find field."
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "contents is not specified"
    for i, content in enumerate(contents):
        problem = _content_problem(content, f"contents[{i}]", roles={"user", "model"})
        if problem:
            return problem
    system = body.get("systemInstruction")
    if system is not None and _content_problem(system, "systemInstruction", roles={None, "user", "system"}):
        return "systemInstruction is invalid"
    unknown_config = set(body.get("generationConfig") or {}) - GENERATION_FIELDS
    if unknown_config:
        return f"Unknown name {sorted(unknown_config)[0]!r} at 'generation_config'"
    return _tools_problem(body)


def _content_problem(content: Any, where: str, roles: set[str | None]) -> str | None:
    if not isinstance(content, dict) or content.get("role") not in roles:
        return f"{where}: role must be one of {sorted(r for r in roles if r)}"
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        return f"{where}: parts must not be empty"
    for j, part in enumerate(parts):
        data = set(part) & PART_FIELDS if isinstance(part, dict) else set()
        if len(data) != 1:
            return f"{where}.parts[{j}]: exactly one of {sorted(PART_FIELDS)} is required"
        inline = part.get("inlineData")
        if inline is not None and not (isinstance(inline, dict) and inline.get("mimeType") and inline.get("data")):
            return f"{where}.parts[{j}].inlineData needs mimeType and data"
        response = part.get("functionResponse")
        if response is not None and not (isinstance(response, dict) and response.get("name") and isinstance(response.get("response"), dict)):
            return f"{where}.parts[{j}].functionResponse needs a name and a response object"
    return None


def _tools_problem(body: dict[str, Any]) -> str | None:
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or ():
            if not isinstance(declaration.get("name"), str):
                return "a function declaration has no name"
            if "additionalProperties" in json.dumps(declaration.get("parameters", {})):
                return "Unknown name 'additionalProperties' at 'tools[0].function_declarations[0].parameters'"
    config = (body.get("toolConfig") or {}).get("functionCallingConfig")
    if config is not None:
        if config.get("mode") not in ("AUTO", "ANY", "NONE", "VALIDATED"):
            return "functionCallingConfig.mode is invalid"
        if config.get("allowedFunctionNames") and config.get("mode") != "ANY":
            return "allowedFunctionNames may be set only when mode is ANY"
    return None


def _declared(body: dict[str, Any]) -> list[str]:
    return [d["name"] for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()]


def answer_parts(body: dict[str, Any], behaviour: Any) -> list[dict[str, Any]]:
    """What the model says: a functionCall when it would call, text quoting a functionResponse, else plain text."""
    last = body["contents"][-1]
    results = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
    if results:
        return [{"text": " ".join(f"The tool {r['name']} returned {json.dumps(r['response'])}" for r in results)}]
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    names = config.get("allowedFunctionNames") or _declared(body)
    if names and config.get("mode", "AUTO") != "NONE" and last["role"] == "user":
        return [{"functionCall": {"name": names[0], "args": behaviour.call_args or {}}}]
    return [{"text": behaviour.text or "Hello from gemini"}]


def _candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return candidate


async def gemini_answer(upstream: Any, request: web.Request, body: dict[str, Any], behaviour: Any) -> web.StreamResponse:
    """One call to ``/v1beta/models/{model}:{method}``: checked as the reference says, answered as ``behaviour`` says."""
    key = request.headers.get("x-goog-api-key")
    if key is None:
        return google_error(403, "Method doesn't allow unregistered callers. Please use an API key.")
    if key != upstream.api_key:
        return google_error(400, "API key not valid. Please pass a valid API key.")
    model, _, method = request.match_info["call"].partition(":")
    if method not in ("generateContent", "streamGenerateContent") or not model:
        return google_error(404, f"method {method!r} is not found")
    if method == "streamGenerateContent" and request.query.get("alt") != "sse":
        return google_error(400, "this fake serves streams as server-sent events only (alt=sse)")
    problem = request_problem(body)
    if problem is not None:
        return google_error(400, problem)
    if behaviour.delay:
        await asyncio.sleep(behaviour.delay)
    if behaviour.status >= 400:
        body_out = behaviour.body or {
            "error": {"code": behaviour.status, "message": f"fake gemini says {behaviour.status}", "status": GOOGLE_STATUS.get(behaviour.status, "UNKNOWN")}
        }
        return web.json_response(body_out, status=behaviour.status, headers=behaviour.headers)
    if method == "streamGenerateContent":
        return await _stream(upstream, request, body, behaviour, model)
    if behaviour.raw is not None:
        return web.Response(body=behaviour.raw, content_type="application/json")
    if behaviour.body is not None:
        return web.json_response(behaviour.body)
    answer = {
        "candidates": [_candidate(answer_parts(body, behaviour), "STOP")],
        "usageMetadata": behaviour.usage or DEFAULT_USAGE,
        "modelVersion": model,
        "responseId": f"gemini-{next(upstream._ids)}",
    }
    return web.json_response(answer, headers=behaviour.headers)


def _events(body: dict[str, Any], behaviour: Any, model: str, ident: str) -> list[dict[str, Any]]:
    """The stream's GenerateContentResponses: text a word each (usage so far on each), a function call whole."""
    parts, usage = answer_parts(body, behaviour), behaviour.usage or DEFAULT_USAGE
    pieces = [[p] for p in parts if "functionCall" in p] or [[{"text": w if i == 0 else " " + w}] for i, w in enumerate(parts[0]["text"].split(" "))]
    so_far = {"promptTokenCount": usage.get("promptTokenCount", 0), "totalTokenCount": usage.get("promptTokenCount", 0)}
    events = [{"candidates": [_candidate(piece, None)], "usageMetadata": so_far, "modelVersion": model, "responseId": ident} for piece in pieces]
    events[-1]["candidates"][0]["finishReason"] = "STOP"
    events[-1]["usageMetadata"] = usage
    return events


async def _stream(upstream: Any, request: web.Request, body: dict[str, Any], behaviour: Any, model: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **behaviour.headers})
    await response.prepare(request)
    if behaviour.events is not None:
        for raw in behaviour.events:
            await response.write(b"data: " + raw + b"\r\n\r\n")
        return response
    try:
        for i, event in enumerate(_events(body, behaviour, model, f"gemini-{next(upstream._ids)}")):
            await response.write(b"data: " + json.dumps(event).encode() + b"\r\n\r\n")  # Google ends its events with CRLF CRLF
            if i == 0:
                upstream.stream_started.set()
                if behaviour.drop_after_first:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if behaviour.gate is not None:
                    await behaviour.gate.wait()
    except (asyncio.CancelledError, ConnectionResetError):
        upstream.disconnected.set()
        raise
    return response
