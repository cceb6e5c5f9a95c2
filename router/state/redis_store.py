"""``RedisStore``: routing state shared by every replica, through Lua scripts on one Redis.

Key layout (``P`` is ``state.prefix``; the ``{P}`` hash tag puts every key of
one deployment in one Cluster slot, which is what lets a single script
check and count several targets and scopes atomically):

    {P}:t:<provider>/<model>   hash: circuit (open, open_until, probe_until,
                               fails), cool_until, provider quota (rem_rq,
                               rst_rq, rem_tk, rst_tk), latency averages
                               (lat, ttft, measured_at).  Expires 1 day after
                               its last report.
    {P}:h:<provider>/<model>   hash: health window, fields s<second>/f<second>
                               (successes, failures).  Expires after the window.
    {P}:w:<scope>              hash: limiter window, fields r<second>/t<second>
                               (requests, tokens).  Expires 61 s after its last count.
    {P}:l:<scope>              sorted set: in-flight leases scored by expiry (ms).
                               Expires after the longest lease.

Times inside scripts come from Redis's own clock (``TIME``), so replicas with
skewed clocks share one window.

Round trips: ``admit`` is one EVALSHA (it picks the first admissible
candidate and counts it); ``acquire`` is one EVALSHA, which also raises a
``Reserve``'s counters (access control's budgets) when given one;
``report`` is one EVALSHA in a background task; ``snapshot`` answers
from a local copy at most ``CACHE_TTL`` old and refreshes it in the
background.  Every call has ``state.timeout``; on an
error or timeout the store counts it (``redis_errors``), logs once, serves
from its in-process ``MemoryStore`` and pings Redis in the background until
it answers again, then goes back to shared state by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.exceptions import NoScriptError, RedisError

from router.config import StateSettings
from router.state.limiter import LIMITER_LUA, WINDOW_SECONDS, Grant, Refusal, Reserve, ScopeCount, ScopeLimit, new_lease
from router.state.memory import MemoryStore
from router.state.store import Admission, Claim, Outcome, ScopeUsage, StateStore, TargetState

log = logging.getLogger("router.state")
T = TypeVar("T")

CACHE_TTL = 0.25  # seconds a snapshot may be reused; admission itself always reads Redis
PROBE_INTERVAL = 0.5  # seconds between pings while Redis is out
TARGET_TTL_MS = 86_400_000
MAX_KNOWN = 1024  # targets the background refresh reads; wildcard aliases could otherwise grow it without end

_TARGET_LUA = r"""
local function target_refusal(th, now, tokens, honour)
  local h = redis.call('HMGET', th, 'open', 'open_until', 'probe_until', 'cool_until', 'rem_rq', 'rst_rq', 'rem_tk', 'rst_tk')
  local probe = false
  if h[1] == '1' then
    if now < tonumber(h[2]) then return 'open circuit', false end
    if tonumber(h[3] or 0) > now then return 'circuit half-open, probe in flight', false end
    probe = true
  end
  if honour and tonumber(h[4] or 0) > now then
    return string.format('cooldown %.1fs', (tonumber(h[4]) - now) / 1000), false
  end
  if h[5] and tonumber(h[6] or 0) > now and tonumber(h[5]) <= 0 then return 'provider quota exhausted (requests)', false end
  if h[7] and tonumber(h[8] or 0) > now and tonumber(h[7]) < tokens then return 'provider quota exhausted (tokens)', false end
  return nil, probe
end
"""

# KEYS: per claim: target hash, then (window, leases) per scope.
# ARGV: lease, lease_ms, n; per claim: tokens, honour_cooldown, probe_ms, n_scopes, (rpm, tpm, conc) per scope.
ADMIT_LUA = (
    LIMITER_LUA
    + _TARGET_LUA
    + r"""
