"""The one ``StateStore`` interface, and the values that cross it.

Routing state is what every replica must agree on: each target's circuit,
its Retry-After cooldown, the quota its provider last reported, its latency
averages, and the sliding-window counters and in-flight leases of the
limiter.  Two implementations keep it: ``MemoryStore`` (one process, the
default) and ``RedisStore`` (any number of replicas).  Both follow the rules
written once in ``router/routing/health.py`` and ``router/state/limiter.py``.

The request path calls the store once before the upstream call and never
waits on it after:

    admit(claims, lease_ttl, entry)   awaited, one Redis round trip: the client
                                      request's own ``Entry`` (key/team rpm, tpm,
                                      concurrency and the budget reservation) and
                                      routing's first admissible claim, all or nothing
    release(grant, tokens, settle)    background: the entry's lease back, tokens
                                      corrected, the reservation settled to the real
                                      cost; idempotent, never lost (kept and replayed)
    report(claim, grant, outcome)     background: the claim's lease back and the
                                      outcome folded into its target's health
    snapshot(claims)                  never waits: the last state read, refreshed
                                      in the background

``acquire`` is ``admit`` with an entry and no claim (the limiter alone).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from router.config import HealthPolicy
from router.outcome import HealthEffect, SkipCause
from router.state.limiter import Grant, Refusal, Reserve, ScopeLimit

log = logging.getLogger("router.state")


@dataclass(frozen=True, slots=True)
class Claim:
    """One candidate target as ``admit`` sees it: its identity, the limiter scopes it counts against."""

    target: str  # Target.key
    limits: tuple[ScopeLimit, ...]
    tokens: int  # estimated before the call: prompt + max output tokens
    rules: HealthPolicy = HealthPolicy()
    honour_cooldown: bool = True  # False on a same-target retry that already waited the Retry-After


class RedisUnavailable(Exception):
    """Redis failed or was too slow for this call, or is out; the caller falls back to local state or fails closed."""


@dataclass(frozen=True, slots=True)
class Entry:
    """The client request itself, as ``admit`` counts it beside routing's claim: its key/team scopes and budget."""

    limits: tuple[ScopeLimit, ...]  # key:<id>, team:<name> scopes (may be empty)
    tokens: int  # counted in the entry scopes' tpm (an estimate; corrected at release)
    reserve: Reserve | None = None  # budget counters (full keys, amount, bounds, ttls), or None


@dataclass(frozen=True, slots=True)
class Skip:
    """Why ``admit`` passed one claim over, typed: the trace shows ``reason``; the pipeline reads ``cause`` and ``wait``."""

    cause: SkipCause
    reason: str  # "open circuit", "cooldown 1.2s", "over limit target:p/m rpm", ...
    wait: float | None = None  # seconds until it frees up by itself, when known


@dataclass(slots=True)
class Admission:
    """What ``admit`` answers: the first claim it could admit (or none), why each before it was skipped, the entry's fate."""

    index: int | None
    grant: Grant | None
    skips: list[tuple[int, Skip]] = field(default_factory=list)  # (claim index, why)
    probe: bool = False  # this call is the half-open probe of its target's circuit
    entry_grant: Grant | None = None  # the entry was counted (``.counts`` per entry scope, for x-ratelimit-*)
    refusal: Refusal | None = None  # the entry was refused (``limit == "reserve"``: a budget counter, ``scope`` its key)


@dataclass(slots=True)
class Outcome:
    """How one upstream call went, for ``report``."""

    kind: HealthEffect  # ok | fail (counts against health) | throttle (429/503: cooldown) | neutral
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    retry_after: float | None = None  # seconds of cooldown the provider asked for
    actual_tokens: int | None = None  # real usage, to correct the estimate counted at admission
    remaining_requests: int | None = None
    reset_requests: float | None = None  # seconds until the request quota refills
    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    probe: bool = False


@dataclass(slots=True)
class ScopeUsage:
    requests: int = 0  # in the sliding window
    tokens: int = 0
    in_flight: int = 0


