"""Interactive AI's LLM router (interactive-completions.txt): text completions only.

``POST /completions`` with a prompt string or list.  Its answer is already
OpenAI's ``text_completion`` with extra choice fields (``native_finish_reason``,
``reasoning``) and a ``provider``, all kept.  It would accept a ``models``
fallback list of its own; the gateway does the falling back, so only the
target's model is sent.  Errors come as ``{"error": {code, message, param, type}}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.base import Adapter, Capabilities, ResponseContext, StreamTranslator, UpstreamCall, Usage
from providers.openai import OpenAIStream, label_response, openai_payload
from providers.operations import Operation


class InteractiveAdapter(Adapter):
    kind = "interactive"
    capabilities = Capabilities(
        operations=frozenset({Operation.COMPLETION}),
        streams=frozenset({Operation.COMPLETION}),
        params=frozenset(
            {
                "prompt",
                "best_of",
                "echo",
                "frequency_penalty",
                "logit_bias",
                "logprobs",
                "max_tokens",
                "n",
                "presence_penalty",
                "seed",
                "stop",
                "suffix",
                "temperature",
                "top_p",
                "user",
                "metadata",
                "response_format",
            }
        ),
    )
    default_base_url = "https://app.interactive.ai/api/v1"

    def build_call(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> UpstreamCall:
        return UpstreamCall("/completions", orjson.dumps(openai_payload(body, model, stream)), stream)

    def translate_response(self, op: Operation, payload: dict[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
        # Interactive names the model vendor it routed to in ``provider``;
        # keep it where a client can still see it, and label ours.
        if "provider" in payload and "upstream_provider" not in payload:
            payload["upstream_provider"] = payload["provider"]
        return payload, label_response(op, payload, ctx)

    def stream_translator(self, op: Operation, ctx: ResponseContext) -> StreamTranslator:
        return OpenAIStream(ctx)
