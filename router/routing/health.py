"""Target health: the circuit breaker, Retry-After cooldowns and provider-reported quota.

The rules (``RedisStore`` runs the same ones in Lua, ``MemoryStore`` runs these):

    closed     every call allowed.  A failure (connect error, timeout, 5xx,
               unreadable answer, 401/403) adds to the consecutive count and
               to a sliding window; the circuit opens at ``failure_threshold``
               consecutive failures, or when at least ``min_requests`` calls
               in the last ``window`` seconds failed at ``failure_rate`` or more.
    open       no call for ``cooldown`` seconds: candidates are skipped
               without any I/O ("open circuit").
    half-open  after the cooldown, one probe at a time is let through
               (others skip: "circuit half-open").  Its success closes the
               circuit and clears the window; its failure opens it again.

    cooldown   a 429, or a 503 with Retry-After, is not ill health: the
               target is skipped until the Retry-After (``retry-after-ms``
               first, then ``Retry-After`` seconds; 1 s when absent) has passed.
    quota      ``x-ratelimit-remaining-requests`` / ``-tokens`` with their
               ``x-ratelimit-reset-*`` are stored and decremented by every
               admission; a target with no requests (or fewer tokens than the
               request's estimate) left before the reset is skipped, and one
               running low (``LOW_REQUESTS``) is moved behind its peers by
               every strategy, so traffic leaves before the first 429.

A caller's 4xx and a client that went away say nothing about the target:
they only release the in-flight lease.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from router.config import HealthPolicy
from router.errors import UpstreamClientError, UpstreamError, UpstreamStatusError
from router.outcome import HealthEffect, SkipCause
from router.state.store import Outcome, Skip, TargetState

LOW_REQUESTS = 2  # provider-reported requests left at which a target counts as running out
DEFAULT_QUOTA_RESET = 60.0  # when a provider reports remaining quota but not when it resets
DEFAULT_THROTTLE = 1.0  # cooldown for a 429 without Retry-After


def classify(exc: BaseException | None) -> HealthEffect:
    """The outcome kind of one attempt: ok, fail, throttle or neutral."""
    if exc is None:
        return HealthEffect.OK
    if isinstance(exc, UpstreamClientError):
        return HealthEffect.NEUTRAL
    if isinstance(exc, UpstreamStatusError):
        if exc.upstream_status == 429 or (exc.upstream_status == 503 and exc.retry_after is not None):
            return HealthEffect.THROTTLE
        return HealthEffect.FAIL
    if isinstance(exc, UpstreamError):
        return HealthEffect.FAIL
    return HealthEffect.NEUTRAL  # cancelled by the client, or a gateway-side error


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """OpenAI's reset format ("1s", "6m0s", "20ms", "1h2m3.5s") or plain seconds, to seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(float(value)))
    except ValueError:
        return None


def read_quota(headers: Mapping[str, str], outcome: Outcome) -> None:
    """Fold the provider's rate-limit headers into ``outcome``."""
    outcome.remaining_requests = _int(headers.get("x-ratelimit-remaining-requests"))
    outcome.remaining_tokens = _int(headers.get("x-ratelimit-remaining-tokens"))
    outcome.reset_requests = parse_duration(headers.get("x-ratelimit-reset-requests"))
    outcome.reset_tokens = parse_duration(headers.get("x-ratelimit-reset-tokens"))


def running_low(state: TargetState, tokens: int, now: float) -> bool:
    if state.remaining_requests is not None and state.reset_requests_at > now and state.remaining_requests <= LOW_REQUESTS:
        return True
    return state.remaining_tokens is not None and state.reset_tokens_at > now and state.remaining_tokens < 2 * tokens


def healthy(state: TargetState, now: float) -> bool:
    """Whether a call would be admitted on health grounds (limits aside)."""
    if state.cooldown_until > now:
        return False
    return state.circuit == "closed" or state.open_until <= now