@dataclass(slots=True)
class TargetState:
    """One target as the strategies and /admin/targets see it.  Times are epoch seconds."""

    circuit: str = "closed"  # closed | open | half-open
    open_until: float = 0.0
    cooldown_until: float = 0.0
    consecutive_failures: int = 0
    remaining_requests: int | None = None  # provider-reported, minus what was sent since
    reset_requests_at: float = 0.0
    remaining_tokens: int | None = None
    reset_tokens_at: float = 0.0
    latency_ms: float | None = None  # moving averages
    ttft_ms: float | None = None
    measured_at: float = 0.0
    scopes: dict[str, ScopeUsage] = field(default_factory=dict)

    def usage(self, scope: str) -> ScopeUsage:
        return self.scopes.get(scope) or ScopeUsage()


class BackgroundTasks:
    """Fire-and-forget work that is still tracked: kept referenced, errors logged, awaited at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what))

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background %s failed: %r", what, task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until no task is left, those the finished ones started included (a pipeline queued this turn)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await asyncio.sleep(0)  # a flush scheduled with call_soon spawns its task now
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - loop.time())
            await asyncio.sleep(0)


class StateStore(abc.ABC):
    """Shared routing state.  Every method is safe to call on the request path; none can hang."""

    backend: str = "memory"
    degraded: bool = False  # True while Redis is out and local state stands in
    redis_errors: int = 0  # Redis calls that failed or timed out (exported as a metric)
    probes_failed: int = 0  # outage probes (PING on the store's own connection) that failed

    def __init__(self) -> None:
        self.tasks = BackgroundTasks()

    # -- the limiter, over any scope strings (issue 5 reuses it for keys and teams) --

    async def acquire(self, limits: Sequence[ScopeLimit], tokens: int, lease_ttl: float) -> Grant | Refusal:
        """Count one request of ``tokens`` against every scope, and take an in-flight lease, or nothing (an entry alone)."""
        admission = await self.admit((), lease_ttl, Entry(tuple(limits), tokens))
        result = admission.refusal or admission.entry_grant
        assert result is not None, "an entry alone is either counted or refused"
        return result

    @abc.abstractmethod
    def release(self, grant: Grant, actual_tokens: int | None = None, settle: int | None = None) -> None:
        """Give the lease back, correct the token estimate and settle the reservation; background, idempotent.

        ``settle`` is the request's real cost in micro-USD, replacing what the
        grant reserved (None: nothing was reserved, or leave it as it is).
        Calling it twice releases and settles once.
        """

    @abc.abstractmethod
    async def spent(self, counters: Sequence[str]) -> list[int]:
        """The current value of budget counters (the full names an ``Entry``'s ``Reserve`` carries)."""

    # -- routing ------------------------------------------------------------------

    @abc.abstractmethod
    async def admit(self, claims: Sequence[Claim], lease_ttl: float, entry: Entry | None = None) -> Admission:
        """Count ``entry`` and admit the first claim whose circuit, cooldown, reported quota and limits allow it.

        All or nothing: the entry first (its reserve counters, then its
        scopes), then the first admissible claim.  If the entry is refused
        (``Admission.refusal``, with the counts) or no claim is admissible
        (the skips listed), nothing is counted or reserved.  With no claims
        at all the entry is taken alone.  Entry and claim share one lease.
        """

    @abc.abstractmethod
    def report(self, claim: Claim, grant: Grant, outcome: Outcome) -> None:
        """Release the grant and fold the outcome into the target's health; runs in the background."""

    @abc.abstractmethod
    def snapshot(self, claims: Sequence[Claim]) -> dict[str, TargetState]:
        """The last known state of these targets, without waiting (may be a fraction of a second old)."""

    @abc.abstractmethod
    async def read(self, claims: Sequence[Claim]) -> dict[str, TargetState]:
        """The current state, read now (for /admin/targets, not for the request path)."""

    async def close(self) -> None:
        await self.tasks.drain()
