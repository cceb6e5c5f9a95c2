"""Front doors: the client-facing APIs the one chat pipeline serves.

A ``Door`` says how one API maps onto the pipeline, at its four edges:

    chat_body(body)        the client's body as an OpenAI request (checked: a 400 names the field)
    answer(out, original)  a whole OpenAI answer as this API's answer
    stream(original)       a renderer of OpenAI chunks as this API's events (None: OpenAI's own SSE)
    error_body(error)      an error in this API's shape

Routing, limits, budgets, retries, failover, recovery and the ledger never
see which door a request came in by; only the record's ``operation`` says
(``chat``, ``completion``, ``embedding``, ``responses``).  OpenAI's door is
the identity and the fast path: its chunks are relayed without being parsed
again.  ``Emitter`` writes a stream's bytes for whichever door it has.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from router.errors import GatewayError, InvalidRequest, NativeOnly
from router.frontdoor.anthropic import BadMessagesRequest, MessagesStream, Untranslatable, chat_to_message, count_tokens, error_body, messages_to_chat
from router.frontdoor.responses import ResponsesStream, chat_to_response, responses_to_chat
from router.operations import Operation
from router.sse import DONE_EVENT, encode

Json = dict[str, Any]


class StreamRender(Protocol):
    """OpenAI chat chunks in, another API's stream events out."""

    def feed(self, chunk: Json) -> bytes: ...

    def finish(self) -> bytes: ...

    def failed(self, message: str) -> bytes: ...


class Door:
    """OpenAI's own API (chat completions, completions, embeddings): nothing is translated."""

    name = "openai"

    def operation(self, op: Operation) -> str:
        """The record's operation label (the ledger's and the metrics')."""
        return op.value

    def chat_body(self, body: Json) -> Json:
        return body

    def answer(self, out: Json, original: Json) -> Json:
        return out

    def stream(self, original: Json) -> StreamRender | None:
        return None

    def error_body(self, error: GatewayError) -> bytes:
        return error.to_body()


class ResponsesDoor(Door):
    """``POST /v1/responses`` served from chat targets (router/frontdoor/responses.py translates)."""

    name = "responses"

    def operation(self, op: Operation) -> str:
        return "responses"

    def chat_body(self, body: Json) -> Json:
        return responses_to_chat(body)

    def answer(self, out: Json, original: Json) -> Json:
        return chat_to_response(out, original)

    def stream(self, original: Json) -> StreamRender | None:
        return ResponsesStream(original)


class MessagesRender(MessagesStream):
    """Anthropic's stream events from OpenAI chunks, and its ``error`` event for a stream that broke."""

    def failed(self, message: str) -> bytes:
        return self.feed({"error": {"type": "api_error", "message": message}})


class AnthropicDoor(Door):
    """``POST /v1/messages``: Anthropic's Messages API (router/frontdoor/anthropic.py translates for OpenAI-shaped
    targets; an ``anthropic`` target takes the body as it came, ``Adapter.native_doors``)."""

    name = "anthropic"

    def operation(self, op: Operation) -> str:
        return "messages"

    def chat_body(self, body: Json) -> Json:
        try:
            return messages_to_chat(body)
        except BadMessagesRequest as exc:
            raise InvalidRequest(str(exc), param=exc.param) from None
        except Untranslatable as exc:
            raise NativeOnly(f"{exc}: only an anthropic target can take it, and this alias has none", param=exc.param) from None

    def count_tokens(self, body: Json) -> Json:
        """``/v1/messages/count_tokens``: the gateway's estimate (a bad body is a 400 naming the field)."""
        try:
            return count_tokens(body)
        except BadMessagesRequest as exc:
            raise InvalidRequest(str(exc), param=exc.param) from None

    def answer(self, out: Json, original: Json) -> Json:
        return chat_to_message(out, str(original.get("model") or out.get("model") or ""))

    def stream(self, original: Json) -> StreamRender | None:
        return MessagesRender(str(original.get("model") or ""))

    def error_body(self, error: GatewayError) -> bytes:
        return orjson.dumps(error_body(error.status, error.message))


OPENAI = Door()
RESPONSES = ResponsesDoor()
ANTHROPIC = AnthropicDoor()
_BY_PATH = {"/v1/messages": ANTHROPIC, "/v1/messages/count_tokens": ANTHROPIC}


def door_for(path: str) -> Door:
    """The door a path belongs to, for an error raised before its handler ran (auth, overload, a bad route)."""
    return _BY_PATH.get(path, OPENAI)


class Emitter:
    """A stream's bytes for the client in its door's format: OpenAI's SSE as relayed, or another API's events."""

    __slots__ = ("render",)

    def __init__(self, render: StreamRender | None) -> None:
        self.render = render

    def chunk(self, data: bytes) -> bytes:
        """One OpenAI chunk (JSON bytes) as the client's stream has it."""
        return encode(data) if self.render is None else self.render.feed(orjson.loads(data))

    def end(self) -> bytes:
        """What ends a stream that finished: ``[DONE]``, or the API's closing events."""
        return DONE_EVENT if self.render is None else self.render.finish()

    def error(self, error: GatewayError) -> bytes:
        """What ends a stream that broke: the error event in the door's shape."""
        return encode(error.to_body()) if self.render is None else self.render.failed(error.message)
