"""The limiter: sliding-window request and token counters plus in-flight leases, over any scope strings.

A *scope* is any string naming what a limit guards.  Routing uses
``target:<provider>/<model>`` and ``account:<provider>``; access control
(issue 5) reuses the very same code for ``key:<id>`` and ``team:<id>``
rpm/tpm/concurrency.  One call checks every scope it is given and either
counts the request in all of them or in none (atomic: one Lua script in
Redis, one synchronous step in memory), so a request refused by its team's
limit never used up its key's.

    acquire(limits, tokens, lease_ttl) -> Grant | Refusal
        Grant:   the request is counted in every scope's window (1 request,
                 ``tokens`` tokens) and holds a lease in each scope's in-flight set.
        Refusal: the first scope and limit that said no, and when to try again.
        Both carry each scope's ``ScopeCount`` as the same step left it, so a
        caller can tell its client what remains (the x-ratelimit-* headers).
    release(grant, actual_tokens)
        Drops the leases and corrects the tokens counted at acquire to the
        real usage (estimate before the call, truth after it).  Idempotent:
        the correction is applied only where the lease was still held, so a
        release sent twice (replayed after a lost reply) corrects once.

Windows are 60 one-second buckets: a request counts from the second it was
admitted for the next 59 to 60 seconds, so a limit of N per minute admits at
most N in any 59 seconds.  Leases expire on their own (``lease_ttl``) so a
crashed replica cannot hold a concurrency slot forever.

``LocalLimiter`` is the in-process implementation; ``LIMITER_LUA`` is the
same algorithm for Redis, spliced into the scripts in ``redis_store.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class ScopeLimit:
    scope: str  # e.g. "target:openai/gpt-4o", "account:openai", "key:k_123", "team:research"
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class ScopeCount:
    """One scope's window as ``acquire`` left it (this request included when granted)."""

    scope: str
    requests: int
    tokens: int
    frees_in: float  # seconds until the oldest second counted leaves the window (and its room comes back)


@dataclass(slots=True)
class Grant:
    lease: str
    scopes: tuple[str, ...]
    second: int  # the window bucket the request was counted in
    tokens: int  # the estimate counted
    local: bool = False  # granted by the in-process fallback while Redis was out
    counts: tuple[ScopeCount, ...] = ()  # filled by acquire and for admit's entry (not for routing's claim)
    reserve: Reserve | None = None  # the budget counters this lease reserved on, settled by release(settle=...)


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str
    limit: str  # "rpm" | "tpm" | "concurrency"
    retry_after: float  # seconds until the window or a slot frees up (an estimate for concurrency)
    counts: tuple[ScopeCount, ...] = ()  # filled by acquire (not by routing's admit)

    @property
    def reason(self) -> str:
        return f"over limit {self.scope} {self.limit}"


@dataclass(frozen=True, slots=True)
class Reserve:
    """Plain counters raised by ``amount`` in the same atomic step as a Redis ``acquire``, only if each stays within its bound.

    Access control's budgets ride on the limiter's call this way, so a
    request with key limits and a budget costs one round trip, not two.
    The caller owns the counters' names (full Redis keys) and their meaning.
    """

    keys: tuple[str, ...]
    amount: int
    bounds: tuple[int, ...]
    ttls: tuple[int, ...]  # seconds; 0 = no expiry


# Lua numbers are doubles: every number a client can influence is clamped below 2**53
# before it reaches a script, so bad data can never make Redis answer an error.
MAX_TOKENS = 2**40  # per request; 2**63 / 2**40 requests would have to land in one window to overflow
MAX_MICRO_USD = 2**50  # about 1.1e9 USD
MAX_LUA_INT = 2**52


def clamp(value: float | int, low: int = 0, high: int = MAX_LUA_INT) -> int:
    """``value`` as an integer a Lua script can hold exactly (NaN reads as ``low``)."""
    if value != value:  # NaN
        return low
    if value <= low:
        return low
    if value >= high:
        return high
    return int(value)


