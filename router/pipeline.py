"""The request path, one rung per concern.

    handle_completion          parse once, keep one RequestRecord, account at the end
    -> eligible_candidates     routing/candidates.py: aliases, fallbacks, the request's models;
                               routing/ceiling.py: drop what is over the request's max_price
    -> admit                   auth/admission.py: allowed aliases, limits, budget reservation
    -> send_with_fallback      routing/engine.py orders them by strategy and admits one against
                               shared state (circuit, cooldown, quota, limits); stop at the first
                               answer or a caller's 4xx
    -> send_with_retries       same target again with backoff, per the alias's retry policy
    -> routed_attempt          the admission's lease around one call; its outcome reported after
    -> one_attempt             adapter builds, transport sends, adapter translates
       -> relay_stream         SSE relayed event by event; after the first byte, no failover

The client's body is never mutated: each attempt builds a fresh upstream
body from it, so a retry or a failover sends exactly what the first did.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from providers import ADAPTERS
from providers.base import Adapter, ResponseContext, StreamTranslator
from router.accounting.estimate import answer_text, estimate_usage
from router.accounting.record import AttemptRecord, RequestRecord, request_metadata
from router.auth.admission import Admission, admit
from router.auth.admission import finish as finish_admission
from router.config import RouteTable
from router.errors import (
    CALLER_FAULT_STATUSES,
    AllCandidatesFailed,
    BodyTooLarge,
    GatewayError,
    TargetUnavailable,
    UpstreamClientError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    status_for_failures,
)
from router.gateway import GATEWAY, REQUEST_ID, Gateway
from router.operations import Operation
from router.request import ClientRequest, parse_request
from router.retry import call_with_retries, retry_after
from router.routing.candidates import Candidate, resolve_candidates
from router.routing.ceiling import apply_ceiling, ceiling_error
from router.routing.engine import Ticket, trace
from router.secrets import scrub
from router.sse import DONE, DONE_EVENT, chunks_from_response, encode
from router.transport import UpstreamResponse

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class RelayResponse(web.StreamResponse):
    # aiohttp sends a stream's headers at prepare() by default; the relay has its
    # first events in hand by then, so the headers wait a moment and share their packet.
    _send_headers_immediately = False


async def read_body(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"the request body is {length} bytes; this gateway accepts at most {limit}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"the request body is over {limit} bytes") from None
    if len(body) > limit:
        raise BodyTooLarge(f"the request body is {len(body)} bytes; this gateway accepts at most {limit}")
    return body


async def handle_completion(request: web.Request, op: Operation) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    table = gateway.table  # one snapshot per request: a reload never changes a request mid-way
    record = RequestRecord(request_id=request[REQUEST_ID], operation=op.value, stream=False, requested_models=[])
    admission: Admission | None = None
    try:
        raw = await read_body(request, table.server.max_body_bytes)
        req = parse_request(op, raw, record.request_id)
        describe_request(record, req, request, table)
        candidates = eligible_candidates(table, req, record)
        admission = await admit(request, gateway, table, req, len(raw), candidates, record)
        response = await send_with_fallback(request, gateway, req, admission.candidates, record)
        record.finish(response.status)
        return response
    except GatewayError as exc:
        record.finish(exc.status, type(exc).__name__)
        raise
    except asyncio.CancelledError:
        record.client_disconnected = True
        record.finish(499, "ClientDisconnected")
        raise
    finally:
        finish_admission(gateway, admission, record)
        gateway.account(record)


def describe_request(record: RequestRecord, req: ClientRequest, request: web.Request, table: RouteTable) -> None:
    """What the ledger and the logs will say about who asked for what."""
    record.stream, record.requested_models = req.stream, req.models
    record.user = req.body.get("user") if isinstance(req.body.get("user"), str) else None
    record.metadata, record.tags = request_metadata(req.metadata, request.headers)
    if table.logging.bodies:  # opt-in only (logging.bodies): prompts are the client's data
        record.extra["prompt"] = req.body.get("messages", req.body.get("prompt"))


def eligible_candidates(table: RouteTable, req: ClientRequest, record: RequestRecord) -> list[Candidate]:
    """The route table's candidates for this request, less those it cannot take or may not afford."""
    candidates, skipped = resolve_candidates(table, req)
    for skip in skipped:
        record.attempts.append(AttemptRecord(target=skip.label, alias=skip.label.split(" ", 1)[0], outcome=f"skipped: {skip.reason}"))
    candidates, over_price = apply_ceiling(candidates, req.body)
    for candidate, reason in over_price:
        record.attempts.append(AttemptRecord(candidate.target.key, candidate.alias.name, f"skipped: {reason}"))
    if not candidates:
        raise ceiling_error(req.body, over_price, router_headers(req, record, None))
    return candidates


