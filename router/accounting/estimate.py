"""Token counts the gateway guesses when the provider reported none, or a stream was cut.

The rule is simple and documented, so a bill can be checked by hand:

    prompt tokens      characters of the prompt / 4 (the mock provider's rule), at least 1
    completion tokens  for a stream: one per content chunk relayed to the client
                       (providers send about one token per chunk);
                       for a whole answer: characters of the answer / 4, rounded up

Every ``Usage`` made here has ``estimated=True``; the ledger stores it as
``usage_estimated: true`` so finance can tell a guess from a provider's count.
"""

from __future__ import annotations

from typing import Any

from providers.base import Usage, estimate_prompt_tokens


def answer_text(answer: dict[str, Any]) -> str:
    """The text of an OpenAI-shaped answer (chat or text completion), all choices."""
    parts: list[str] = []
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(message["content"])
        elif isinstance(choice.get("text"), str):
            parts.append(choice["text"])
    return "".join(parts)


def estimate_usage(body: dict[str, Any], *, completion_chars: int | None = None, chunks: int | None = None) -> Usage:
    prompt = estimate_prompt_tokens(body)
    if chunks is not None:
        completion = chunks
    else:
        completion = -(-(completion_chars or 0) // 4)  # rounded up: any text is at least one token
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion, estimated=True)