def new_lease() -> str:
    return os.urandom(8).hex()


@dataclass(slots=True)
class _Scope:
    buckets: dict[int, list[int]] = field(default_factory=dict)  # second -> [requests, tokens]
    leases: dict[str, float] = field(default_factory=dict)  # lease -> expires at

    def usage(self, now: float) -> tuple[int, int, int, int]:
        """(requests, tokens, in flight, oldest second in the window), pruning what has left it."""
        first = int(now) - WINDOW_SECONDS + 1
        for second in [s for s in self.buckets if s < first]:
            del self.buckets[second]
        for lease in [k for k, until in self.leases.items() if until <= now]:
            del self.leases[lease]
        requests = sum(b[0] for b in self.buckets.values())
        tokens = sum(b[1] for b in self.buckets.values())
        oldest = min(self.buckets, default=int(now))
        return requests, tokens, len(self.leases), oldest


class LocalLimiter:
    """The limiter for one process.  Synchronous on purpose: no await between check and count."""

    def __init__(self) -> None:
        self._scopes: dict[str, _Scope] = {}

    def check(self, limits: Sequence[ScopeLimit], tokens: int, now: float) -> Refusal | None:
        for limit in limits:
            scope = self._scopes.get(limit.scope)
            if scope is None:
                continue
            requests, used, in_flight, oldest = scope.usage(now)
            wait = max(0.0, oldest + WINDOW_SECONDS - now)
            if limit.rpm is not None and requests + 1 > limit.rpm:
                return Refusal(limit.scope, "rpm", wait)
            # One request larger than the whole tpm still passes an empty window, or it never could.
            if limit.tpm is not None and used > 0 and used + tokens > limit.tpm:
                return Refusal(limit.scope, "tpm", wait)
            if limit.concurrency is not None and in_flight >= limit.concurrency:
                return Refusal(limit.scope, "concurrency", 1.0)
        return None

    def take(self, limits: Sequence[ScopeLimit], tokens: int, lease_ttl: float, now: float, lease: str | None = None) -> Grant:
        lease, second = lease or new_lease(), int(now)
        for limit in limits:
            scope = self._scopes.setdefault(limit.scope, _Scope())
            bucket = scope.buckets.setdefault(second, [0, 0])
            bucket[0] += 1
            bucket[1] += tokens
            scope.leases[lease] = now + lease_ttl
        return Grant(lease, tuple(limit.scope for limit in limits), second, tokens, local=True)

    def acquire(self, limits: Sequence[ScopeLimit], tokens: int, lease_ttl: float, now: float | None = None) -> Grant | Refusal:
        now = time.time() if now is None else now
        refusal = self.check(limits, tokens, now)
        if refusal is not None:
            return replace(refusal, counts=self.counts(limits, now))
        grant = self.take(limits, tokens, lease_ttl, now)
        grant.counts = self.counts(limits, now)
        return grant

    def counts(self, limits: Sequence[ScopeLimit], now: float) -> tuple[ScopeCount, ...]:
        counts: list[ScopeCount] = []
        for limit in limits:
            scope = self._scopes.get(limit.scope)
            requests, tokens, _, oldest = scope.usage(now) if scope is not None else (0, 0, 0, int(now))
            counts.append(ScopeCount(limit.scope, requests, tokens, max(0.0, oldest + WINDOW_SECONDS - now)))
        return tuple(counts)

    def release(self, grant: Grant, actual_tokens: int | None = None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for name in grant.scopes:
            scope = self._scopes.get(name)
            if scope is None:
                continue
            if scope.leases.pop(grant.lease, None) is None:
                continue  # released already (or expired): a second release changes nothing
            bucket = scope.buckets.get(grant.second)
            if bucket is not None and actual_tokens is not None:
                bucket[1] = max(0, bucket[1] + actual_tokens - grant.tokens)

    def usage(self, scope: str, now: float | None = None) -> tuple[int, int, int]:
        state = self._scopes.get(scope)
        if state is None:
            return 0, 0, 0
        requests, tokens, in_flight, _ = state.usage(time.time() if now is None else now)
        if not state.buckets and not state.leases:
            del self._scopes[scope]  # scopes come and go (wildcard models, keys): keep only live ones
        return requests, tokens, in_flight


# The same algorithm in Lua.  Each scope has two keys: a hash of window
# buckets (fields "r<second>" and "t<second>") and a sorted set of leases
# scored by their expiry in ms.  ``now`` is Redis's own clock (TIME), so
# replicas with skewed clocks still share one window.
LIMITER_LUA = r"""
local WINDOW = 60
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- requests, tokens and the oldest second still in the window; prunes old buckets when asked
local function window_usage(key, now_s, prune)
  local flat = redis.call('HGETALL', key)
  local req, tok, oldest = 0, 0, now_s
  local stale = {}
  for i = 1, #flat, 2 do
    local f = flat[i]
    local sec = tonumber(string.sub(f, 2))
    if sec <= now_s - WINDOW then
      stale[#stale + 1] = f
    else
      if sec < oldest then oldest = sec end
      if string.sub(f, 1, 1) == 'r' then req = req + tonumber(flat[i + 1]) else tok = tok + tonumber(flat[i + 1]) end
    end
  end
  if prune and #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return req, tok, oldest
end

local function in_flight(key, now, prune)
  if prune then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    return redis.call('ZCARD', key)
  end
  return redis.call('ZCOUNT', key, '(' .. now, '+inf')
end

-- checks n scopes whose keys start at KEYS[k] (window, leases, window, leases, ...)
-- and whose limits start at ARGV[a] (rpm, tpm, concurrency; 0 = none).
-- returns nil when all allow, else {scope index, limit name, retry after ms}
local function check_scopes(k, a, n, tokens, now)
  local now_s = math.floor(now / 1000)
  for i = 0, n - 1 do
    local rpm, tpm, conc = tonumber(ARGV[a + 3 * i]), tonumber(ARGV[a + 3 * i + 1]), tonumber(ARGV[a + 3 * i + 2])
    local req, tok, oldest = window_usage(KEYS[k + 2 * i], now_s, true)
    local wait = (oldest + WINDOW) * 1000 - now
    if rpm > 0 and req + 1 > rpm then return {i, 'rpm', wait} end
    if tpm > 0 and tok > 0 and tok + tokens > tpm then return {i, 'tpm', wait} end
    if conc > 0 and in_flight(KEYS[k + 2 * i + 1], now, true) >= conc then return {i, 'concurrency', 1000} end
  end
  return nil
end

local function take_scopes(k, n, tokens, now, lease, lease_ms)
  local now_s = math.floor(now / 1000)
  for i = 0, n - 1 do
    local wkey, lkey = KEYS[k + 2 * i], KEYS[k + 2 * i + 1]
    redis.call('HINCRBY', wkey, 'r' .. now_s, 1)
    redis.call('HINCRBY', wkey, 't' .. now_s, tokens)
    redis.call('PEXPIRE', wkey, (WINDOW + 1) * 1000)
    redis.call('ZADD', lkey, now + lease_ms, lease)
    if redis.call('PTTL', lkey) < lease_ms + 1000 then redis.call('PEXPIRE', lkey, lease_ms + 1000) end
  end
end

local function release_scopes(k, n, lease, second, token_delta, now)
  local now_s = math.floor(now / 1000)
  for i = 0, n - 1 do
    local wkey, lkey = KEYS[k + 2 * i], KEYS[k + 2 * i + 1]
    -- the correction rides on the lease: a release replayed after a lost reply corrects nothing twice
    if redis.call('ZREM', lkey, lease) == 1 and token_delta ~= 0 and second > now_s - WINDOW and redis.call('HEXISTS', wkey, 't' .. second) == 1 then
      local left = redis.call('HINCRBY', wkey, 't' .. second, token_delta)
      if left < 0 then redis.call('HSET', wkey, 't' .. second, 0) end
    end
  end
end
"""