def _attempt_lines(record: RequestRecord) -> list[str]:
    return [f"{a.alias} -> {a.target}: {a.outcome}" for a in record.attempts]


async def send_with_fallback(
    request: web.Request, gateway: Gateway, req: ClientRequest, candidates: list[Candidate], record: RequestRecord
) -> web.StreamResponse:
    deadline = req.received_at + candidates[0].alias.retry.deadline
    errors: list[GatewayError] = []
    remaining = gateway.routing.order(candidates, req)
    while remaining:
        if time.monotonic() >= deadline:
            errors.append(UpstreamTimeout("the request's deadline passed before this target could be tried"))
            record.attempts.append(AttemptRecord(remaining[0].target.key, remaining[0].alias.name, "skipped: deadline passed"))
            break
        index, ticket, skips = await gateway.routing.admit(remaining, req, deadline)
        for skipped, reason in skips:
            record.attempts.append(AttemptRecord(remaining[skipped].target.key, remaining[skipped].alias.name, f"skipped: {reason}"))
            errors.append(TargetUnavailable(reason))
        if index is None or ticket is None:
            break
        candidate, remaining = remaining[index], remaining[index + 1 :]
        try:
            return await send_with_retries(request, gateway, req, candidate, record, deadline, ticket)
        except UpstreamClientError as exc:
            exc.headers.update(router_headers(req, record, candidate))
            raise
        except (UpstreamError, TargetUnavailable) as exc:
            errors.append(exc)
    raise AllCandidatesFailed(status_for_failures(errors), _attempt_lines(record), headers=router_headers(req, record, None))


async def send_with_retries(
    request: web.Request, gateway: Gateway, req: ClientRequest, candidate: Candidate, record: RequestRecord, deadline: float, ticket: Ticket
) -> web.StreamResponse:
    admitted = [ticket]

    async def attempt() -> web.StreamResponse:
        if admitted:
            return await routed_attempt(request, gateway, req, candidate, record, deadline, admitted.pop())
        # A retry is a new upstream call: admitted again (limits, circuit), but the
        # Retry-After this target asked for has just been waited out.
        _, again, skips = await gateway.routing.admit([candidate], req, deadline, honour_cooldown=False)
        if again is None:
            reason = skips[0][1] if skips else "not admitted"
            record.attempts.append(AttemptRecord(candidate.target.key, candidate.alias.name, f"skipped: {reason}"))
            raise TargetUnavailable(reason)
        return await routed_attempt(request, gateway, req, candidate, record, deadline, again)

    return await call_with_retries(candidate.alias.retry, deadline, attempt)


async def routed_attempt(
    request: web.Request, gateway: Gateway, req: ClientRequest, candidate: Candidate, record: RequestRecord, deadline: float, ticket: Ticket
) -> web.StreamResponse:
    try:
        response = await one_attempt(request, gateway, req, candidate, record, deadline, ticket)
    except BaseException as exc:
        gateway.routing.finish(ticket, exc, record)
        raise
    gateway.routing.finish(ticket, None, record)
    return response


def router_headers(req: ClientRequest, record: RequestRecord, candidate: Candidate | None) -> dict[str, str]:
    headers = {"x-request-id": req.request_id, "x-router-attempts": str(record.tries), "x-router-trace": trace(record)}
    if candidate is not None:
        headers["x-router-provider"] = candidate.target.provider.name
        headers["x-router-model"] = candidate.target.model
    return headers


