"""The request path: one ``Exchange`` per client request, one ``Attempt`` per upstream call.

    Exchange.run                   finish the record whatever happens, then account for it
    -> Exchange.handle             read and parse the body once (router/request.py), through the front
                                   door it came in by (router/frontdoor: OpenAI's, Responses, Messages)
    -> Exchange.candidates         routing/candidates.py: aliases, fallbacks, the request's models;
                                   routing/ceiling.py: drop what is over the request's max_price
    -> Admission.admit             auth/admission.py: allowed aliases, key/team limits, budget reservation
    -> Exchange.send_with_fallback routing/engine.py orders by strategy (naming in the trace what local
                                   state set aside) and admits one candidate against shared state
                                   (circuit, cooldown, quota, limits); stop at the first answer or a
                                   caller's 4xx; all refused for rate: 429 with Retry-After
    -> Exchange.send_with_retries  retry.py: the same target again with backoff, per the alias's policy
    -> Exchange.attempt            one Attempt; its typed outcome reported to routing afterwards
    -> Attempt.send                until_first_token: adapter builds, transport sends, the status is
                                   checked, within timeouts.first_token (then the body within total)
       -> Attempt.answer           a whole answer, translated (and streamed from, for a provider that cannot stream)
       -> StreamRelay.run          SSE relayed as it arrives (first_content commits it), timeouts.idle by a
                                   watchdog; after the first byte no failover, unless the alias continues
                                   the broken stream with the next candidate (router/recovery.py)
    -> Exchange.account            settle and release what admission took, hand the record to the ledger

Each rung takes one or two arguments; what a request carries from rung to
rung lives on its ``Exchange``.  The client's body is never mutated: each
attempt builds a fresh upstream body from it, so a retry or a failover sends
exactly what the first did.  An attempt's outcome is an ``AttemptRecord``
(router/accounting/record.py) with a typed kind; routing, budgets, the
ledger, metrics and logs read it, none re-derives it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import orjson
from aiohttp import web

from providers import ADAPTERS
from providers.base import BadAnswer, ResponseContext, StreamTranslator
from router.accounting.estimate import answer_text, estimate_usage
from router.accounting.record import AttemptRecord, RequestRecord, request_metadata
from router.accounting.usage import format_usd
from router.auth.admission import Admission
from router.config import RouteTable, ServerSettings
from router.errors import (
    AuthUnavailable,
    BodyTimeout,
    BodyTooLarge,
    FirstTokenTimeout,
    GatewayError,
    StreamStalled,
    TargetUnavailable,
    UpstreamClientError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStreamError,
    UpstreamTimeout,
    all_failed,
    upstream_status_error,
)
from router.frontdoor.doors import OPENAI, Door, Emitter
from router.gateway import Gateway
from router.keys import GATEWAY, PRINCIPAL, RATELIMIT_HEADERS, REQUEST_ID
from router.operations import Operation
from router.outcome import AttemptKind, HealthEffect
from router.recovery import Interrupted, Resume, continues, relayed
from router.request import ClientRequest, parse_request
from router.retry import call_with_retries, retry_after
from router.routing.candidates import Candidate, resolve_candidates
from router.routing.ceiling import apply_ceiling, ceiling_error
from router.routing.engine import Ticket
from router.secrets import scrub, scrub_value
from router.sse import DONE, chunks_from_response, encode
from router.state.store import Admission as StoreAdmission
from router.state.store import Entry, RedisUnavailable
from router.transport import UpstreamResponse

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class RelayResponse(web.StreamResponse):
    # aiohttp sends a stream's headers at prepare() by default; the relay has its
    # first events in hand by then, so the headers wait a moment and share their packet.
    _send_headers_immediately = False


async def handle_completion(request: web.Request, op: Operation, door: Door = OPENAI) -> web.StreamResponse:
    """One client request to a model, come in by ``door`` (OpenAI's own API unless another front door translates)."""
    return await Exchange(request, op, door).run()


async def read_body(request: web.Request, server: ServerSettings) -> bytes:
    limit = server.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"the request body is {length} bytes; this gateway accepts at most {limit}")
    try:
        async with asyncio.timeout(server.body_timeout):  # a client trickling its body must not hold a connection
            body = await request.read()
    except TimeoutError:
        raise BodyTimeout(f"the request body took longer than {server.body_timeout:g} s to arrive") from None
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"the request body is over {limit} bytes") from None
    if len(body) > limit:
        raise BodyTooLarge(f"the request body is {len(body)} bytes; this gateway accepts at most {limit}")
    return body


