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

from router.accounting.record import RequestRecord
from router.auth.budget import RedisBudgetBook, Reservation, actual_cost, budget_refusal, budget_scopes, max_request_cost, reserve, settle_quietly
from router.auth.keys import Principal
from router.auth.limits import LimitDecision, decide, enforce_limits, refusal, scope_limits
from router.config import RouteTable
from router.errors import AuthUnavailable, PermissionDenied, RateLimited
from router.gateway import Gateway
from router.request import ClientRequest
from router.routing.candidates import Candidate
from router.routing.engine import LEASE_SLACK, estimate_tokens
from router.state.limiter import Refusal
from router.state.redis_store import RedisStore, RedisUnavailable

log = logging.getLogger("router.auth")


class Admission:
    """What access control decided for one request, and what it gives back when the request ends."""

    __slots__ = ("principal", "record", "table", "candidates", "headers", "reservation", "limits")

    def __init__(self, principal: Principal | None, record: RequestRecord) -> None:
        self.principal = principal
        self.record = record
        self.candidates: list[Candidate] = []
        self.headers: dict[str, str] = {}  # x-ratelimit-*, sent by middleware.add_ratelimit_headers
        self.reservation: Reservation | None = None
        self.limits: LimitDecision | None = None

    def allowed(self, table: RouteTable, req: ClientRequest, candidates: list[Candidate]) -> list[Candidate]:
        """The candidates this key may use; 403 if it named a model it may not, or none is left."""
        self.table, self.candidates = table, candidates
        principal = self.principal
        if principal is None:
            return candidates
        self.attribute(principal)
        requested = self.requested(req)
        allowed: list[Candidate] = []
        for candidate in candidates:
            if candidate.alias.name in requested or principal.may_use((candidate.alias.name,)):
                allowed.append(candidate)
            else:
                self.record.skip(candidate.target.key, candidate.alias.name, "alias not allowed for this key")
        if not allowed:
            raise PermissionDenied("this API key may not use any route that serves this request", param="model", code="model_not_allowed")
        self.candidates = allowed
        return allowed

    def attribute(self, principal: Principal) -> None:
        """The record learns the key and team (spend per team comes out of the ledger)."""
        record = self.record
        record.key_id = principal.key.id
        record.team = principal.team.name if principal.team else principal.key.team
        if record.user is None:
            record.user = principal.key.user
        record.metadata = {**principal.metadata, **record.metadata}  # the request's own tags win

    def requested(self, req: ClientRequest) -> set[str]:
        """Aliases the client named and may use (a wildcard's by the name it serves); 403 for any other."""
        assert self.principal is not None
        requested: set[str] = set()
        for name in req.models:
            alias = self.table.lookup(name)
            if not self.principal.may_use((name, alias.name if alias else name)):
                raise PermissionDenied(f"this API key may not use the model {name!r}", param="model", code="model_not_allowed")
            requested.add(alias.name if alias else name)
        return requested

    async def admit(self, gateway: Gateway, req: ClientRequest, body_bytes: int) -> None:
        """Reserve the maximum cost against key and team budgets (402) and count their limits (429): both or neither."""
        principal = self.principal
        if principal is None:
            return
        amount = self.max_cost(req, body_bytes)
        # tpm counts routing's estimate (prompt + max output), corrected to the real usage
        # in finish(); only budgets need the strict one-token-per-byte bound.
        lease_ttl = max(c.alias.retry.deadline for c in self.candidates) + LEASE_SLACK
        self.limits, self.reservation = await count_and_reserve(gateway, principal, estimate_tokens(req), lease_ttl, amount)
        self.headers = self.limits.headers

    def max_cost(self, req: ClientRequest, body_bytes: int) -> int | None:
        """The most this request can cost at the dearest candidate, or None when no budget applies."""
        assert self.principal is not None
        if not budget_scopes(self.principal, self.record.started_at):
            return None
        default_output = self.table.auth.default_max_output_tokens
        if req.max_output_tokens is None:
            # The reservation assumes this many output tokens; hold the upstream to it.
            req.body = {**req.body, "max_tokens": default_output}
        return max_request_cost(req, body_bytes, [c.target.price for c in self.candidates])

    def finish(self, gateway: Gateway) -> None:
        """Settle what was reserved and give back the lease; called once, when the request has ended (stream included)."""
        if self.reservation is not None:
            actual = actual_cost(self.record, self.reservation.amount)
            self.record.extra["budget_reserved_micro_usd"] = self.reservation.amount
            gateway.auth.in_background(settle_quietly(self.reservation, actual, log))
        if self.limits is not None and self.limits.release is not None:
            self.limits.release(self.record.tokens_used)  # the store sends it in the background


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