async def _status_error(adapter: Adapter, response: UpstreamResponse, gateway: Gateway, candidate: Candidate) -> UpstreamStatusError:
    raw = b""
    try:
        raw = await response.read()
    except UpstreamError:
        pass
    finally:
        response.close()
    try:
        payload = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        payload = None
    message = scrub(
        adapter.error_message(response.status, payload) if payload is not None else (raw[:200].decode("utf-8", "replace") or f"HTTP {response.status}"),
        gateway.table.secrets(),
    )
    where = candidate.target.provider.name
    if response.status in CALLER_FAULT_STATUSES:
        body = payload if isinstance(payload, dict) else None
        if body is not None and isinstance(body.get("error"), dict):
            body = {"error": {**body["error"], "message": message}}
        return UpstreamClientError(response.status, f"{where} rejected the request: {message}", body=body)
    return UpstreamStatusError(response.status, f"{where} answered {response.status}: {message}", retry_after=retry_after(response.headers))


async def one_attempt(
    request: web.Request, gateway: Gateway, req: ClientRequest, candidate: Candidate, record: RequestRecord, deadline: float, ticket: Ticket | None = None
) -> web.StreamResponse:
    target = candidate.target
    adapter = ADAPTERS[target.provider.kind]
    native_stream = req.stream and req.op in adapter.capabilities.streams
    call = adapter.build_call(req.op, req.body, target.model, native_stream)
    ctx = ResponseContext(target.provider.name, target.model, req.request_id, int(time.time()), req.include_usage)
    attempt = AttemptRecord(target.key, candidate.alias.name, "started", price=target.price)
    record.attempts.append(attempt)
    started = time.monotonic()
    if record.upstream_started_mono is None:
        record.upstream_started_mono = started
    upstream: UpstreamResponse | None = None
    try:
        async with asyncio.timeout_at(_loop_deadline(deadline)):
            upstream = await gateway.transport.send(target.provider, call, req.request_id)
            attempt.status = upstream.status
            if ticket is not None:
                ticket.headers = upstream.headers  # its rate-limit headers feed the shared state
            if upstream.status >= 400:
                raise await _status_error(adapter, upstream, gateway, candidate)
            if native_stream:
                translator = adapter.stream_translator(req.op, ctx)
                batches = upstream.event_batches()
                first = await _first_batch(batches, target.provider.name)
            else:
                raw = await upstream.read()
    except TimeoutError as exc:
        if upstream is not None:
            upstream.close()
        error = UpstreamTimeout(f"{target.provider.name}: no answer within the request's deadline")
        _close_attempt(attempt, started, error)
        raise error from exc
    except GatewayError as exc:
        if upstream is not None:
            upstream.close()
        _close_attempt(attempt, started, exc)
        raise
    except BaseException:
        if upstream is not None:
            upstream.close()
        attempt.outcome = "client disconnected"
        attempt.latency_ms = (time.monotonic() - started) * 1000
        raise

    if native_stream:
        return await relay_stream(request, req, candidate, record, attempt, upstream, translator, batches, first, started)

    try:
        payload = orjson.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        bad_answer = UpstreamProtocolError(f"{target.provider.name}: answer is not a JSON object")
        _close_attempt(attempt, started, bad_answer)
        raise bad_answer from exc
    out, usage = adapter.translate_response(req.op, payload, ctx)
    if usage is None:  # the provider reported none: charge an estimate, marked as one
        usage = estimate_usage(req.body, completion_chars=len(answer_text(out)))
    _succeed(record, candidate, attempt, started, usage)
    headers = router_headers(req, record, candidate)
    if not req.stream:
        record.first_token_mono = record.ended_mono or time.monotonic()
        return web.Response(body=orjson.dumps(out), headers=headers, content_type="application/json")
    # The provider cannot stream: answer the streaming client from the whole response.
    response = web.StreamResponse(headers={**headers, **SSE_HEADERS})
    await response.prepare(request)
    record.first_token_mono = time.monotonic()
    for chunk in chunks_from_response(out, req.include_usage):
        await response.write(encode(chunk))
    await response.write(DONE_EVENT)
    await response.write_eof()
    return response