def describe_request(record: RequestRecord, req: ClientRequest, request: web.Request, table: RouteTable) -> None:
    """What the ledger and the logs will say about who asked for what."""
    record.stream, record.requested_models = req.stream, req.models
    record.user = req.body.get("user") if isinstance(req.body.get("user"), str) else None
    record.metadata, record.tags = request_metadata(req.metadata, request.headers)
    if table.logging.bodies:  # opt-in only (logging.bodies): prompts are the client's data
        record.extra["prompt"] = req.body.get("messages", req.body.get("prompt"))


class Exchange:
    """One client request, from its body to its ledger record."""

    __slots__ = ("request", "gateway", "table", "op", "record", "admission", "_req", "deadline", "set_aside", "resume", "door")

    def __init__(self, request: web.Request, op: Operation, door: Door = OPENAI) -> None:
        self.request = request
        self.gateway: Gateway = request.app[GATEWAY]
        self.table = self.gateway.table  # one snapshot per request: a reload never changes a request mid-way
        self.op = op
        self.door = door
        self.record = RequestRecord(request_id=request[REQUEST_ID], operation=door.operation(op), stream=False, requested_models=[])
        self.admission = Admission(request.get(PRINCIPAL), self.record)
        self._req: ClientRequest | None = None
        self.deadline = 0.0
        self.set_aside: set[int] = set()  # ids of the candidates the trace already names as skipped
        self.resume: Resume | None = None  # a broken stream the next candidate is continuing (router/recovery.py)

    @property
    def req(self) -> ClientRequest:
        assert self._req is not None, "the body is parsed first"
        return self._req

    async def run(self) -> web.StreamResponse:
        try:
            response = await self.handle()
            self.record.finish(response.status)
            return response
        except GatewayError as exc:
            self.record.finish(exc.status, type(exc).__name__)
            raise
        except asyncio.CancelledError:
            self.record.client_left()
            raise
        finally:
            self.account()

    async def handle(self) -> web.StreamResponse:
        raw = await read_body(self.request, self.table.server)
        self._req = parse_request(self.op, raw, self.record.request_id, self.door)
        describe_request(self.record, self._req, self.request, self.table)
        allowed = self.admission.allowed(self.table, self._req, self.candidates())
        return await self.send_with_fallback(allowed, self.admission.entry(self.gateway, self._req, len(raw)))

    def candidates(self) -> list[Candidate]:
        """The route table's candidates for this request, less those it cannot take or may not afford."""
        candidates, skipped = resolve_candidates(self.table, self.req)
        for skip in skipped:
            self.record.skip(skip.label, skip.label.split(" ", 1)[0], skip.reason)
        candidates, over_price = apply_ceiling(candidates, self.req.body)
        for candidate, reason in over_price:
            self.record.skip(candidate.target.key, candidate.alias.name, reason)
        if not candidates:
            raise ceiling_error(self.req.body, over_price, self.router_headers(None))
        return candidates

    async def send_with_fallback(self, candidates: list[Candidate], entry: Entry | None) -> web.StreamResponse:
        self.deadline = self.req.received_at + candidates[0].alias.retry.deadline
        errors: list[GatewayError] = []
        remaining = self.ordered(candidates)
        while remaining:
            admitted = await self.admit_next(remaining, errors, entry)
            entry = None  # the request's own limits and budget are counted once, with its first admission
            if admitted is None:
                break
            index, ticket = admitted
            candidate, remaining = remaining[index], remaining[index + 1 :]
            try:
                return await self.send_with_retries(candidate, ticket)
            except UpstreamClientError as exc:
                exc.headers.update(self.router_headers(candidate))
                raise
            except (UpstreamError, TargetUnavailable) as exc:
                errors.append(exc)
            except Interrupted as broken:  # stream_recovery: continue: the next candidate goes on in the same stream
                self.resume, self.deadline = broken.resume, time.monotonic() + candidate.alias.retry.deadline
                errors.append(broken.error)
        return await self.none_answered(errors)

    async def none_answered(self, errors: list[GatewayError]) -> web.StreamResponse:
        """No candidate answered: the error (429 when all were refused for rate), or, for a stream being
        continued, the SSE error event that ends it."""
        error = all_failed(errors, [attempt.line for attempt in self.record.attempts], self.router_headers(None))
        if self.resume is None:
            raise error
        return await self.resume.give_up(error)

    def ordered(self, candidates: list[Candidate]) -> list[Candidate]:
        """The strategy's order; those local state knows to be unavailable are named in the trace first, tried last."""
        ordering = self.gateway.routing.order(candidates, self.req)
        for candidate, skip in ordering.set_aside:
            self.record.skip(candidate.target.key, candidate.alias.name, skip.reason)
        self.set_aside = {id(candidate) for candidate, _ in ordering.set_aside}
        return ordering.candidates

    async def admit_next(self, remaining: list[Candidate], errors: list[GatewayError], entry: Entry | None) -> tuple[int, Ticket] | None:
        """The first of ``remaining`` that shared state admits (with the request's entry, the first time)."""
        if time.monotonic() >= self.deadline:
            errors.append(UpstreamTimeout("the request's deadline passed before this target could be tried"))
            self.record.skip(remaining[0].target.key, remaining[0].alias.name, "deadline passed")
            return None
        try:
            admission, ticket = await self.gateway.routing.admit(remaining, self.req, self.deadline, entry)
        except RedisUnavailable as exc:  # only a budgeted entry fails closed; routing alone falls back to local state
            raise AuthUnavailable("the budget store is unavailable; try again shortly") from exc
        if entry is not None:
            self.counted(admission)
        for index, skip in admission.skips:
            candidate = remaining[index]
            if id(candidate) not in self.set_aside:  # already in the trace, from local state
                self.record.skip(candidate.target.key, candidate.alias.name, skip.reason)
            errors.append(TargetUnavailable(skip.reason, throttled=skip.cause.throttled, retry_after=skip.wait))
        return None if admission.index is None or ticket is None else (admission.index, ticket)

    def counted(self, admission: StoreAdmission) -> None:
        """The entry's fate: 402/429 raised by admission, or its x-ratelimit-* headers kept for the response."""
        self.admission.counted(self.gateway, admission)
        if self.admission.headers:  # middleware.add_ratelimit_headers puts them on whatever response follows
            self.request[RATELIMIT_HEADERS] = self.admission.headers

    async def send_with_retries(self, candidate: Candidate, ticket: Ticket) -> web.StreamResponse:
        first = [ticket]

        async def attempt() -> web.StreamResponse:
            return await self.attempt(candidate, first.pop() if first else await self.readmit(candidate))

        return await call_with_retries(candidate.alias.retry, self.deadline, attempt)

    async def readmit(self, candidate: Candidate) -> Ticket:
        """A retry is a new upstream call: admitted again (limits, circuit), but the
        Retry-After this target asked for has just been waited out."""
        admission, ticket = await self.gateway.routing.readmit(candidate, self.req, self.deadline)
        if ticket is None:
            skip = admission.skips[0][1] if admission.skips else None
            reason = skip.reason if skip is not None else "not admitted"
            self.record.skip(candidate.target.key, candidate.alias.name, reason)
            raise TargetUnavailable(reason, throttled=skip is not None and skip.cause.throttled, retry_after=skip.wait if skip else None)
        return ticket

    async def attempt(self, candidate: Candidate, ticket: Ticket) -> web.StreamResponse:
        attempt = Attempt(self, candidate, ticket)
        try:
            return await attempt.send()
        finally:
            self.gateway.routing.finish(ticket, attempt.outcome, self.record)

    def emitter(self) -> Emitter:
        """A new stream's writer, in the format of the door the request came in by."""
        return Emitter(self.door.stream(self.req.original or self.req.body))

    def router_headers(self, candidate: Candidate | None) -> dict[str, str]:
        record = self.record
        headers = {"x-request-id": record.request_id, "x-router-attempts": str(record.tries), "x-router-trace": record.trace}
        if candidate is not None:
            headers["x-router-provider"] = candidate.target.provider.name
            headers["x-router-model"] = candidate.target.model
        return headers

    def account(self) -> None:
        self.admission.finish(self.gateway)
        self.gateway.account(self.record)


