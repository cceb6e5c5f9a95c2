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

from providers.base import Adapter, Capabilities, ResponseContext, UpstreamCall, Usage
from providers.operations import Operation

_FORWARDED = ("max_tokens", "temperature", "stop")


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = int(raw.get("input_tokens") or raw.get("prompt_tokens") or 0)
    completion = int(raw.get("output_tokens") or raw.get("completion_tokens") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=int(raw.get("total_tokens") or prompt + completion))


def _text(payload: dict[str, Any]) -> tuple[str, str | None]:
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
    return "", None


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
        usage = _usage(payload.get("usage"))
        finish = finish or "stop"
        out: dict[str, Any]
        if op is Operation.CHAT:
            out = {
                "id": payload.get("id") or f"chatcmpl-{ctx.request_id}",
                "object": "chat.completion",
                "created": ctx.created,
                "model": ctx.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}],
            }
        else:
            out = {
                "id": payload.get("id") or f"cmpl-{ctx.request_id}",
                "object": "text_completion",
                "created": ctx.created,
                "model": ctx.model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            }
        if usage is not None:
            out["usage"] = usage.to_openai()
        out["provider"] = ctx.provider
        return out, usage