local now = now_ms()
local lease, lease_ms, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local k, a = 1, 4
local out = {0, 0, now}
for c = 1, n do
  local tokens, honour, probe_ms, ns = tonumber(ARGV[a]), ARGV[a + 1] == '1', tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local th = KEYS[k]
  local reason, probe = target_refusal(th, now, tokens, honour)
  if not reason then
    local r = check_scopes(k + 1, a + 4, ns, tokens, now)
    if r then reason = 'limit:' .. r[1] .. ':' .. r[2] end
  end
  if reason then
    out[#out + 1] = c
    out[#out + 1] = reason
  else
    take_scopes(k + 1, ns, tokens, now, lease, lease_ms)
    if probe then redis.call('HSET', th, 'probe_until', now + probe_ms) end
    local h = redis.call('HMGET', th, 'rem_rq', 'rst_rq', 'rem_tk', 'rst_tk')
    if h[1] and tonumber(h[2]) > now then redis.call('HINCRBY', th, 'rem_rq', -1) end
    if h[3] and tonumber(h[4]) > now then redis.call('HINCRBY', th, 'rem_tk', -tokens) end
    out[1] = c
    if probe then out[2] = 1 end
    return out
  end
  k = k + 1 + 2 * ns
  a = a + 4 + 3 * ns
end
return out
"""
)

# KEYS: target hash, health window, then (window, leases) per scope.
# ARGV: lease, second, token_delta, n_scopes, kind, latency_ms, ttft_ms, cooldown_ms,
#       rem_rq, rst_rq_ms, rem_tk, rst_tk_ms, probe, threshold, rate, min_requests,
#       window_s, open_ms, target_ttl_ms   (-1 = not given)
REPORT_LUA = (
    LIMITER_LUA
    + r"""
local now = now_ms()
local th, hw = KEYS[1], KEYS[2]
release_scopes(3, tonumber(ARGV[4]), ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now)

local function merge(rem_f, rst_f, reported, reset_ms)
  if reported < 0 then return end
  local reset = now + reset_ms
  local h = redis.call('HMGET', th, rem_f, rst_f)
  if (not h[1]) or tonumber(h[2] or 0) <= now or reset > tonumber(h[2]) + 1000 then
    redis.call('HSET', th, rem_f, reported, rst_f, reset)
  elseif reported < tonumber(h[1]) then
    redis.call('HSET', th, rem_f, reported)
  end
end
merge('rem_rq', 'rst_rq', tonumber(ARGV[9]), tonumber(ARGV[10]))
merge('rem_tk', 'rst_tk', tonumber(ARGV[11]), tonumber(ARGV[12]))

local kind, probe, win = ARGV[5], ARGV[13] == '1', tonumber(ARGV[17])
local now_s = math.floor(now / 1000)
local function count(col)
  redis.call('HINCRBY', hw, col .. now_s, 1)
  local flat = redis.call('HGETALL', hw)
  local ok, bad, stale = 0, 0, {}
  for i = 1, #flat, 2 do
    local sec = tonumber(string.sub(flat[i], 2))
    if sec <= now_s - win then stale[#stale + 1] = flat[i]
    elseif string.sub(flat[i], 1, 1) == 's' then ok = ok + tonumber(flat[i + 1])
    else bad = bad + tonumber(flat[i + 1]) end
  end
  if #stale > 0 then redis.call('HDEL', hw, unpack(stale)) end
  redis.call('PEXPIRE', hw, (win + 1) * 1000)
  return ok, bad
end
local function ewma(field, sample)
  local old = redis.call('HGET', th, field)
  if old then sample = tonumber(old) * 0.7 + sample * 0.3 end
  redis.call('HSET', th, field, sample)
end

local h = redis.call('HMGET', th, 'open', 'open_until')
local is_open = h[1] == '1'
if kind == 'ok' then
  count('s')
  redis.call('HSET', th, 'fails', 0, 'measured_at', now)
  ewma('lat', tonumber(ARGV[6]))
  if tonumber(ARGV[7]) >= 0 then ewma('ttft', tonumber(ARGV[7])) end
  if is_open and probe then
    redis.call('HSET', th, 'open', 0, 'probe_until', 0)
    redis.call('DEL', hw)
  end
elseif kind == 'fail' then
  local fails = redis.call('HINCRBY', th, 'fails', 1)
  local ok, bad = count('f')
  local open_ms = tonumber(ARGV[18])
  if is_open then
    if probe or now >= tonumber(h[2]) then redis.call('HSET', th, 'open_until', now + open_ms, 'probe_until', 0) end
  elseif fails >= tonumber(ARGV[14]) or (ok + bad >= tonumber(ARGV[16]) and bad >= tonumber(ARGV[15]) * (ok + bad)) then
    redis.call('HSET', th, 'open', 1, 'open_until', now + open_ms, 'probe_until', 0)
  end
else
  if kind == 'throttle' then
    local cool = now + tonumber(ARGV[8])
    if cool > tonumber(redis.call('HGET', th, 'cool_until') or 0) then redis.call('HSET', th, 'cool_until', cool) end
  end
  if probe then redis.call('HSET', th, 'probe_until', 0) end
end
redis.call('PEXPIRE', th, tonumber(ARGV[19]))
return now
"""
)

_FIELDS = ("open", "open_until", "probe_until", "cool_until", "rem_rq", "rst_rq", "rem_tk", "rst_tk", "lat", "ttft", "measured_at", "fails")

# Read-only.  KEYS: per target: target hash, then (window, leases) per scope.  ARGV: n, n_scopes per target.
SNAPSHOT_LUA = (
    LIMITER_LUA
    + r"""
local now = now_ms()
local now_s = math.floor(now / 1000)
local out = {now}
local k = 1
for c = 1, tonumber(ARGV[1]) do
  local ns = tonumber(ARGV[1 + c])
  local row = redis.call('HMGET', KEYS[k], '"""
    + "', '".join(_FIELDS)
    + r"""')
  for i = 0, ns - 1 do
    local req, tok = window_usage(KEYS[k + 1 + 2 * i], now_s, false)
    row[#row + 1] = req
    row[#row + 1] = tok
    row[#row + 1] = in_flight(KEYS[k + 2 + 2 * i], now, false)
  end
  out[#out + 1] = row
  k = k + 1 + 2 * ns
end
return out
"""
)

# KEYS: (window, leases) per scope, then the reserve's counters.
# ARGV: lease, lease_ms, tokens, n, (rpm, tpm, conc) per scope, then optionally
#       m, amount, bound per counter, ttl seconds per counter (0 = none).
# Counters first (a budget refusal counts nothing), then the scopes; all or nothing.
# Returns {admitted 0/1, now ms, refused index, limit ('reserve' for a counter), retry ms},
# then per scope (requests, tokens, oldest second) as this call left the window.
ACQUIRE_LUA = (
    LIMITER_LUA
    + r"""
local now = now_ms()
local now_s = math.floor(now / 1000)
local n, tokens = tonumber(ARGV[4]), tonumber(ARGV[3])
local at = 5 + 3 * n
local m = tonumber(ARGV[at] or '0')
local amount = tonumber(ARGV[at + 1] or '0')
local r = nil
for j = 1, m do
  local used = tonumber(redis.call('GET', KEYS[2 * n + j]) or '0')
  if used + amount > tonumber(ARGV[at + 1 + j]) then
    r = {j - 1, 'reserve', 0}
    break
  end
end
if not r then r = check_scopes(1, 5, n, tokens, now) end
local out
if r then
  out = {0, now, r[1], r[2], r[3]}
else
  take_scopes(1, n, tokens, now, ARGV[1], tonumber(ARGV[2]))
  for j = 1, m do
    local key = KEYS[2 * n + j]
    redis.call('INCRBY', key, amount)
    local ttl = tonumber(ARGV[at + 1 + m + j])
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
  end
  out = {1, now, -1, '', 0}
end
for i = 0, n - 1 do
  local req, tok, oldest = window_usage(KEYS[1 + 2 * i], now_s, false)
  out[#out + 1] = req
  out[#out + 1] = tok
  out[#out + 1] = oldest
end
return out
"""
)

# KEYS: (window, leases) per scope.  ARGV: lease, second, token_delta, n.
RELEASE_LUA = (
    LIMITER_LUA
    + r"""
release_scopes(1, tonumber(ARGV[4]), ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms())
return 1
"""
)


class RedisUnavailable(Exception):
    """Redis failed or was too slow for this call; the caller falls back to local state."""


def _limit_args(limit: ScopeLimit) -> list[int]:
    return [limit.rpm or 0, limit.tpm or 0, limit.concurrency or 0]


def _num(value: Any) -> float | None:
    if value is None or value is False:
        return None
    return float(value)


class RedisStore(StateStore):
    backend = "redis"

    def __init__(self, client: Any, settings: StateSettings) -> None:
        super().__init__()
        self.client = client
        self.prefix = settings.prefix
        self.timeout = settings.timeout
        self.local = MemoryStore()  # stands in while Redis is out
        self.degraded = False
        self.redis_errors = 0
        self._admit = client.register_script(ADMIT_LUA)
        self._report = client.register_script(REPORT_LUA)
        self._snapshot = client.register_script(SNAPSHOT_LUA)
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._cache: dict[str, TargetState] = {}
        self._cache_at = float("-inf")
        self._known: dict[str, Claim] = {}
        self._refreshing = False
        self._probe: asyncio.Task[None] | None = None
        # Reports waiting for the next pipelined flush: (keys, args, claim, outcome).
        self._reports: list[tuple[list[str], list[Any], Claim, Outcome]] = []

    # -- keys -------------------------------------------------------------------

    def key(self, kind: str, name: str) -> str:
        return f"{{{self.prefix}}}:{kind}:{name}"

    def _scope_keys(self, limits: Sequence[ScopeLimit]) -> list[str]:
        keys: list[str] = []
        for limit in limits:
            keys += [self.key("w", limit.scope), self.key("l", limit.scope)]
        return keys

    # -- failure handling ---------------------------------------------------------

    async def _call(self, run: Callable[[], Awaitable[T]]) -> T:
        if self.degraded:
            raise RedisUnavailable
        try:
            async with asyncio.timeout(self.timeout):
                return await run()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise RedisUnavailable from exc

    def _failed(self, exc: BaseException) -> None:
        self.redis_errors += 1
        if self.degraded:
            return
        self.degraded = True
        log.warning("Redis state unavailable (%s); routing on this replica's local state until it answers again", type(exc).__name__)
        self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                async with asyncio.timeout(max(self.timeout, 0.2)):
                    # Pooled connections from before the outage are dead (a restarted
                    # Redis does not know them): drop them all, then ask on a fresh one.
                    await self.client.connection_pool.disconnect()
                    await self.client.ping()
            except (RedisError, OSError, TimeoutError):
                self.redis_errors += 1
                continue
            self.degraded = False
            self._cache_at = float("-inf")
            log.warning("Redis state is back; routing on shared state again")
            return

    # -- the limiter --------------------------------------------------------------

    async def acquire(self, limits: Sequence[ScopeLimit], tokens: int, lease_ttl: float, reserve: Reserve | None = None) -> Grant | Refusal:
        """As ``StateStore.acquire``; with ``reserve``, its counters are raised in the same step, or nothing is.

        A reserve (budgets) must never be counted on local state: with one,
        a Redis failure raises ``RedisUnavailable`` instead of falling back.
        A refusal by a reserve counter reads ``limit == "reserve"`` and
        ``scope`` is that counter's key.
        """
        lease = new_lease()
        keys = self._scope_keys(limits)
        args: list[Any] = [lease, int(lease_ttl * 1000), tokens, len(limits)]
        for limit in limits:
            args += _limit_args(limit)
        if reserve is not None:
            keys += reserve.keys
            args += [len(reserve.keys), reserve.amount, *reserve.bounds, *reserve.ttls]
        try:
            result = await self._call(lambda: self._acquire(keys=keys, args=args))
        except RedisUnavailable:
            if reserve is not None:
                raise
            return self.local.limiter.acquire(limits, tokens, lease_ttl)
        now_ms = int(result[1])
        counts = tuple(
            ScopeCount(limit.scope, int(result[5 + 3 * i]), int(result[6 + 3 * i]), max(0.0, (int(result[7 + 3 * i]) + WINDOW_SECONDS) - now_ms / 1000))
            for i, limit in enumerate(limits)
        )
        if int(result[0]) == 0:
            which, index = _text(result[3]), int(result[2])
            scope = reserve.keys[index] if which == "reserve" and reserve is not None else limits[index].scope
            return Refusal(scope, which, max(0.0, int(result[4]) / 1000), counts)
        return Grant(lease, tuple(limit.scope for limit in limits), now_ms // 1000, tokens, counts=counts)

    def release(self, grant: Grant, actual_tokens: int | None = None) -> None:
        if grant.local:
            self.local.release(grant, actual_tokens)
            return
        limits = [ScopeLimit(scope) for scope in grant.scopes]
        delta = 0 if actual_tokens is None else actual_tokens - grant.tokens
        args = [grant.lease, grant.second, delta, len(limits)]
        self.tasks.spawn(self._quietly(lambda: self._release(keys=self._scope_keys(limits), args=args)), "limiter release")

    async def _quietly(self, run: Callable[[], Awaitable[Any]]) -> None:
        try:
            await self._call(run)
        except RedisUnavailable:
            pass  # counted and logged by _call; the lease expires on its own

    # -- routing ------------------------------------------------------------------

    def _remember(self, claims: Sequence[Claim]) -> None:
        for claim in claims:
            if claim.target not in self._known:
                if len(self._known) >= MAX_KNOWN:
                    self._known.pop(next(iter(self._known)))
                self._known[claim.target] = claim

    async def admit(self, claims: Sequence[Claim], lease_ttl: float) -> Admission:
        self._remember(claims)
        if self.degraded:
            return self.local.admit_now(claims, lease_ttl)
        lease = new_lease()
        keys: list[str] = []
        args: list[Any] = [lease, int(lease_ttl * 1000), len(claims)]
        for claim in claims:
            keys.append(self.key("t", claim.target))
            keys += self._scope_keys(claim.limits)
            args += [claim.tokens, 1 if claim.honour_cooldown else 0, int(claim.rules.probe_timeout * 1000), len(claim.limits)]
            for limit in claim.limits:
                args += _limit_args(limit)
        try:
            result = await self._call(lambda: self._admit(keys=keys, args=args))
        except RedisUnavailable:
            return self.local.admit_now(claims, lease_ttl)
        chosen, probe, now_ms = int(result[0]), bool(int(result[1])), int(result[2])
        skips: list[tuple[int, str]] = []
        for i in range(3, len(result), 2):
            index, reason = int(result[i]) - 1, _text(result[i + 1])
            if reason.startswith("limit:"):
                _, scope_index, which = reason.split(":", 2)
                reason = Refusal(claims[index].limits[int(scope_index)].scope, which, 0.0).reason
            skips.append((index, reason))
        if chosen == 0:
            return Admission(None, None, skips)
        claim = claims[chosen - 1]
        grant = Grant(lease, tuple(limit.scope for limit in claim.limits), now_ms // 1000, claim.tokens)
        return Admission(chosen - 1, grant, skips, probe)

    def report(self, claim: Claim, grant: Grant, outcome: Outcome) -> None:
        if grant.local:
            self.local.report_now(claim, grant, outcome)
            return
        rules = claim.rules
        keys = [self.key("t", claim.target), self.key("h", claim.target), *self._scope_keys(claim.limits)]
        delta = 0 if outcome.actual_tokens is None else outcome.actual_tokens - grant.tokens
        cooldown = outcome.retry_after if outcome.retry_after is not None else 1.0
        args = [
            grant.lease,
            grant.second,
            delta,
            len(claim.limits),
            outcome.kind,
            int(outcome.latency_ms),
            -1 if outcome.ttft_ms is None else int(outcome.ttft_ms),
            int(cooldown * 1000),
            _or_minus(outcome.remaining_requests),
            _ms_or(outcome.reset_requests, 60.0),
            _or_minus(outcome.remaining_tokens),
            _ms_or(outcome.reset_tokens, 60.0),
            1 if outcome.probe else 0,
            rules.failure_threshold,
            rules.failure_rate,
            rules.min_requests,
            int(rules.window),
            int(rules.cooldown * 1000),
            TARGET_TTL_MS,
        ]

        self._reports.append((keys, args, claim, outcome))
        if len(self._reports) == 1:  # the first of a batch schedules its flush
            self.tasks.spawn(self._flush_reports(), "state report")

    async def _flush_reports(self) -> None:
        """Send every report queued by now in one pipelined round trip.

        Under load many requests end in the same loop turn; one pipeline of
        their reports costs one round trip and one parse instead of one each.
        """
        await asyncio.sleep(0)  # let the other requests ending in this turn join the batch
        batch, self._reports = self._reports, []

        async def send() -> None:
            # Plain EVALSHA, not Script objects: a pipeline holding Script objects asks
            # SCRIPT EXISTS before every execute, one more round trip per flush.
            for attempt in range(2):
                async with self.client.pipeline(transaction=False) as pipe:
                    for keys, args, _, _ in batch:
                        pipe.evalsha(self._report.sha, len(keys), *keys, *args)
                    try:
                        await pipe.execute()
                        return
                    except NoScriptError:
                        if attempt:
                            raise
                        # Redis restarted or was flushed: every command of the batch failed alike,
                        # none ran, so load the script and send the batch again.
                        self._report.sha = await self.client.script_load(REPORT_LUA)

        try:
            await self._call(send)
        except RedisUnavailable:
            # Leases expire on their own; keep what the calls taught us locally.
            now = time.time()
            for _, _, claim, outcome in batch:
                self.local.health_for(claim.target).fold(outcome, claim.rules, now)

    def snapshot(self, claims: Sequence[Claim]) -> dict[str, TargetState]:
        self._remember(claims)
        if self.degraded:
            return self.local.snapshot(claims)
        if time.monotonic() - self._cache_at > CACHE_TTL and not self._refreshing:
            self._refreshing = True
            self.tasks.spawn(self._refresh(), "state refresh")
        return {claim.target: self._cache.get(claim.target) or TargetState() for claim in claims}

    async def _refresh(self) -> None:
        try:
            self._cache = await self._read_redis(list(self._known.values()))
            self._cache_at = time.monotonic()
        except RedisUnavailable:
            pass
        finally:
            self._refreshing = False

    async def read(self, claims: Sequence[Claim]) -> dict[str, TargetState]:
        if not self.degraded:
            try:
                return await self._read_redis(claims)
            except RedisUnavailable:
                pass
        return self.local.snapshot(claims)

    async def _read_redis(self, claims: Sequence[Claim]) -> dict[str, TargetState]:
        if not claims:
            return {}
        keys: list[str] = []
        args: list[Any] = [len(claims)]
        for claim in claims:
            keys.append(self.key("t", claim.target))
            keys += self._scope_keys(claim.limits)
            args.append(len(claim.limits))
        result = await self._call(lambda: self._snapshot(keys=keys, args=args))
        now = int(result[0]) / 1000
        # Redis's clock and ours may differ: shift Redis's times onto ours.
        skew = time.time() - now
        states: dict[str, TargetState] = {}
        for claim, row in zip(claims, result[1:], strict=True):
            states[claim.target] = _state(row, claim, now, skew)
        return states

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await super().close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _or_minus(value: int | None) -> int:
    return -1 if value is None else value


def _ms_or(seconds: float | None, default: float) -> int:
    return int((default if seconds is None else seconds) * 1000)


def _state(row: list[Any], claim: Claim, now: float, skew: float) -> TargetState:
    f = dict(zip(_FIELDS, row[: len(_FIELDS)], strict=True))

    def at(name: str) -> float:
        value = _num(f[name])
        return 0.0 if value is None else value / 1000 + skew

    is_open = _text(f["open"]) == "1" if f["open"] else False
    open_until = at("open_until")
    state = TargetState(
        circuit="closed" if not is_open else ("open" if open_until > now + skew else "half-open"),
        open_until=open_until if is_open else 0.0,
        cooldown_until=at("cool_until") if at("cool_until") > now + skew else 0.0,
        consecutive_failures=int(_num(f["fails"]) or 0),
        latency_ms=_num(f["lat"]),
        ttft_ms=_num(f["ttft"]),
        measured_at=at("measured_at"),
    )
    if f["rem_rq"] and at("rst_rq") > now + skew:
        state.remaining_requests, state.reset_requests_at = int(float(f["rem_rq"])), at("rst_rq")
    if f["rem_tk"] and at("rst_tk") > now + skew:
        state.remaining_tokens, state.reset_tokens_at = int(float(f["rem_tk"])), at("rst_tk")
    rest = row[len(_FIELDS) :]
    for i, limit in enumerate(claim.limits):
        state.scopes[limit.scope] = ScopeUsage(int(rest[3 * i]), int(rest[3 * i + 1]), int(rest[3 * i + 2]))
    return state