class Attempt:
    """One upstream call: its candidate, adapter, admission ticket and typed outcome."""

    __slots__ = ("exchange", "candidate", "ticket", "adapter", "outcome", "started", "upstream", "batches", "native_stream", "native")

    def __init__(self, exchange: Exchange, candidate: Candidate, ticket: Ticket) -> None:
        self.exchange = exchange
        self.candidate = candidate
        self.ticket = ticket
        provider = candidate.target.provider
        self.adapter = ADAPTERS[provider.kind].configured(provider.options)  # e.g. azure's api_version
        self.outcome = AttemptRecord(candidate.target.key, candidate.alias.name, price=candidate.target.price)
        self.started = time.monotonic()
        self.upstream: UpstreamResponse | None = None
        self.batches: AsyncIterator[list[bytes]] | None = None  # a stream's events, read once
        req = exchange.req
        self.native = exchange.door.name in self.adapter.native_doors  # the client's body goes as it came, the answer back untranslated
        self.native_stream = req.stream and (self.native or req.op in self.adapter.capabilities.streams)
        exchange.record.attempts.append(self.outcome)
        if exchange.record.upstream_started_mono is None:
            exchange.record.upstream_started_mono = self.started

    @property
    def provider(self) -> str:
        return self.candidate.target.provider.name

    def context(self) -> ResponseContext:
        req = self.exchange.req
        return ResponseContext(self.provider, self.candidate.target.model, req.request_id, int(time.time()), req.include_usage)

    async def send(self) -> web.StreamResponse:
        try:
            first = await self.until_first_token()
        except GatewayError as exc:
            raise self.failed(exc) from None
        except asyncio.CancelledError:
            self.close(AttemptKind.CLIENT_GONE)
            raise
        if isinstance(first, StreamRelay):
            return await first.run()
        return await self.answer(first)

    async def until_first_token(self) -> bytes | StreamRelay:
        """A stream's first events, or a whole answer's headers, within timeouts.first_token (and the request's
        deadline); then a whole answer's body within timeouts.total.  One timer, moved on between the two."""
        timeouts, deadline = self.candidate.target.timeouts, self.exchange.deadline
        first_token = self.started + min(timeouts.first_token, timeouts.total)
        waiting_first = first_token <= deadline  # False: the request's deadline comes first, and is what a timeout means
        try:
            async with asyncio.timeout_at(_loop_deadline(min(first_token, deadline))) as timer:
                upstream = await self.call()
                if self.native_stream:
                    self.batches = upstream.event_batches()
                    relay = StreamRelay(self)
                    await relay.first_content()
                    return relay
                waiting_first = False  # the headers are in: what is left is the body, within timeouts.total
                timer.reschedule(_loop_deadline(min(self.started + timeouts.total, deadline)))
                return await upstream.read()
        except TimeoutError:
            if waiting_first:
                raise FirstTokenTimeout(f"{self.provider}: nothing within timeouts.first_token ({first_token - self.started:g} s)") from None
            raise UpstreamTimeout(f"{self.provider}: no answer within timeouts.total or the request's deadline") from None

    async def call(self) -> UpstreamResponse:
        """Send and check the status: the upstream's answer with its headers read."""
        req, target, resume = self.exchange.req, self.candidate.target, self.exchange.resume
        if self.native:
            call = self.adapter.build_native_call(req.original or req.body, target.model, self.native_stream)
        else:
            body = req.body if resume is None else resume.body_for(self.adapter)
            call = self.adapter.build_call(req.op, body, target.model, self.native_stream)
        call.connect_timeout = target.timeouts.connect
        self.upstream = upstream = await self.exchange.gateway.transport.send(target.provider, call, req.request_id)
        self.outcome.status = upstream.status
        self.ticket.headers = upstream.headers  # its rate-limit headers feed the shared state
        if upstream.status >= 400:
            raise await self.status_error(upstream)
        return upstream

    async def status_error(self, upstream: UpstreamResponse) -> UpstreamError:
        raw = b""
        try:
            raw = await upstream.read()
        except UpstreamError:
            pass
        finally:
            upstream.close()
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = None
        text = self.adapter.error_message(upstream.status, payload) if payload is not None else raw[:200].decode("utf-8", "replace")
        secrets = self.exchange.table.secrets()
        message = scrub(text or f"HTTP {upstream.status}", secrets)
        # Passed through to the client as is, so every string in it is scrubbed (param, nested fields, keys).
        body = scrub_value(payload, secrets) if isinstance(payload, dict) else None
        if body is not None and isinstance(body.get("error"), dict):
            body = {"error": {**body["error"], "message": message}}
        return upstream_status_error(self.provider, upstream.status, message, retry_after=retry_after(upstream.headers), body=body)

    async def answer(self, raw: bytes) -> web.StreamResponse:
        exchange, req = self.exchange, self.exchange.req
        try:
            payload = orjson.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise self.failed(UpstreamProtocolError(f"{self.provider}: answer is not a JSON object")) from exc
        ctx = self.context()
        try:
            out, usage = (payload, self.adapter.native_usage(payload, ctx)) if self.native else self.adapter.translate_response(req.op, payload, ctx)
        except BadAnswer as exc:  # a 200 that is no completion: the next candidate, never garbage to the client
            raise self.failed(UpstreamProtocolError(f"{self.provider}: {exc}")) from None
        if usage is None:  # none reported, or nonsense: charge an estimate, marked as one, and show it
            usage = estimate_usage(req.body, completion_chars=len(answer_text(out)))
            if ctx.usage_rejected:
                exchange.record.extra["usage_rejected"] = True
                out["usage"] = usage.to_openai()
        self.succeed(usage)
        headers = exchange.router_headers(self.candidate)
        if exchange.table.expose_cost:  # the same rounded cost as the ledger row (RequestRecord.cost_micro)
            out.setdefault("usage", usage.to_openai()).update(exchange.record.cost_for_client())
            headers["x-router-cost-usd"] = format_usd(exchange.record.cost_micro)
        if not req.stream:
            exchange.record.first_token_mono = exchange.record.ended_mono or time.monotonic()
            answer = out if self.native else exchange.door.answer(out, req.original or req.body)
            return web.Response(body=orjson.dumps(answer), headers=headers, content_type="application/json")
        return await self.stream_whole(out, headers)

    async def stream_whole(self, out: dict, headers: dict[str, str]) -> web.StreamResponse:
        """A provider that cannot stream: answer the streaming client from the whole response (or continue its stream)."""
        exchange, resume = self.exchange, self.exchange.resume
        chunks = chunks_from_response(out, exchange.req.include_usage)
        if resume is None:
            emit, response = exchange.emitter(), web.StreamResponse(headers={**headers, **SSE_HEADERS})
            await response.prepare(exchange.request)
            exchange.record.first_token_mono = time.monotonic()
        else:
            emit, response, chunks = resume.emit, resume.response, [resume.adapt(chunk) for chunk in chunks]
            await response.write(resume.comment(self.candidate.target.key))
        await response.write(b"".join(emit.chunk(chunk) for chunk in chunks) + emit.end())
        await response.write_eof()
        return response

    def succeed(self, usage: object | None) -> None:
        """The upstream answered: this target answers the request (a stream's usage comes at its end)."""
        record, target = self.exchange.record, self.candidate.target
        self.close(AttemptKind.OK if self.exchange.resume is None else AttemptKind.CONTINUED, HealthEffect.OK)
        if usage is not None:
            self.outcome.charge(usage)  # type: ignore[arg-type]
            record.usage = self.outcome.usage
        record.alias, record.provider, record.model, record.target_key = self.candidate.alias.name, target.provider.name, target.model, target.key

    def failed(self, error: GatewayError) -> GatewayError:
        """Close the attempt as failed by ``error`` (its health effect and reason are the error's own)."""
        if self.upstream is not None:
            self.upstream.close()
        self.close(AttemptKind.FAILED, error.health)
        self.outcome.reason, self.outcome.detail, self.outcome.retry_after = error.reason, error.message, error.retry_after
        return error

    def close(self, kind: AttemptKind, health: HealthEffect = HealthEffect.NEUTRAL) -> None:
        if kind is AttemptKind.CLIENT_GONE and self.upstream is not None:
            self.upstream.close()
        self.outcome.kind, self.outcome.health = kind, health
        self.outcome.latency_ms = (time.monotonic() - self.started) * 1000


