"""Typed outcomes: how one attempt ended, and what that does to its target's health.

Every reader (routing's report, the limiter release, budget settlement, the
ledger, metrics, logs, ``x-router-trace``) reads these enums; none parses a
string back.  A leaf module: it imports nothing from the gateway.
"""

from __future__ import annotations

from enum import StrEnum


class HealthEffect(StrEnum):
    """What one upstream call does to its target's shared health state (the values cross into Lua)."""

    OK = "ok"  # a success: closes a half-open circuit, feeds the latency averages
    FAIL = "fail"  # counts toward opening the circuit
    THROTTLE = "throttle"  # 429 / 503 with Retry-After: a cooldown, not ill health
    NEUTRAL = "neutral"  # the caller's fault or the client left: changes nothing


class AttemptKind(StrEnum):
    """How one candidate ended for one request."""

    STARTED = "started"  # in flight
    OK = "ok"  # answered (a stream: relayed to its end)
    SKIPPED = "skipped"  # never called: open circuit, cooldown, limit, price, key not allowed, deadline
    FAILED = "failed"  # called, failed before anything reached the client
    MID_STREAM = "mid-stream"  # failed after the client had the first byte: no failover (unless stream_recovery continues it)
    CONTINUED = "continued"  # continued a broken stream in the same client response (stream_recovery: continue)
    CLIENT_GONE = "client disconnected"  # the client left while this attempt ran


class SkipCause(StrEnum):
    """Why admission passed a candidate over before any I/O (the values cross from Lua)."""

    CIRCUIT = "circuit"  # open, or its half-open probe is in flight: ill health
    COOLDOWN = "cooldown"  # the Retry-After it asked for has not passed
    QUOTA = "quota"  # the quota its provider reported is spent until its reset
    LIMIT = "limit"  # a configured rpm, tpm or concurrency of the target or its provider account

    @property
    def throttled(self) -> bool:
        """Refused for rate, not health: it frees up by itself, so the client hears 429 with Retry-After."""
        return self is not SkipCause.CIRCUIT
