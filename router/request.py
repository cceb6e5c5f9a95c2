"""The client's request, parsed and checked once; attempts translate from it and never mutate it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.base import estimate_prompt_tokens
from router.errors import InvalidRequest, NativeOnly
from router.frontdoor.doors import OPENAI, Door
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
    original: dict[str, Any] | None = None  # the client's own body when a front door translated it (router/frontdoor)
    door: str = "openai"  # the front door it came in by (router/frontdoor/doors.py)
    native_only: NativeOnly | None = None  # why only a target speaking that door's API natively can take it
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


def parse_request(op: Operation, raw: bytes, request_id: str, door: Door = OPENAI) -> ClientRequest:
    """The body, checked once: every mistake a client can make here is a 400 naming the field.

    Another front door than OpenAI's (router/frontdoor) translates the client's
    body into an OpenAI request first, checked the same way after it; the
    client's own is kept for targets that speak its API natively.
    """
    original = decode_body(raw)
    if door is OPENAI:
        body = original
    else:
        try:
            body = door.chat_body(original)
        except NativeOnly as exc:
            return native_only(op, original, request_id, door, exc)
    models = _models(body)
    _CHECKS[op](body)
    _check_numbers(body)
    stream, include_usage = _stream(body)
    if stream and op is Operation.EMBEDDING:
        raise InvalidRequest("embeddings are not streamed: drop 'stream'", param="stream")
    _check_attribution(body)
    return ClientRequest(op, body, models, stream, include_usage, request_id, original=None if door is OPENAI else original, door=door.name)


def native_only(op: Operation, original: dict[str, Any], request_id: str, door: Door, reason: NativeOnly) -> ClientRequest:  # noqa: PLR0913
    """A request only targets speaking the client's API can take: its own body, checked as far as routing needs."""
    models = _models(original)
    stream, _ = _stream(original)
    _check_attribution(original)
    return ClientRequest(op, original, models, stream, False, request_id, original=original, door=door.name, native_only=reason)


def decode_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or a 400 saying what it is instead."""
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


MAX_INPUTS = 2048  # OpenAI's own bound on one embeddings request


def _check_input(value: Any) -> None:
    """An embeddings ``input``: a string, a list of strings, a list of token ids, or a list of such lists."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' must not be empty", param="input")
        return
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"'input' must be a string or a non-empty array, got {_kind(value)}", param="input")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"'input' has {len(value)} items; at most {MAX_INPUTS} are accepted", param="input")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return
    for i, item in enumerate(value):
        ok = isinstance(item, str) and item or isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        if not ok:
            raise InvalidRequest(f"input[{i}] must be a non-empty string or an array of token ids", param=f"input[{i}]")


def _check_embedding(body: dict[str, Any]) -> None:
    _check_input(body.get("input"))
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= 65536):
        raise InvalidRequest("'dimensions' must be an integer from 1 to 65536", param="dimensions")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise InvalidRequest("'encoding_format' must be float or base64", param="encoding_format")


_CHECKS: dict[Operation, Callable[[dict[str, Any]], None]] = {
    Operation.CHAT: lambda body: _check_messages(body.get("messages")),
    Operation.COMPLETION: lambda body: _check_prompt(body.get("prompt")),
    Operation.EMBEDDING: _check_embedding,
}


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
