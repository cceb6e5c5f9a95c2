"""Admission: once the body is parsed, may this key send this request, and can its budget cover it?

    allowed()   -> the record learns the key and team (spend per team comes out of the ledger)
                -> every model the client named must be allowed to the key and its team (403)
                -> fallback targets on aliases the key may not use are skipped, never tried
    entry()     -> the request's ``Entry`` for the state store: the maximum cost to reserve
                   against key and team budgets (budget.py) and the key's and team's
                   rpm / tpm / concurrency scopes (limits.py); routing's first admit carries
                   it, so both are counted with the target's admission, or none: one round trip
    counted()   -> the store's answer: 402 for a budget, 429 for a limit, else the grant is held
    finish()    -> settle the reservation to the real cost and give back the concurrency lease
                   with the real token count, off the client's wait

With auth off there is no principal and admission lets everything through.
"""

from __future__ import annotations

import logging

from router.accounting.record import RequestRecord
from router.auth.budget import BudgetScope, actual_cost, budget_refusal, budget_scopes, max_request_cost
from router.auth.keys import Principal
from router.auth.limits import limit_refusal, scope_limits, window_headers
from router.config import RouteTable
from router.errors import PermissionDenied
from router.gateway import Gateway
from router.request import ClientRequest
from router.routing.candidates import Candidate
from router.routing.engine import estimate_tokens
from router.state.limiter import Grant, ScopeLimit
from router.state.store import Admission as StoreAdmission
from router.state.store import Entry

log = logging.getLogger("router.auth")


class Admission:
    """What access control decided for one request, and what it gives back when the request ends."""

    __slots__ = ("principal", "record", "table", "candidates", "headers", "limits", "budgets", "amount", "grant")

    def __init__(self, principal: Principal | None, record: RequestRecord) -> None:
        self.principal = principal
        self.record = record
        self.candidates: list[Candidate] = []
        self.headers: dict[str, str] = {}  # x-ratelimit-*, sent by middleware.add_ratelimit_headers
        self.limits: tuple[ScopeLimit, ...] = ()
        self.budgets: list[BudgetScope] = []
        self.amount: int | None = None  # the reservation: the most this request can cost
        self.grant: Grant | None = None  # the entry the store counted: its lease, and what it reserved

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

    def entry(self, gateway: Gateway, req: ClientRequest, body_bytes: int) -> Entry | None:
        """What the key's and team's limits and budgets count for this request: routing's first admit carries it."""
        principal = self.principal
        if principal is None:
            return None
        self.limits = tuple(scope_limits(principal))
        self.amount = amount = self.max_cost(req, body_bytes)
        reserve = gateway.auth.book.reserve(self.budgets, amount, self.record.started_at) if amount is not None else None
        if not self.limits and reserve is None:
            return None
        # tpm counts routing's estimate (prompt + max output), corrected to the real usage at the
        # end; only budgets need the strict one-token-per-byte bound.
        return Entry(self.limits, estimate_tokens(req), reserve)

    def max_cost(self, req: ClientRequest, body_bytes: int) -> int | None:
        """The most this request can cost at the dearest candidate, or None when no budget applies."""
        assert self.principal is not None
        self.budgets = budget_scopes(self.principal, self.record.started_at)
        if not self.budgets:
            return None
        if req.max_output_tokens is None:
            # The reservation assumes this many output tokens; hold the upstream to it.
            req.body = {**req.body, "max_tokens": self.table.auth.default_max_output_tokens}
        return max_request_cost(req, body_bytes, [c.target.price for c in self.candidates])

    def counted(self, gateway: Gateway, admitted: StoreAdmission) -> None:
        """The store's answer for the entry: 402 or 429 if it was refused (nothing counted), else hold its grant."""
        refused = admitted.refusal
        if refused is not None and refused.limit == "reserve":
            raise budget_refusal(gateway.auth.book.scope_of(self.budgets, refused.scope), self.amount or 0, self.record.started_at)
        if refused is not None:
            raise limit_refusal(self.limits, refused)
        grant = admitted.entry_grant
        if grant is not None:
            self.grant = grant
            self.headers = window_headers(self.limits, grant.counts)
            if grant.reserve is not None:
                self.record.extra["budget_reserved_micro_usd"] = grant.reserve.amount

    def finish(self, gateway: Gateway) -> None:
        """Give back the lease and settle the reservation to the real cost; once, when the request has ended (stream included)."""
        grant = self.grant
        if grant is None:
            return
        settle = actual_cost(self.record, grant.reserve.amount) if grant.reserve is not None else None
        gateway.routing.store.release(grant, self.record.tokens_used, settle)  # sent in the background, kept until Redis has it