@dataclass(slots=True)
class Health:
    """One target's health in one process (``MemoryStore``, and ``RedisStore`` while Redis is out)."""

    open: bool = False
    open_until: float = 0.0
    probe_until: float = 0.0
    failures: int = 0  # consecutive
    window: dict[int, list[int]] = field(default_factory=dict)  # second -> [successes, failures]
    cooldown_until: float = 0.0
    remaining_requests: int | None = None
    reset_requests_at: float = 0.0
    remaining_tokens: int | None = None
    reset_tokens_at: float = 0.0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    measured_at: float = 0.0

    def refusal(self, now: float, tokens: int, honour_cooldown: bool) -> tuple[Skip | None, bool]:
        """(why this target may not be called now, or None; whether the call is a half-open probe)."""
        probe = False
        if self.open:
            if now < self.open_until:
                return Skip(SkipCause.CIRCUIT, "open circuit", self.open_until - now), False
            if self.probe_until > now:
                return Skip(SkipCause.CIRCUIT, "circuit half-open, probe in flight", self.probe_until - now), False
            probe = True
        if honour_cooldown and self.cooldown_until > now:
            wait = self.cooldown_until - now
            return Skip(SkipCause.COOLDOWN, f"cooldown {wait:.1f}s", wait), False
        if self.remaining_requests is not None and self.reset_requests_at > now and self.remaining_requests <= 0:
            return Skip(SkipCause.QUOTA, "provider quota exhausted (requests)", self.reset_requests_at - now), False
        if self.remaining_tokens is not None and self.reset_tokens_at > now and self.remaining_tokens < tokens:
            return Skip(SkipCause.QUOTA, "provider quota exhausted (tokens)", self.reset_tokens_at - now), False
        return None, probe

    def admitted(self, now: float, tokens: int, probe: bool, rules: HealthPolicy) -> None:
        if probe:
            self.probe_until = now + rules.probe_timeout
        # Count this call against the reported quota now, so concurrent calls see it.
        if self.remaining_requests is not None and self.reset_requests_at > now:
            self.remaining_requests -= 1
        if self.remaining_tokens is not None and self.reset_tokens_at > now:
            self.remaining_tokens -= tokens

    def fold(self, outcome: Outcome, rules: HealthPolicy, now: float) -> None:
        self._fold_quota(outcome, now)
        if outcome.kind == HealthEffect.OK:
            self.failures = 0
            self._count(now, 0, rules)
            self.latency_ms = _ewma(self.latency_ms, outcome.latency_ms)
            if outcome.ttft_ms is not None:
                self.ttft_ms = _ewma(self.ttft_ms, outcome.ttft_ms)
            self.measured_at = now
            if self.open and outcome.probe:
                self.open, self.probe_until, self.window = False, 0.0, {}
        elif outcome.kind == HealthEffect.FAIL:
            self.failures += 1
            self._count(now, 1, rules)
            if self.open:
                if outcome.probe or now >= self.open_until:
                    self.open_until, self.probe_until = now + rules.cooldown, 0.0
            elif self._should_open(rules):
                self.open, self.open_until, self.probe_until = True, now + rules.cooldown, 0.0
        else:
            if outcome.kind == HealthEffect.THROTTLE:
                self.cooldown_until = max(self.cooldown_until, now + (outcome.retry_after if outcome.retry_after is not None else DEFAULT_THROTTLE))
            if outcome.probe:
                self.probe_until = 0.0  # the probe learnt nothing; let the next one through

    def _count(self, now: float, column: int, rules: HealthPolicy) -> None:
        second = int(now)
        first = second - int(rules.window) + 1
        for old in [s for s in self.window if s < first]:
            del self.window[old]
        self.window.setdefault(second, [0, 0])[column] += 1

    def _should_open(self, rules: HealthPolicy) -> bool:
        if self.failures >= rules.failure_threshold:
            return True
        ok = sum(b[0] for b in self.window.values())
        bad = sum(b[1] for b in self.window.values())
        return ok + bad >= rules.min_requests and bad >= rules.failure_rate * (ok + bad)

    def _fold_quota(self, outcome: Outcome, now: float) -> None:
        if outcome.remaining_requests is not None:
            reset = now + (outcome.reset_requests if outcome.reset_requests is not None else DEFAULT_QUOTA_RESET)
            self.remaining_requests, self.reset_requests_at = _merge_quota(
                self.remaining_requests, self.reset_requests_at, outcome.remaining_requests, reset, now
            )
        if outcome.remaining_tokens is not None:
            reset = now + (outcome.reset_tokens if outcome.reset_tokens is not None else DEFAULT_QUOTA_RESET)
            self.remaining_tokens, self.reset_tokens_at = _merge_quota(self.remaining_tokens, self.reset_tokens_at, outcome.remaining_tokens, reset, now)

    def state(self, now: float) -> TargetState:
        circuit = "closed" if not self.open else ("open" if now < self.open_until else "half-open")
        return TargetState(
            circuit=circuit,
            open_until=self.open_until if self.open else 0.0,
            cooldown_until=self.cooldown_until if self.cooldown_until > now else 0.0,
            consecutive_failures=self.failures,
            remaining_requests=self.remaining_requests if self.reset_requests_at > now else None,
            reset_requests_at=self.reset_requests_at if self.reset_requests_at > now else 0.0,
            remaining_tokens=self.remaining_tokens if self.reset_tokens_at > now else None,
            reset_tokens_at=self.reset_tokens_at if self.reset_tokens_at > now else 0.0,
            latency_ms=self.latency_ms,
            ttft_ms=self.ttft_ms,
            measured_at=self.measured_at,
        )


def _ewma(old: float | None, sample: float, alpha: float = 0.3) -> float:
    return sample if old is None else old * (1 - alpha) + sample * alpha


def _merge_quota(stored: int | None, stored_reset: float, reported: int, reset: float, now: float) -> tuple[int, float]:
    # A report from the same quota window can be older than admissions made
    # since (they already decremented ``stored``): keep the smaller.  A reset
    # later than the stored one by over a second means a new window: take it.
    if stored is None or stored_reset <= now or reset > stored_reset + 1.0:
        return reported, reset
    return min(stored, reported), stored_reset
