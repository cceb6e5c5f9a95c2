"""Mid-stream recovery: a stream that broke after the client had content, continued by the next candidate.

Opt-in per alias (``stream_recovery: continue``).  Without it, a stream that
breaks after its first byte ends with an SSE error event: nothing else can
be done once the client has part of an answer.  With it:

    StreamRelay.broke   resume_after(...) reads what the client already has
                        (the text, the chunk id); None when it cannot be
                        continued (tool calls, n > 1, a prompt list), and the
                        stream ends with the error event as without recovery
    Exchange            takes ``Interrupted`` like a failed candidate and
                        admits the next one, with a fresh deadline
    Attempt.call        sends ``Resume.body_for(adapter)``: the conversation so
                        far with the partial answer as an assistant prefill
                        where the provider continues one, otherwise followed by
                        an explicit continuation prompt; a completion's prompt
                        simply grows by the text
    StreamRelay         writes into the *same* client response: a comment
                        marks the join, each chunk gets the first stream's
                        id, role deltas are dropped, and a usage chunk counts
                        every attempt's tokens

What a client can rely on: one stream, one id, ``[DONE]`` at the end, every
attempt charged, the join visible as an SSE comment and in the trace.  What it
cannot: that the continuation is seamless.  Another model was asked to go on
from the text; it may repeat or rephrase a few words at the join.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from providers.base import Adapter
from router.accounting.record import RequestRecord
from router.errors import GatewayError, UpstreamError
from router.frontdoor.doors import Emitter
from router.operations import Operation

CONTINUE_PROMPT = (
    "Your previous reply was cut off mid-way. Continue it exactly from where it stopped: do not repeat any of it, do not start over, do not add a preface."
)
CONTINUABLE = frozenset({Operation.CHAT, Operation.COMPLETION})


@dataclass(slots=True)
class Resume:
    """What the client already has of a broken stream, and how the next candidate is asked to go on."""

    op: Operation
    body: dict[str, Any]  # the client's request
    response: web.StreamResponse  # the client's stream, already begun
    emit: Emitter  # its writer, in the format of the door the request came in by (one response id, one sequence)
    record: RequestRecord
    text: str  # every content delta the client received, in order
    chunks: int  # content chunks it received (about one token each)
    ident: bytes | None = None  # the first stream's chunk id, JSON-encoded
    created: int | None = None
    joins: list[str] = field(default_factory=list)  # "a/ma=idle timeout mid-stream", one per break

    def extend(self, more: Relayed, join: str) -> Resume:
        """A continuation broke too: what it relayed is part of what the client has."""
        self.text += more.text
        self.chunks += more.chunks
        self.joins.append(join)
        return self

    def body_for(self, adapter: Adapter) -> dict[str, Any]:
        """The continuation request for a target of ``adapter``'s kind (the client's body is never changed)."""
        body = dict(self.body)
        for name in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(name), int):
                body[name] = max(1, body[name] - self.chunks)  # what is left of the client's budget
        if self.op is Operation.COMPLETION:
            body["prompt"] = body["prompt"] + self.text
            return body
        prefill = {"role": "assistant", "content": self.text}
        tail = [prefill] if adapter.capabilities.prefill else [prefill, {"role": "user", "content": CONTINUE_PROMPT}]
        body["messages"] = [*body["messages"], *tail]
        return body

    async def give_up(self, error: GatewayError) -> web.StreamResponse:
        """No candidate could continue: the stream ends with the SSE error event, and the record says stream_error."""
        self.record.stream_error = f"broken at {self.joins[0]} and not continued: {error.message}"
        self.record.error_class = type(error).__name__
        try:
            await self.response.write(self.emit.error(GatewayError(f"the upstream stream broke and could not be continued: {error.message}")))
            await self.response.write_eof()
        except ConnectionResetError:
            self.record.client_left()
        return self.response

    def comment(self, target: str) -> bytes:
        """The SSE comment that marks the join (clients ignore comments; a reader of the stream sees it)."""
        return f": router continued the stream with {target} after {self.joins[-1]}\n\n".encode()

    def adapt(self, chunk: bytes) -> bytes:
        """A continuation chunk as part of the first stream: its id, no second role, usage of every attempt."""
        data = orjson.loads(chunk)
        if not isinstance(data, dict):
            return chunk
        if self.ident is not None and "id" in data:
            data["id"] = orjson.loads(self.ident)
        if self.created is not None and "created" in data:
            data["created"] = self.created
        for choice in data.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                delta.pop("role", None)
        if isinstance(data.get("usage"), dict):
            data["usage"] = self.usage_so_far(data["usage"])
        return orjson.dumps(data)

    def usage_so_far(self, latest: dict[str, Any]) -> dict[str, Any]:
        """The stream's usage as the client sees it: the earlier attempts' tokens added to the latest report."""
        earlier = [a.usage for a in self.record.attempts[:-1] if a.usage is not None]
        out = dict(latest)
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            if isinstance(out.get(name), int):
                out[name] += sum(getattr(u, name) if name != "total_tokens" else u.total for u in earlier)
        return out


class Interrupted(Exception):
    """A stream broke after its first byte on an alias that continues: the next candidate is asked to go on."""

    def __init__(self, resume: Resume, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.resume = resume
        self.error = error


def continues(op: Operation, body: dict[str, Any]) -> bool:
    """Whether a request of this shape could be continued at all (decided before anything is kept)."""
    if op not in CONTINUABLE or body.get("n") not in (None, 1):
        return False
    return isinstance(body.get("prompt"), str) if op is Operation.COMPLETION else isinstance(body.get("messages"), list)


@dataclass(slots=True)
class Relayed:
    """What one attempt's relayed chunks gave the client."""

    text: str
    chunks: int  # chunks with content (about one token each)
    ident: bytes | None  # the first chunk id, JSON-encoded
    created: int | None


def relayed(sent: list[bytes]) -> Relayed | None:
    """The text and id of relayed chunks; None when they cannot be continued (a tool call, a second choice)."""
    parts: list[str] = []
    ident: bytes | None = None
    created: int | None = None
    for chunk in sent:
        data = orjson.loads(chunk)
        if not isinstance(data, dict) or "error" in data:
            continue
        if ident is None and isinstance(data.get("id"), str):
            ident = orjson.dumps(data["id"])
            created = data["created"] if isinstance(data.get("created"), int) else None
        for choice in data.get("choices") or ():
            piece = _piece(choice)
            if piece is None:
                return None
            parts.append(piece)
    return Relayed("".join(parts), sum(1 for p in parts if p), ident, created)


def _piece(choice: Any) -> str | None:
    """A choice's new text ("" when it carries none); None when it cannot be continued (a tool call, a second choice)."""
    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
        return None
    if isinstance(choice.get("text"), str):
        return choice["text"]
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return ""
    if delta.get("tool_calls") or delta.get("function_call"):
        return None
    content = delta.get("content")
    return content if isinstance(content, str) else ""
