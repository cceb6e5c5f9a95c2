"""``MemoryStore``: routing state for one process (the default, and Redis's stand-in while it is out).

Every method runs to completion without awaiting anything, so a check and
the count that follows it are atomic within the event loop.  Budget
counters live here too, so one ``admit`` checks an entry's budget, its key
and team limits and a target's health in one synchronous step, as the
Redis script does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from router.outcome import SkipCause
from router.routing.health import Health
from router.state.limiter import Grant, LocalLimiter, Refusal, Reserve
from router.state.store import Admission, Claim, Entry, Outcome, ScopeUsage, Skip, StateStore, TargetState


class MemoryStore(StateStore):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.limiter = LocalLimiter()
        self.health: dict[str, Health] = {}
        self.counters: dict[str, int] = {}  # budget counters, by the names an Entry's Reserve carries
        self._reserved: dict[str, Reserve] = {}  # lease -> what it reserved, until settled (once)

    def health_for(self, target: str) -> Health:
        return self.health.setdefault(target, Health())

    async def spent(self, counters: Sequence[str]) -> list[int]:
        return [self.counters.get(c, 0) for c in counters]

    def release(self, grant: Grant, actual_tokens: int | None = None, settle: int | None = None) -> None:
        self.limiter.release(grant, actual_tokens)
        reserve = self._reserved.pop(grant.lease, None)
        if reserve is not None and settle is not None and settle != reserve.amount:
            for key in reserve.keys:
                self.counters[key] = self.counters.get(key, 0) + settle - reserve.amount

    def refuse_entry(self, entry: Entry, now: float) -> Refusal | None:
        """Why ``entry`` cannot be counted now (its budget first, then its scopes), or None."""
        reserve = entry.reserve
        if reserve is not None:
            for key, bound in zip(reserve.keys, reserve.bounds, strict=True):
                if self.counters.get(key, 0) + reserve.amount > bound:
                    return Refusal(key, "reserve", 0.0, self.limiter.counts(entry.limits, now))
        refusal = self.limiter.check(entry.limits, entry.tokens, now)
        return None if refusal is None else replace(refusal, counts=self.limiter.counts(entry.limits, now))

    def take_entry(self, entry: Entry, lease: str, lease_ttl: float, now: float) -> Grant:
        grant = self.limiter.take(entry.limits, entry.tokens, lease_ttl, now, lease)
        grant.counts = self.limiter.counts(entry.limits, now)
        if entry.reserve is not None:
            for key in entry.reserve.keys:
                self.counters[key] = self.counters.get(key, 0) + entry.reserve.amount
            self._reserved[grant.lease] = entry.reserve
            grant.reserve = entry.reserve
        return grant

    def admit_now(self, claims: Sequence[Claim], lease_ttl: float, entry: Entry | None = None) -> Admission:
        now = time.time()
        refusal = self.refuse_entry(entry, now) if entry is not None else None
        if refusal is not None:
            return Admission(None, None, refusal=refusal)
        admission = self.admit_claim(claims, lease_ttl, now) if claims else Admission(None, None)
        if entry is not None and (admission.grant is not None or not claims):
            lease = admission.grant.lease if admission.grant is not None else None
            admission.entry_grant = self.take_entry(entry, lease or "", lease_ttl, now)
        return admission

    def admit_claim(self, claims: Sequence[Claim], lease_ttl: float, now: float) -> Admission:
        skips: list[tuple[int, Skip]] = []
        for index, claim in enumerate(claims):
            health = self.health_for(claim.target)
            skip, probe = health.refusal(now, claim.tokens, claim.honour_cooldown)
            if skip is None:
                refusal = self.limiter.check(claim.limits, claim.tokens, now)
                if refusal is not None:
                    skip = Skip(SkipCause.LIMIT, refusal.reason, refusal.retry_after)
            if skip is not None:
                skips.append((index, skip))
                continue
            health.admitted(now, claim.tokens, probe, claim.rules)
            grant = self.limiter.take(claim.limits, claim.tokens, lease_ttl, now)
            return Admission(index, grant, skips, probe)
        return Admission(None, None, skips)

    async def admit(self, claims: Sequence[Claim], lease_ttl: float, entry: Entry | None = None) -> Admission:
        return self.admit_now(claims, lease_ttl, entry)

    def report_now(self, claim: Claim, grant: Grant, outcome: Outcome, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.limiter.release(grant, outcome.actual_tokens, now)
        self.health_for(claim.target).fold(outcome, claim.rules, now)

    def report(self, claim: Claim, grant: Grant, outcome: Outcome) -> None:
        self.report_now(claim, grant, outcome)

    def snapshot(self, claims: Sequence[Claim]) -> dict[str, TargetState]:
        now = time.time()
        states: dict[str, TargetState] = {}
        for claim in claims:
            health = self.health.get(claim.target)
            state = health.state(now) if health is not None else TargetState()
            for limit in claim.limits:
                state.scopes[limit.scope] = ScopeUsage(*self.limiter.usage(limit.scope, now))
            states[claim.target] = state
        return states

    async def read(self, claims: Sequence[Claim]) -> dict[str, TargetState]:
        return self.snapshot(claims)
