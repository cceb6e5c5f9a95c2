"""The routing engine: order the candidates, admit one against shared state, report how the call went.

    order(candidates, req)        each alias's targets by its strategy, over a
                                  snapshot of state (no I/O, never waits); those it
                                  knows to be unavailable come last, with why
    admit(candidates, req, ...)   one store call: the first candidate whose
                                  circuit, cooldown, reported quota and limits
                                  allow it is counted and leased (with the
                                  request's own entry: key/team limits and
                                  budget, all or nothing); the ones before it
                                  come back with the reason they were skipped
    finish(ticket, attempt, record) fold the attempt's typed outcome into shared state, in the background

Each target counts against the scope ``target:<provider>/<model>`` (its
limits, and always its in-flight lease) and, when its provider declares
``limits``, against ``account:<provider>`` (several models on one key).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from router.accounting.record import AttemptRecord, RequestRecord
from router.config import Target
from router.outcome import HealthEffect
from router.request import ClientRequest
from router.routing import strategies
from router.routing.candidates import Candidate
from router.routing.health import read_quota
from router.state.limiter import Grant, ScopeLimit
from router.state.store import Admission, Claim, Entry, Outcome, Skip, StateStore, TargetState

DEFAULT_OUTPUT_TOKENS = 256  # counted for a request without max_tokens, corrected after the call
LEASE_SLACK = 30.0  # a lease outlives the request's deadline by this much, then expires on its own


def target_limits(target: Target) -> tuple[ScopeLimit, ...]:
    own = target.limits
    scopes = [ScopeLimit(f"target:{target.key}", own.rpm, own.tpm, own.concurrency) if own else ScopeLimit(f"target:{target.key}")]
    account = target.provider.limits
    if account is not None:
        scopes.append(ScopeLimit(f"account:{target.provider.name}", account.rpm, account.tpm, account.concurrency))
    return tuple(scopes)


def estimate_tokens(req: ClientRequest) -> int:
    return req.prompt_tokens_estimate + (req.max_output_tokens or DEFAULT_OUTPUT_TOKENS)


@dataclass(slots=True)
class Ticket:
    """One admitted upstream call, from admission to report."""

    claim: Claim
    grant: Grant
    probe: bool
    started: float = field(default_factory=time.monotonic)
    headers: Mapping[str, str] | None = None  # the upstream's answer headers, for its rate-limit state


@dataclass(slots=True)
class Ordering:
    """The candidates in the order to try them, and those the last state read already knows to be
    unavailable (kept last, so admission on live state can still take them; the trace names them first)."""

    candidates: list[Candidate] = field(default_factory=list)
    set_aside: list[tuple[Candidate, Skip]] = field(default_factory=list)


class RoutingEngine:
    def __init__(self, store: StateStore, rng: random.Random | None = None) -> None:
        self.store = store
        self.rng = rng or random.Random()

    def claim(self, target: Target, tokens: int, *, honour_cooldown: bool = True) -> Claim:
        return Claim(target.key, target_limits(target), tokens, target.provider.health, honour_cooldown)

    def order(self, candidates: Sequence[Candidate], req: ClientRequest) -> Ordering:
        """Candidates arrive grouped by alias (candidates.py); each group is ordered by its alias's strategy."""
        tokens = estimate_tokens(req)
        states = self.store.snapshot([self.claim(c.target, tokens) for c in candidates])
        ctx = strategies.Context(time.time(), tokens, req.stream, self.rng)
        ordering = Ordering()
        start = 0
        while start < len(candidates):
            alias = candidates[start].alias
            end = start
            while end < len(candidates) and candidates[end].alias is alias:
                end += 1
            options = [
                strategies.Option(i, c.target, states.get(c.target.key) or TargetState(), target_limits(c.target)) for i, c in enumerate(candidates[start:end])
            ]
            for option in strategies.order(alias.strategy, options, ctx):
                candidate = candidates[start + option.position]
                ordering.candidates.append(candidate)
                skip = strategies.unavailable(option, ctx)
                if skip is not None:
                    ordering.set_aside.append((candidate, skip))
            start = end
        return ordering

    async def admit(self, candidates: Sequence[Candidate], req: ClientRequest, deadline: float, entry: Entry | None = None) -> tuple[Admission, Ticket | None]:
        """One store call: the first admissible candidate (and the request's own entry, when given), counted and leased."""
        tokens = estimate_tokens(req)
        return await self._admitted([self.claim(c.target, tokens) for c in candidates], deadline, entry)

    async def readmit(self, candidate: Candidate, req: ClientRequest, deadline: float) -> tuple[Admission, Ticket | None]:
        """A same-target retry: admitted again (limits, circuit), but the Retry-After it asked for has just been waited out."""
        return await self._admitted([self.claim(candidate.target, estimate_tokens(req), honour_cooldown=False)], deadline, None)

    async def _admitted(self, claims: list[Claim], deadline: float, entry: Entry | None) -> tuple[Admission, Ticket | None]:
        lease_ttl = max(0.0, deadline - time.monotonic()) + LEASE_SLACK
        admission = await self.store.admit(claims, lease_ttl, entry)
        if admission.index is None or admission.grant is None:
            return admission, None
        return admission, Ticket(claims[admission.index], admission.grant, admission.probe)

    def finish(self, ticket: Ticket, attempt: AttemptRecord, record: RequestRecord) -> None:
        """Fold one attempt's typed outcome into shared state (in the background)."""
        outcome = Outcome(attempt.health, latency_ms=(time.monotonic() - ticket.started) * 1000, probe=ticket.probe)
        if attempt.health is HealthEffect.OK:
            if record.stream and record.first_token_mono is not None:
                outcome.ttft_ms = max(0.0, (record.first_token_mono - ticket.started) * 1000)
            if attempt.usage is not None:
                outcome.actual_tokens = attempt.usage.total
        outcome.retry_after = attempt.retry_after
        if ticket.headers is not None:
            read_quota(ticket.headers, outcome)
        self.store.report(ticket.claim, ticket.grant, outcome)

    async def states(self, targets: Sequence[Target]) -> dict[str, TargetState]:
        return await self.store.read([self.claim(t, 0) for t in targets])