class Watchdog:
    """``timeouts.idle`` with one timer per idle period rather than one per read: each read (and each write)
    marks the stream alive; the timer, when due, cancels the relay only if nothing did since."""

    __slots__ = ("idle", "loop", "task", "last", "handle", "fired", "paused")

    def __init__(self, idle: float) -> None:
        self.idle, self.loop, self.task, self.fired, self.paused = idle, asyncio.get_running_loop(), asyncio.current_task(), False, False
        self.last = self.loop.time()
        self.handle: asyncio.TimerHandle | None = self.loop.call_at(self.last + idle, self.check)

    def alive(self) -> None:
        self.last, self.paused = self.loop.time(), False

    def pause(self) -> None:
        """Writing to the client: a slow reader is no silence of the upstream's."""
        self.paused = True

    def check(self) -> None:
        due = (self.loop.time() if self.paused else self.last) + self.idle
        if self.loop.time() < due:
            self.handle = self.loop.call_at(due, self.check)
        elif self.task is not None:
            self.fired, self.handle = True, None
            self.task.cancel()

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class StreamRelay:
    """Relay one upstream stream as it arrives.  The client's first byte commits the request to this target.

    Events that arrived in one read of the upstream leave in one write to the
    client: a write per event cost a syscall each and halved chunks/s.  The
    headers ride with the first write and the chunked-encoding end with the last.
    """

    __slots__ = (
        "attempt",
        "batches",
        "translator",
        "response",
        "relayed",
        "done",
        "pending",
        "secrets",
        "idle",
        "resume",
        "sent",
        "error_event",
        "emit",
        "write",
        "uncosted",
        "watchdog",
    )

    def __init__(self, attempt: Attempt) -> None:
        assert attempt.batches is not None
        exchange = attempt.exchange
        self.attempt = attempt
        self.batches = attempt.batches
        ctx = attempt.context()
        self.translator: StreamTranslator = attempt.adapter.native_stream(ctx) if attempt.native else attempt.adapter.stream_translator(exchange.req.op, ctx)
        self.relayed = 0  # chunks the client was sent: the estimate when the stream ends without usage
        self.done = False  # the upstream's [DONE] arrived
        self.secrets = exchange.table.secrets()
        self.idle = attempt.candidate.target.timeouts.idle
        self.resume = exchange.resume  # continuing a broken stream: the same client response
        self.emit = exchange.emitter() if self.resume is None else self.resume.emit
        recovers = attempt.candidate.alias.stream_recovery == "continue" and not attempt.native and continues(exchange.req.op, exchange.req.body)
        self.sent: list[bytes] | None = [] if recovers else None  # what the client got, kept only to continue it
        self.error_event: UpstreamStreamError | None = None  # an upstream error event, raised once what preceded it is out
        self.pending: list[bytes] = []
        # How a chunk is written: as relayed (OpenAI's door), in the client's API's events, or passed through natively.
        self.write: Callable[[bytes], bytes] = self.translator.framed if attempt.native else encode if self.emit.render is None else self.emit.chunk
        self.uncosted = exchange.table.expose_cost and not attempt.native  # the usage chunk gets the request's cost, once
        self.watchdog: Watchdog | None = None  # started with the relay (run)

    async def first_content(self) -> None:
        """Read until the stream has something for the client (the caller bounds it by timeouts.first_token).

        Nothing has reached the client yet, so a bad event, an error event or a
        stream that ends first fails over.  Reads that give the client nothing
        (keep-alives, an Anthropic message_start) are read past.
        """
        attempt = self.attempt
        while not any(self.pending) and not self.done:
            batch = await anext(self.batches, None)
            if batch is None:
                raise UpstreamProtocolError(f"{attempt.provider}: the stream ended before its first event")
            try:
                self.pending = self.translate(batch)
            except BadAnswer as exc:
                raise UpstreamProtocolError(f"{attempt.provider}: {exc}") from None
            if self.error_event is not None and not any(self.pending):
                raise self.error_event
        attempt.succeed(None)  # before the headers: the trace says this target answered
        if self.resume is None:
            self.response: web.StreamResponse = RelayResponse(headers={**attempt.exchange.router_headers(attempt.candidate), **SSE_HEADERS})
        else:
            self.response = self.resume.response
            self.pending.insert(0, self.resume.comment(attempt.candidate.target.key))

    async def run(self) -> web.StreamResponse:
        attempt, record = self.attempt, self.attempt.exchange.record
        try:
            if self.resume is None:
                await self.response.prepare(attempt.exchange.request)
                record.first_token_mono = time.monotonic()
            self.watchdog = Watchdog(self.idle)
            async with asyncio.timeout_at(_loop_deadline(attempt.started + attempt.candidate.target.timeouts.total)):
                await self.pump()
        except TimeoutError:
            await self.broke(UpstreamTimeout(f"{attempt.provider}: the stream went on past timeouts.total"))
        except BadAnswer as exc:
            await self.broke(UpstreamProtocolError(f"{attempt.provider}: {exc}"))
        except UpstreamError as exc:
            await self.broke(exc)
        except asyncio.CancelledError as exc:
            await self.cancelled(exc)
        except ConnectionResetError as exc:
            self.client_left(exc)
        finally:
            if self.watchdog is not None:
                self.watchdog.stop()
            assert attempt.upstream is not None
            attempt.upstream.close()
            self.charge()
        return self.response

    async def cancelled(self, exc: asyncio.CancelledError) -> None:
        """The watchdog's cancel is a stall (timeouts.idle); any other is the client going away."""
        if self.watchdog is None or not self.watchdog.fired:
            self.client_left(exc)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        await self.broke(StreamStalled(f"{self.attempt.provider}: the stream was silent for {self.idle:g} s (timeouts.idle)"))

    async def pump(self) -> None:
        assert self.watchdog is not None
        out, first, alive, pause = self.pending, True, self.watchdog.alive, self.watchdog.pause
        while not self.done:
            if out or first:  # the first pass always writes: the headers must not wait for the next read
                pause()
                await self.response.write(b"".join(out))
                alive()
                first = False
            batch = await anext(self.batches, None)
            alive()
            if batch is None:
                out = []
                break
            out = self.translate(batch)
        if self.error_event is not None:  # what came before it in the same read goes out first
            await self.response.write(b"".join(out))
            raise self.error_event
        out.extend(self.emit.chunk(chunk) for chunk in self.translator.finish())
        out.append(b"" if self.attempt.native else self.emit.end())  # a native stream carried its own end
        await self.response.write_eof(b"".join(out))  # what arrived with [DONE] leaves with the end of the stream

    def translate(self, batch: list[bytes]) -> list[bytes]:
        """One network read of events as client chunks (one write); an upstream error event ends the stream."""
        out: list[bytes] = []
        translate, write = self.translator.translate, self.write
        for data in batch:
            if data == DONE:
                self.done = True
                break
            chunk = translate(data)
            if chunk is None:
                continue
            if b'"error"' in chunk and self.is_error_event(chunk):
                self.done = True
                break
            if self.resume is not None or self.sent is not None:
                chunk = self.kept(chunk)
            if self.uncosted and self.translator.usage is not None and b'"usage"' in chunk:
                chunk = self.costed(chunk)
            self.relayed += 1
            out.append(write(chunk))
        return out

    def kept(self, chunk: bytes) -> bytes:
        """Recovery's view of a chunk: one id across a continued stream, and what the client has, to continue it."""
        if self.resume is not None:
            chunk = self.resume.adapt(chunk)
        if self.sent is not None:
            self.sent.append(chunk)
        return chunk

    def costed(self, chunk: bytes) -> bytes:
        """The usage chunk with what the request cost: the attempt is charged now (charge() later prices it the same)."""
        assert self.translator.usage is not None
        self.uncosted = False
        self.attempt.outcome.charge(self.translator.usage)
        data = orjson.loads(chunk)
        if not isinstance(data.get("usage"), dict):
            return chunk
        data["usage"].update(self.attempt.exchange.record.cost_for_client())
        return orjson.dumps(data)

    def is_error_event(self, chunk: bytes) -> bool:
        """An upstream's ``{"error": ...}`` event: the stream failed (its message scrubbed, since the client will read it)."""
        event = orjson.loads(chunk)
        error = event.get("error") if isinstance(event, dict) else None
        if error is None:
            return False
        message = error.get("message") if isinstance(error, dict) else error
        text = scrub(str(message) if message is not None else "no message", self.secrets)[:500]
        self.error_event = UpstreamStreamError(f"{self.attempt.provider} sent an error event: {text}")
        return True

    def charge(self) -> None:
        """Cut streams and providers that report no (or nonsense) usage are still charged, by estimate."""
        attempt, record = self.attempt, self.attempt.exchange.record
        usage = self.translator.usage or estimate_usage(attempt.exchange.req.body, chunks=self.relayed)
        if self.translator.ctx.usage_rejected:
            record.extra["usage_rejected"] = True
        attempt.outcome.charge(usage)
        record.usage = attempt.outcome.usage

    async def broke(self, exc: UpstreamError) -> None:
        """Too late to fail over: tell the client in the stream, in the OpenAI error shape."""
        attempt, record = self.attempt, self.attempt.exchange.record
        attempt.close(AttemptKind.MID_STREAM, HealthEffect.FAIL)  # the client saw an error: the target failed
        attempt.outcome.reason, attempt.outcome.detail = exc.reason, exc.message
        resume = self.resumable()
        if resume is not None:
            raise Interrupted(resume, exc)
        record.error_class = type(exc).__name__
        record.stream_error = exc.message  # the record's status becomes stream_error (RequestRecord.status_label)
        try:
            await self.response.write(self.emit.error(GatewayError(f"the upstream stream broke: {exc.message}")))
            await self.response.write_eof()
        except ConnectionResetError as gone:
            self.client_left(gone)

    def resumable(self) -> Resume | None:
        """What the client has, when this alias continues broken streams and this one can be continued."""
        got = relayed(self.sent) if self.sent is not None else None
        if got is None:
            return None
        outcome, exchange = self.attempt.outcome, self.attempt.exchange
        join = f"{outcome.target}={outcome.trace}"
        if self.resume is not None:
            return self.resume.extend(got, join)
        return Resume(exchange.req.op, exchange.req.body, self.response, self.emit, exchange.record, got.text, got.chunks, got.ident, got.created, [join])

    def client_left(self, exc: BaseException) -> None:
        """The client went away mid-stream: a 499 in the record, never a traceback; cancellation goes on."""
        self.attempt.exchange.record.client_left()
        if isinstance(exc, asyncio.CancelledError):
            raise exc


def _loop_deadline(deadline: float) -> float:
    # ``deadline`` is on time.monotonic(); asyncio's clock may differ in origin.
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())
