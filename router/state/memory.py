"""``MemoryStore``: routing state for one process (the default, and Redis's stand-in while it is out).

Every method runs to completion without awaiting anything, so a check and
the count that follows it are atomic within the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from router.routing.health import Health
from router.state.limiter import Grant, LocalLimiter, Refusal, ScopeLimit
from router.state.store import Admission, Claim, Outcome, ScopeUsage, StateStore, TargetState


class MemoryStore(StateStore):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.limiter = LocalLimiter()
        self.health: dict[str, Health] = {}

    def health_for(self, target: str) -> Health:
        return self.health.setdefault(target, Health())

    async def acquire(self, limits: Sequence[ScopeLimit], tokens: int, lease_ttl: float) -> Grant | Refusal:
        return self.limiter.acquire(limits, tokens, lease_ttl)

    def release(self, grant: Grant, actual_tokens: int | None = None) -> None:
        self.limiter.release(grant, actual_tokens)

    def admit_now(self, claims: Sequence[Claim], lease_ttl: float, now: float | None = None) -> Admission:
        now = time.time() if now is None else now
        skips: list[tuple[int, str]] = []
        for index, claim in enumerate(claims):
            health = self.health_for(claim.target)
            reason, probe = health.refusal(now, claim.tokens, claim.honour_cooldown)
            if reason is None:
                refusal = self.limiter.check(claim.limits, claim.tokens, now)
                if refusal is not None:
                    reason = refusal.reason
            if reason is not None:
                skips.append((index, reason))
                continue
            health.admitted(now, claim.tokens, probe, claim.rules)
            grant = self.limiter.take(claim.limits, claim.tokens, lease_ttl, now)
            return Admission(index, grant, skips, probe)
        return Admission(None, None, skips)

    async def admit(self, claims: Sequence[Claim], lease_ttl: float) -> Admission:
        return self.admit_now(claims, lease_ttl)

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
