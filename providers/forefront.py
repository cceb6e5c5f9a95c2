"""Forefront (forefront-chat.txt, forefront-completions.txt).

One endpoint, ``POST /v1/chat/completions``, that takes either ``messages``
or a bare ``prompt``, so it serves both chat and text completions.  Its usage
is ``input_tokens``/``output_tokens``; its choices carry no ``finish_reason``
or ``index``.  It documents no streaming, so a streamed client request is
answered by the gateway from the whole response.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.base import Adapter, BadAnswer, Capabilities, ResponseContext, UpstreamCall, Usage, checked_usage, token_count
from providers.operations import Operation

_FORWARDED = ("max_tokens", "temperature", "stop")


def _read_usage(raw: dict[str, Any]) -> Usage:
    prompt = token_count(_first_present(raw, "input_tokens", "prompt_tokens"))
    completion = token_count(_first_present(raw, "output_tokens", "completion_tokens"))
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=token_count(raw.get("total_tokens")) or prompt + completion)


def _first_present(raw: dict[str, Any], *names: str) -> Any:
    # Every present value is checked: a nonsense ``input_tokens`` must not hide behind a good ``prompt_tokens``.
    present = [raw[name] for name in names if raw.get(name) is not None]
    for value in present:
        token_count(value)
    return next((value for value in present if value), None)


def _text(payload: dict[str, Any]) -> tuple[str, str | None]:
    """The answer's text and finish reason, from any of the shapes Forefront's docs show; ``BadAnswer`` if none."""
    if not isinstance(payload, dict):
        raise BadAnswer("the answer is not a JSON object")
    choices = payload.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            return message["content"], first.get("finish_reason")
        if isinstance(first.get("text"), str):
            return first["text"], first.get("finish_reason")
    message = payload.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return message["content"], None
    if choices is None and message is None:
        raise BadAnswer("the answer has neither choices nor a message")
    raise BadAnswer("the answer has no choices[0].message.content, choices[0].text or message.content string")


def _id(payload: dict[str, Any]) -> str | None:
    ident = payload.get("id")
    return ident if isinstance(ident, str) else None


class ForefrontAdapter(Adapter):
    kind = "forefront"
    capabilities = Capabilities(
        operations=frozenset({Operation.CHAT, Operation.COMPLETION}),
        streams=frozenset(),
        params=frozenset({"messages", "prompt", *_FORWARDED}),
        drops=frozenset({"user", "metadata", "n"}),
    )
    default_base_url = "https://api.forefront.ai/v1"

    def build_call(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        payload: dict[str, Any] = {"model": model}
        if op is Operation.CHAT:
            payload["messages"] = body["messages"]
        else:
            prompt = body["prompt"]
            payload["prompt"] = prompt if isinstance(prompt, str) else "\n".join(map(str, prompt))
        for name in _FORWARDED:
            if name in body and body[name] is not None:
                payload[name] = body[name]
        stop = payload.get("stop")
        if isinstance(stop, str):
            payload["stop"] = [stop]
        return UpstreamCall("/chat/completions", orjson.dumps(payload), stream=False)

    def translate_response(self, op: Operation, payload: dict[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
        text, finish = _text(payload)
        usage = checked_usage(_read_usage, payload.get("usage"), ctx)
        finish = finish if isinstance(finish, str) and finish else "stop"
        out: dict[str, Any]
        if op is Operation.CHAT:
            out = {
                "id": _id(payload) or f"chatcmpl-{ctx.request_id}",
                "object": "chat.completion",
                "created": ctx.created,
                "model": ctx.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}],
            }
        else:
            out = {
                "id": _id(payload) or f"cmpl-{ctx.request_id}",
                "object": "text_completion",
                "created": ctx.created,
                "model": ctx.model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            }
        if usage is not None:
            out["usage"] = usage.to_openai()
        out["provider"] = ctx.provider
        return out, usage
