"""Admission: once the body is parsed, may this key send this request, and can its budget cover it?

    admit()     -> the record learns the key and team (spend per team comes out of the ledger)
                -> every model the client named must be allowed to the key and its team (403)
                -> fallback targets on aliases the key may not use are skipped, never tried
                -> the maximum cost is reserved against key and team budgets (budget.py), or 402,
                   and rpm / tpm / concurrency of key and team counted in the shared limiter
                   (limits.py), or 429: both or neither, in one Redis round trip (count_and_reserve)
    finish()    -> settle the reservation to the real cost and give back the concurrency lease
                   with the real token count, off the client's wait

With auth off there is no principal and admission lets everything through.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from router.accounting.record import AttemptRecord, RequestRecord
from router.auth.budget import RedisBudgetBook, Reservation, actual_cost, budget_refusal, budget_scopes, max_request_cost, output_bound, reserve, settle_quietly
from router.auth.keys import Principal
from router.auth.limits import LimitDecision, decide, enforce_limits, refusal, scope_limits, tokens_used
from router.auth.middleware import PRINCIPAL, RATELIMIT_HEADERS
from router.config import RouteTable
from router.errors import AuthUnavailable, PermissionDenied, RateLimited
from router.gateway import Gateway
from router.request import ClientRequest
from router.routing.candidates import Candidate
from router.routing.engine import LEASE_SLACK, estimate_tokens
from router.state.limiter import Refusal
from router.state.redis_store import RedisStore, RedisUnavailable

log = logging.getLogger("router.auth")


@dataclass(slots=True)
class Admission:
    candidates: list[Candidate]
    headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-*, sent by middleware.add_ratelimit_headers
    reservation: Reservation | None = None
    prices: dict[str, Any] = field(default_factory=dict)
    limits: LimitDecision | None = None


async def admit(
    request: web.Request, gateway: Gateway, table: RouteTable, req: ClientRequest, body_bytes: int, candidates: list[Candidate], record: RequestRecord
) -> Admission:
    principal = request.get(PRINCIPAL)
    if principal is None:
        return Admission(candidates)
    record.key_id = principal.key.id
    record.team = principal.team.name if principal.team else principal.key.team
    if record.user is None:
        record.user = principal.key.user
    record.metadata = {**principal.metadata, **record.metadata}  # the request's own tags win

    requested: set[str] = set()  # aliases the client named and may use (a wildcard's by the name it serves)
    for name in req.models:
        alias = table.lookup(name)
        if not principal.may_use((name, alias.name if alias else name)):
            raise PermissionDenied(f"this API key may not use the model {name!r}", param="model", code="model_not_allowed")
        requested.add(alias.name if alias else name)
    allowed: list[Candidate] = []
    for candidate in candidates:
        if candidate.alias.name in requested or principal.may_use((candidate.alias.name,)):
            allowed.append(candidate)
        else:
            record.attempts.append(AttemptRecord(candidate.target.key, candidate.alias.name, "skipped: alias not allowed for this key"))
    if not allowed:
        raise PermissionDenied("this API key may not use any route that serves this request", param="model", code="model_not_allowed")

    admission = Admission(allowed)
    default_output = table.auth.default_max_output_tokens
    amount: int | None = None
    if budget_scopes(principal, record.started_at):
        if not output_bound(req.body, default_output)[1]:
            # The reservation assumes this many output tokens; hold the upstream to it.
            req.body = {**req.body, "max_tokens": default_output}
        admission.prices = {c.target.key: c.target.price for c in allowed}
        amount = max_request_cost(body_bytes, req.body, list(admission.prices.values()), default_output)
    # tpm counts routing's estimate (prompt + max output), corrected to the real usage
    # in finish(); only budgets need the strict one-token-per-byte bound.
    lease_ttl = max(c.alias.retry.deadline for c in allowed) + LEASE_SLACK
    admission.limits, admission.reservation = await count_and_reserve(gateway, principal, estimate_tokens(req), lease_ttl, amount)
    admission.headers = admission.limits.headers
    if admission.headers:
        request[RATELIMIT_HEADERS] = admission.headers
    return admission


async def count_and_reserve(
    gateway: Gateway, principal: Principal, tokens: int, lease_ttl: float, amount: int | None
) -> tuple[LimitDecision, Reservation | None]:
    """Count the key's and team's limits and reserve ``amount`` against their budgets: both, or neither (429 / 402).

    The budget is checked first, so a request it refuses uses up no rpm,
    and a request a limit refuses holds no reservation.  On Redis both ride
    on one ``acquire`` call of the state store (the budget counters as its
    ``Reserve``): one round trip.  Otherwise they run one after the other and
    a limit refusal gives the reservation back at once.
    """
    store, book = gateway.routing.store, gateway.auth.book
    now = time.time()
    scopes = budget_scopes(principal, now) if amount is not None else []
    limits = scope_limits(principal)
    if amount is not None and scopes and limits and isinstance(store, RedisStore) and isinstance(book, RedisBudgetBook):
        try:
            result = await store.acquire(limits, tokens, lease_ttl, book.counters(scopes, amount, now))
        except RedisUnavailable as exc:
            # Fail closed: admitting without a reservation could overspend.
            raise AuthUnavailable("the budget store is unavailable; try again shortly") from exc
        if isinstance(result, Refusal) and result.limit == "reserve":
            raise budget_refusal(scopes[[book.base + s.counter for s in scopes].index(result.scope)], amount, now)
        decision = decide(limits, result, store)
        if decision.refused_by is not None:
            raise refusal(decision)
        return decision, Reservation(book, scopes, amount)
    reservation = await reserve(book, principal, amount) if amount is not None else None
    try:
        return await enforce_limits(store, principal, tokens, lease_ttl), reservation
    except RateLimited:
        if reservation is not None:
            await reservation.settle(0)
        raise


def finish(gateway: Gateway, admission: Admission | None, record: RequestRecord) -> None:
    """Settle what was reserved; called once, when the request has ended (stream included)."""
    if admission is None:
        return
    if admission.reservation is not None:
        reservation = admission.reservation
        actual = actual_cost(record, admission.prices, reservation.amount)
        record.extra["budget_reserved_micro_usd"] = reservation.amount
        gateway.auth.in_background(settle_quietly(reservation, actual, log))
    if admission.limits is not None and admission.limits.release is not None:
        admission.limits.release(tokens_used(record))  # the store sends it in the background