def _loop_deadline(deadline: float) -> float:
    # ``deadline`` is on time.monotonic(); asyncio's clock may differ in origin.
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


async def _first_batch(batches: Any, provider: str) -> list[bytes]:
    """The first events that carry data (empty ones before them are dropped)."""
    async for batch in batches:
        for i, data in enumerate(batch):
            if data:
                return batch[i:]
    raise UpstreamProtocolError(f"{provider}: the stream ended before its first event")


def _close_attempt(attempt: AttemptRecord, started: float, error: GatewayError) -> None:
    attempt.latency_ms = (time.monotonic() - started) * 1000
    reason = getattr(error, "reason", "error")
    attempt.outcome = f"{reason} ({error.message})" if reason != error.message else reason


def _succeed(record: RequestRecord, candidate: Candidate, attempt: AttemptRecord, started: float, usage: Any) -> None:
    attempt.outcome = "ok"
    attempt.latency_ms = (time.monotonic() - started) * 1000
    attempt.usage = usage
    record.alias = candidate.alias.name
    record.provider = candidate.target.provider.name
    record.model = candidate.target.model
    record.target_key = candidate.target.key
    record.usage = usage


async def relay_stream(
    request: web.Request,
    req: ClientRequest,
    candidate: Candidate,
    record: RequestRecord,
    attempt: AttemptRecord,
    upstream: UpstreamResponse,
    translator: StreamTranslator,
    batches: Any,
    first: list[bytes],
    started: float,
) -> web.StreamResponse:
    """Relay the stream as it arrives.  The client's first byte commits us to this target.

    Events that arrived in one read of the upstream leave in one write to the
    client: a write per event cost a syscall each and halved chunks/s.  The
    headers ride with the first write and the chunked-encoding end with the last.
    """
    _succeed(record, candidate, attempt, started, None)
    relayed = 0  # chunks the client was sent: the estimate when the stream ends without usage
    response = RelayResponse(headers={**router_headers(req, record, candidate), **SSE_HEADERS})
    try:
        await response.prepare(request)
        record.first_token_mono = time.monotonic()
        out: list[bytes] = []
        flushed = False
        batch: list[bytes] | None = first
        while batch is not None:
            for data in batch:
                if data == DONE:
                    batch = None  # ends the while loop; what is in `out` leaves with [DONE]
                    break
                chunk = translator.translate(data)
                if chunk is not None:
                    relayed += 1
                    out.append(encode(chunk))
            else:
                if out or not flushed:  # the first pass always writes: the headers must not wait for the next read
                    await response.write(b"".join(out))
                    out, flushed = [], True
                batch = await anext(batches, None)
        out.extend(encode(chunk) for chunk in translator.finish())
        out.append(DONE_EVENT)
        await response.write_eof(b"".join(out))
    except UpstreamError as exc:
        # Too late to fail over: tell the client in the stream, in the OpenAI error shape.
        attempt.outcome = f"{exc.reason} mid-stream"
        record.error_class = type(exc).__name__
        record.extra["stream_error"] = exc.message
        await _write_quietly(response, encode(GatewayError(f"the upstream stream broke: {exc.message}").to_body()))
    except (ConnectionResetError, asyncio.CancelledError):
        record.client_disconnected = True
        raise
    finally:
        upstream.close()
        # Cut streams and providers that report no usage are still charged, by estimate.
        record.usage = attempt.usage = translator.usage or estimate_usage(req.body, chunks=relayed)
    await _write_quietly(response, None)
    return response


async def _write_quietly(response: web.StreamResponse, data: bytes | None) -> None:
    try:
        if data is None:
            await response.write_eof()
        else:
            await response.write(data)
    except ConnectionResetError:
        pass
