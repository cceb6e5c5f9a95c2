"""The client's request, parsed and checked once; attempts translate from it and never mutate it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.base import estimate_prompt_tokens
from router.errors import InvalidRequest
from router.operations import Operation

# Type checks for the fields whose mistakes we can name before any upstream
# sees them.  (bool is rejected where a number is expected: JSON true is not 1.)
_NUMBER_FIELDS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "repetition_penalty")
# The largest value each integer field may take.  A number past these is a
# client's mistake, said with a 400 naming the field, before it reaches a
# limiter or a Lua script (where 2**63-1 tokens once made Redis fail for everyone).
MAX_TOKENS = 2**31 - 1  # far beyond any model's window, and well inside the 2**53 that Lua counts exactly
_INT_FIELDS = {
    "max_tokens": MAX_TOKENS,
    "max_completion_tokens": MAX_TOKENS,
    "n": 128,  # OpenAI's own bound
    "best_of": 128,
    "seed": 2**63 - 1,  # passed through to the provider only
    "top_k": MAX_TOKENS,
    "top_logprobs": 20,  # OpenAI's own bound
}


def new_request_id() -> str:
    return os.urandom(12).hex()


@dataclass(slots=True)
class ClientRequest:
    op: Operation
    body: dict[str, Any]
    models: list[str]  # the request's own order: ``model`` then each of ``models``
    stream: bool
    include_usage: bool
    request_id: str
    received_at: float = field(default_factory=time.monotonic)
    _prompt_tokens: int | None = None

    @property
    def prompt_tokens_estimate(self) -> int:
        """Walked once per request, though ordering, every admission and auth all ask."""
        if self._prompt_tokens is None:
            self._prompt_tokens = estimate_prompt_tokens(self.body)
        return self._prompt_tokens

    @property
    def max_output_tokens(self) -> int | None:
        value = self.body.get("max_completion_tokens") or self.body.get("max_tokens")
        return value if isinstance(value, int) else None

    @property
    def metadata(self) -> dict[str, str]:
        value = self.body.get("metadata")
        return value if isinstance(value, dict) else {}


MAX_NAME_CHARS = 256  # a model name, a user id: what fits in a header and a log line


def _printable(value: str) -> bool:
    # No control characters: these strings end up in response headers and log lines.
    return value.isprintable()


def _check_text(value: str, param: str, what: str) -> None:
    if not _printable(value):
        raise InvalidRequest(f"{what} must not contain control characters (such as a line break)", param=param)
    if len(value) > MAX_NAME_CHARS:
        raise InvalidRequest(f"{what} is {len(value)} characters long; at most {MAX_NAME_CHARS} are accepted", param=param)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def parse_request(op: Operation, raw: bytes, request_id: str) -> ClientRequest:
    """The body, checked once: every mistake a client can make here is a 400 naming the field."""
    body = _decode(raw)
    models = _models(body)
    if op is Operation.CHAT:
        _check_messages(body.get("messages"))
    else:
        _check_prompt(body.get("prompt"))
    _check_numbers(body)
    stream, include_usage = _stream(body)
    _check_attribution(body)
    return ClientRequest(op=op, body=body, models=models, stream=stream, include_usage=include_usage, request_id=request_id)


def _decode(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {_kind(body)}", code="invalid_json")
    return body


def _models(body: dict[str, Any]) -> list[str]:
    """``model`` then each of ``models``: the request's own order of aliases."""
    model = body.get("model")
    extra = body.get("models")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest(f"'model' must be a string, got {_kind(model)}", param="model")
    if extra is not None and (not isinstance(extra, list) or not all(isinstance(m, str) for m in extra)):
        raise InvalidRequest("'models' must be an array of model names", param="models")
    if model is not None:
        _check_text(model, "model", "'model'")
    for i, name in enumerate(extra or ()):
        _check_text(name, f"models[{i}]", f"'models[{i}]'")
    models = ([model] if model else []) + [m for m in (extra or []) if m != model]
    if not models:
        raise InvalidRequest("you must name a model: set 'model' (or a 'models' fallback list)", param="model", code="missing_model")
    return models


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise InvalidRequest("'messages' is required", param="messages")
    if not isinstance(messages, list):
        raise InvalidRequest(f"'messages' must be an array of message objects, got {_kind(messages)}", param="messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a string 'role'", param=f"messages[{i}]")


def _check_prompt(prompt: Any) -> None:
    if prompt is None:
        raise InvalidRequest("'prompt' is required", param="prompt")
    if not isinstance(prompt, (str, list)):
        raise InvalidRequest(f"'prompt' must be a string or an array, got {_kind(prompt)}", param="prompt")


def _check_numbers(body: dict[str, Any]) -> None:
    for name in _NUMBER_FIELDS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidRequest(f"'{name}' must be a number, got {_kind(value)}", param=name)
    for name, most in _INT_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"'{name}' must be an integer, got {_kind(value)}", param=name)
        if value < 0:
            raise InvalidRequest(f"'{name}' must not be negative", param=name)
        if value > most:
            raise InvalidRequest(f"'{name}' must be at most {most}, got {value}", param=name)


def _stream(body: dict[str, Any]) -> tuple[bool, bool]:
    """(whether to stream, whether the client asked for the usage chunk)."""
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest(f"'stream' must be a boolean, got {_kind(stream)}", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest(f"'stream_options' must be an object, got {_kind(options)}", param="stream_options")
    return stream, bool(stream and options and options.get("include_usage"))


def _check_attribution(body: dict[str, Any]) -> None:
    """``metadata`` and ``user`` reach the ledger and the logs: strings, with no control characters."""
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())):
        raise InvalidRequest("'metadata' must be an object of string values", param="metadata")
    for key, value in (metadata or {}).items():
        if not (_printable(key) and _printable(value)):
            raise InvalidRequest(f"'metadata' key {key!r} must not contain control characters", param=f"metadata.{key}"[:MAX_NAME_CHARS])
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest(f"'user' must be a string, got {_kind(user)}", param="user")
    if user is not None:
        _check_text(user, "user", "'user'")
