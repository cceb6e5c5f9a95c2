"""``RedisStore``: routing and limiter state shared by every replica, through Lua scripts on one Redis.

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
    {P}:r:<lease>              a budget reservation not yet settled (a day at most)
    {P}:x:<lease>              tombstone of an admit whose answer never came back

Times inside scripts come from Redis's own clock (``TIME``), so replicas with
skewed clocks share one window.

**Round trips.**  ``admit`` is one EVALSHA before the upstream call: the
client request's own entry (budget counters, key and team limits) and the
first admissible target, all or nothing.  ``release`` and ``report`` run after
the call without anyone waiting.  Every command the store sends in one
event-loop turn, from every request, leaves as one pipeline
(``pipeliner.py``), so a small pool (``state.pool_size``, default 32; a caller
waits up to ``state.pool_timeout`` for a free connection) carries any load;
``snapshot`` answers from a local copy at most ``CACHE_TTL`` old.

**What "Redis is out" means.**  One failed or slow call fails that call only
(routing then admits it on local state; a budgeted entry retries once, then
answers 503).  It also wakes the prober, which PINGs Redis on a connection of
its own, never one from the request pool: only ``state.outage_probes``
consecutive failed probes mark the store ``degraded``.  While degraded,
routing and key limits count on this replica alone (the overshoot bound is
one replica's full limit per replica) and budgeted requests fail closed; the
prober keeps pinging every ``PROBE_INTERVAL`` and the first answer ends it.
Nothing is torn down on the way back: redis-py drops a broken connection by
itself.  A script error (``ResponseError``: bad data, a bug) fails its one
caller and never marks the store degraded.

**Nothing held after Redis is back.**  Releases, settlements and reports
that could not be sent are kept (up to ``MAX_KEPT``, oldest dropped and
counted) and sent again once Redis answers.  They are idempotent by lease:
a lease's token correction applies only if its ZREM removed it, and a
reservation is settled only if the DEL of its marker ``{P}:r:<lease>``
removed it.  An admit whose answer was lost (a frozen Redis may still run
it later) is cancelled through the same kept path: a tombstone
``{P}:x:<lease>`` makes a late admit take nothing, and the cancel removes
the lease and gives back a reservation the admit did make, whichever of the
two Redis runs first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from router.config import StateSettings
from router.outcome import SkipCause
from router.state.limiter import LIMITER_LUA, MAX_MICRO_USD, MAX_TOKENS, WINDOW_SECONDS, Grant, Refusal, ScopeCount, ScopeLimit, clamp, new_lease
from router.state.memory import MemoryStore
from router.state.pipeliner import Pipeliner, Script
from router.state.store import Admission, Claim, Entry, Outcome, RedisUnavailable, ScopeUsage, Skip, StateStore, TargetState

log = logging.getLogger("router.state")

CACHE_TTL = 0.25  # seconds a snapshot may be reused; admission itself always reads Redis
PROBE_INTERVAL = 0.5  # seconds between pings while a call has failed or Redis is out
TARGET_TTL_MS = 86_400_000
MARKER_TTL_MS = 86_400_000  # an unsettled reservation's marker: settles replayed within a day apply
TOMBSTONE_TTL_MS = 600_000  # longer than any freeze whose buffered admits could still run
MAX_KNOWN = 1024  # targets the background refresh reads; wildcard aliases could otherwise grow it without end
MAX_KEPT = 100_000  # releases, settlements and reports kept while Redis is out

_TARGET_LUA = r"""
-- (cause, reason, wait ms) when the target may not be called now, else nil; and whether the call is a probe
local function target_refusal(th, now, tokens, honour)
  local h = redis.call('HMGET', th, 'open', 'open_until', 'probe_until', 'cool_until', 'rem_rq', 'rst_rq', 'rem_tk', 'rst_tk')
  local probe = false
  if h[1] == '1' then
    if now < tonumber(h[2]) then return {'circuit', 'open circuit', tonumber(h[2]) - now}, false end
    if tonumber(h[3] or 0) > now then return {'circuit', 'circuit half-open, probe in flight', tonumber(h[3]) - now}, false end
    probe = true
  end
  if honour and tonumber(h[4] or 0) > now then
    local wait = tonumber(h[4]) - now
    return {'cooldown', string.format('cooldown %.1fs', wait / 1000), wait}, false
  end
  if h[5] and tonumber(h[6] or 0) > now and tonumber(h[5]) <= 0 then
    return {'quota', 'provider quota exhausted (requests)', tonumber(h[6]) - now}, false
  end
  if h[7] and tonumber(h[8] or 0) > now and tonumber(h[7]) < tokens then
    return {'quota', 'provider quota exhausted (tokens)', tonumber(h[8]) - now}, false
  end
  return nil, probe
end
"""


# KEYS: tombstone, marker, (window, leases) per entry scope, reserve counters,
#       then per claim: target hash, (window, leases) per scope.
# ARGV: lease, lease_ms, n claims, n entry scopes, entry tokens, (rpm, tpm, conc) per entry scope,
#       m counters, amount, bound per counter, ttl s per counter (0 = none),
#       then per claim: tokens, honour_cooldown, probe_ms, n scopes, (rpm, tpm, conc) per scope.
# Returns {chosen claim (0: none), probe, now ms, entry (1 taken or none, 0 refused,
#          2 not taken: no claim admissible, -1 cancelled by a tombstone), refused index,
#          refused limit ('reserve' for a counter), retry ms, (requests, tokens, oldest second)
#          per entry scope, then (claim, cause, reason, wait ms) for each claim skipped; a limit's
#          reason is 'limit:<scope index>:<rpm|tpm|concurrency>'}.
ADMIT_LUA = (
    LIMITER_LUA
    + _TARGET_LUA
    + r"""
local now = now_ms()
local lease, lease_ms, n, ne, etok = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local at = 6 + 3 * ne
local m, amount = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
local ck = 3 + 2 * ne
local function with_counts(out, skips)
  local now_s = math.floor(now / 1000)
  for i = 0, ne - 1 do
    local req, tok, oldest = window_usage(KEYS[3 + 2 * i], now_s, false)
    out[#out + 1] = req
    out[#out + 1] = tok
    out[#out + 1] = oldest
  end
  for i = 1, #skips do out[#out + 1] = skips[i] end
  return out
end
if redis.call('EXISTS', KEYS[1]) == 1 then return with_counts({0, 0, now, -1, -1, '', 0}, {}) end
for j = 1, m do
  local used = tonumber(redis.call('GET', KEYS[ck + j - 1]) or '0')
  if used + amount > tonumber(ARGV[at + 1 + j]) then return with_counts({0, 0, now, 0, j - 1, 'reserve', 0}, {}) end
end
local r = check_scopes(3, 6, ne, etok, now)
if r then return with_counts({0, 0, now, 0, r[1], r[2], r[3]}, {}) end
local function take_entry()
  take_scopes(3, ne, etok, now, lease, lease_ms)
  for j = 1, m do
    local key = KEYS[ck + j - 1]
    redis.call('INCRBY', key, amount)
    local ttl = tonumber(ARGV[at + 1 + m + j])
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
  end
  if m > 0 then redis.call('SET', KEYS[2], amount, 'PX', """
    + str(MARKER_TTL_MS)
    + r""") end
end
if n == 0 then
  take_entry()
  return with_counts({0, 0, now, 1, -1, '', 0}, {})
end
local k, a = ck + m, at + 2 + 2 * m
local skips = {}
for c = 1, n do
  local tokens, honour, probe_ms, ns = tonumber(ARGV[a]), ARGV[a + 1] == '1', tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local th = KEYS[k]
  local refused, probe = target_refusal(th, now, tokens, honour)
  if not refused then
    local rr = check_scopes(k + 1, a + 4, ns, tokens, now)
    if rr then refused = {'limit', 'limit:' .. rr[1] .. ':' .. rr[2], rr[3]} end
  end
  if refused then
    skips[#skips + 1] = c
    skips[#skips + 1] = refused[1]
    skips[#skips + 1] = refused[2]
    skips[#skips + 1] = math.floor(refused[3])
  else
    take_scopes(k + 1, ns, tokens, now, lease, lease_ms)
    if probe then redis.call('HSET', th, 'probe_until', now + probe_ms) end
    local h = redis.call('HMGET', th, 'rem_rq', 'rst_rq', 'rem_tk', 'rst_tk')
    if h[1] and tonumber(h[2]) > now then redis.call('HINCRBY', th, 'rem_rq', -1) end
    if h[3] and tonumber(h[4]) > now then redis.call('HINCRBY', th, 'rem_tk', -tokens) end
    take_entry()
    return with_counts({c, probe and 1 or 0, now, 1, -1, '', 0}, skips)
  end
  k = k + 1 + 2 * ns
  a = a + 4 + 3 * ns
end
return with_counts({0, 0, now, 2, -1, '', 0}, skips)
"""
)

# KEYS: marker, (window, leases) per scope, counters.  ARGV: lease, second, token_delta, n, m, settle_delta.
# The token correction rides on the lease (release_scopes), the settlement on the marker: both once.
RELEASE_LUA = (
    LIMITER_LUA
    + r"""
local n, m = tonumber(ARGV[4]), tonumber(ARGV[5])
release_scopes(2, n, ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms())
if m > 0 and redis.call('DEL', KEYS[1]) == 1 then
  local delta = tonumber(ARGV[6])
  if delta ~= 0 then
    for j = 1, m do redis.call('INCRBY', KEYS[1 + 2 * n + j], delta) end
  end
end
return 1
"""
)

# An admit whose answer never came: whether it ran, runs later or never, it ends up taking nothing.
# KEYS: tombstone, marker, (window, leases) per scope, counters.  ARGV: lease, tombstone_ms, n, m, amount.
CANCEL_LUA = r"""
redis.call('SET', KEYS[1], 1, 'PX', tonumber(ARGV[2]))
local n, m = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 0, n - 1 do redis.call('ZREM', KEYS[4 + 2 * i], ARGV[1]) end
if m > 0 and redis.call('DEL', KEYS[2]) == 1 then
  for j = 1, m do redis.call('DECRBY', KEYS[2 + 2 * n + j], tonumber(ARGV[5])) end
end
return 1
"""

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


def _limit_args(limit: ScopeLimit) -> list[int]:
    return [limit.rpm or 0, limit.tpm or 0, limit.concurrency or 0]


def _num(value: Any) -> float | None:
    if value is None or value is False:
        return None
    return float(value)


Kept = tuple[Script, list[str], list[Any]]


class RedisStore(StateStore):
    backend = "redis"

    def __init__(self, client: Any, settings: StateSettings, probe_client: Any = None) -> None:
        super().__init__()
        self.client = client
        self.pipe = Pipeliner(client, self.tasks)
        # The prober's own connection: a full request pool must never read as "Redis is down".
        self.probe_client = probe_client or _probe_client(client, max(settings.timeout, 1.0))
        self.prefix = settings.prefix
        self.timeout = settings.timeout
        self.outage_probes = settings.outage_probes
        self.local = MemoryStore()  # stands in while Redis is out
        self.degraded = False
        self.redis_errors = 0
        self.probes_failed = 0
        self.kept_dropped = 0  # kept writes dropped because MAX_KEPT were already waiting
        self._admit, self._report, self._snapshot = Script(ADMIT_LUA), Script(REPORT_LUA), Script(SNAPSHOT_LUA)
        self._release, self._cancel = Script(RELEASE_LUA), Script(CANCEL_LUA)
        self._kept: deque[Kept] = deque()
        self._script_errors: set[str] = set()
        self._cache: dict[str, TargetState] = {}
        self._cache_at = float("-inf")
        self._known: dict[str, Claim] = {}
        self._refreshing = False
        self._prober: asyncio.Task[None] | None = None
        self._closing = False

    # -- keys -------------------------------------------------------------------

    def key(self, kind: str, name: str) -> str:
        return f"{{{self.prefix}}}:{kind}:{name}"

    def _scope_keys(self, limits: Sequence[ScopeLimit]) -> list[str]:
        keys: list[str] = []
        for limit in limits:
            keys += [self.key("w", limit.scope), self.key("l", limit.scope)]
        return keys

    # -- sending, failing, probing -------------------------------------------------

    async def _send(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """One script call, in this loop turn's pipeline.  A failure fails this call only."""
        if self.degraded:
            raise RedisUnavailable("Redis is out")
        try:
            return await self.pipe.evalsha(script, keys, args)
        except ResponseError as exc:
            self._script_error(exc)
            raise RedisUnavailable(str(exc)) from exc
        except (RedisError, OSError, TimeoutError) as exc:
            self._call_failed()
            raise RedisUnavailable(type(exc).__name__) from exc

    def _send_in_background(self, script: Script, keys: list[str], args: list[Any]) -> None:
        """A write nobody waits for; kept and sent again if it cannot reach Redis now (it is idempotent)."""
        if self.degraded:
            self._keep((script, keys, args))
            return
        future = self.pipe.evalsha(script, keys, args)
        future.add_done_callback(lambda done: self._sent((script, keys, args), done))

    def _sent(self, kept: Kept, future: asyncio.Future[Any]) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is None and not future.cancelled():
            return
        if isinstance(exc, ResponseError):
            self._script_error(exc)
            return
        self._call_failed()
        self._keep(kept)

    def _script_error(self, exc: ResponseError) -> None:
        # Bad data or a bug: it fails its caller, never the store.  Said once per distinct message.
        message = str(exc)[:200]
        if message not in self._script_errors and len(self._script_errors) < 100:
            self._script_errors.add(message)
            log.error("a Redis state script failed for one call (the store stays up): %s", message)

    def _keep(self, kept: Kept) -> None:
        if len(self._kept) >= MAX_KEPT:
            self._kept.popleft()
            self.kept_dropped += 1
            if self.kept_dropped == 1 or self.kept_dropped % 10_000 == 0:
                log.warning("Redis state: %d kept writes dropped (more than %d waited for Redis)", self.kept_dropped, MAX_KEPT)
        self._kept.append(kept)
        self._wake_prober()

    def _call_failed(self) -> None:
        self.redis_errors += 1
        self._wake_prober()

    def _wake_prober(self) -> None:
        if self._closing:  # shutting down: what is kept now is sent by close(), or not at all
            return
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Ping on the prober's own connection until Redis answers and every kept write is sent."""
        failures = 0
        while True:
            if await self._ping():
                failures = 0
                self._back()
                if await self._send_kept():
                    return
            else:
                failures += 1
                self.probes_failed += 1
                if failures >= self.outage_probes and not self.degraded:
                    self.degraded = True
                    log.warning("Redis state unavailable (%d probes failed); routing on this replica's local state until it answers again", failures)
            await asyncio.sleep(PROBE_INTERVAL)

    async def _ping(self) -> bool:
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self.probe_client.ping()
            return True
        except (RedisError, OSError, TimeoutError):
            return False

    def _back(self) -> None:
        if self.degraded:
            self.degraded = False
            self._cache_at = float("-inf")
            log.warning("Redis state is back; routing on shared state again")

    async def _send_kept(self) -> bool:
        """Send every kept write; True when none is left (a failure puts the rest back)."""
        while self._kept:
            batch = [self._kept.popleft() for _ in range(min(len(self._kept), 512))]
            results = await asyncio.gather(*(self.pipe.evalsha(*kept) for kept in batch), return_exceptions=True)
            failed = [kept for kept, result in zip(batch, results, strict=True) if isinstance(result, BaseException) and not isinstance(result, ResponseError)]
            if failed:
                self._kept.extendleft(reversed(failed))
                return False
        return True

    # -- admission: the entry and the first admissible claim, in one round trip ----------

    def _remember(self, claims: Sequence[Claim]) -> None:
        for claim in claims:
            if claim.target not in self._known:
                if len(self._known) >= MAX_KNOWN:
                    self._known.pop(next(iter(self._known)))
                self._known[claim.target] = claim

    async def admit(self, claims: Sequence[Claim], lease_ttl: float, entry: Entry | None = None) -> Admission:
        self._remember(claims)
        budgeted = entry is not None and entry.reserve is not None
        for _ in range(2 if budgeted else 1):  # a budgeted entry tries once more before failing closed
            lease = new_lease()
            try:
                return await self._admit_in_redis(lease, claims, lease_ttl, entry)
            except RedisUnavailable:
                if not self.degraded:
                    self._cancel_admit(lease, claims, entry)  # it may still run: make sure it takes nothing
            except asyncio.CancelledError:
                self._cancel_admit(lease, claims, entry)  # the client left while its admit was in flight
                raise
        if budgeted:
            # Fail closed: a budget counted on one replica's memory could overspend.
            raise RedisUnavailable("the budget store did not answer")
        return self.local.admit_now(claims, lease_ttl, entry)

    async def _admit_in_redis(self, lease: str, claims: Sequence[Claim], lease_ttl: float, entry: Entry | None) -> Admission:
        keys, args = self._admit_call(lease, claims, lease_ttl, entry)
        result = await self._send(self._admit, keys, args)
        if int(result[3]) == -1:
            raise RedisUnavailable("lease cancelled")  # a lease is new: cannot happen, but never count on it
        return _admission(result, lease, claims, entry)

    def _admit_call(self, lease: str, claims: Sequence[Claim], lease_ttl: float, entry: Entry | None) -> tuple[list[str], list[Any]]:
        entry_limits = entry.limits if entry is not None else ()
        reserve = entry.reserve if entry is not None else None
        keys = [self.key("x", lease), self.key("r", lease), *self._scope_keys(entry_limits), *(reserve.keys if reserve else ())]
        args: list[Any] = [lease, int(lease_ttl * 1000), len(claims), len(entry_limits), clamp(entry.tokens if entry else 0, high=MAX_TOKENS)]
        for limit in entry_limits:
            args += _limit_args(limit)
        if reserve is not None:
            args += [len(reserve.keys), clamp(reserve.amount, high=MAX_MICRO_USD), *reserve.bounds, *reserve.ttls]
        else:
            args += [0, 0]
        for claim in claims:
            keys.append(self.key("t", claim.target))
            keys += self._scope_keys(claim.limits)
            args += [clamp(claim.tokens, high=MAX_TOKENS), 1 if claim.honour_cooldown else 0, int(claim.rules.probe_timeout * 1000), len(claim.limits)]
            for limit in claim.limits:
                args += _limit_args(limit)
        return keys, args

    def _cancel_admit(self, lease: str, claims: Sequence[Claim], entry: Entry | None) -> None:
        scopes = [*(entry.limits if entry is not None else ()), *(limit for claim in claims for limit in claim.limits)]
        reserve = entry.reserve if entry is not None else None
        keys = [self.key("x", lease), self.key("r", lease), *self._scope_keys(scopes), *(reserve.keys if reserve else ())]
        args = [lease, TOMBSTONE_TTL_MS, len(scopes), len(reserve.keys) if reserve else 0, clamp(reserve.amount, high=MAX_MICRO_USD) if reserve else 0]
        self._keep((self._cancel, keys, args))

    # -- after the call: releases and reports, off the client's wait --------------------

    def release(self, grant: Grant, actual_tokens: int | None = None, settle: int | None = None) -> None:
        if grant.local:
            self.local.release(grant, actual_tokens, settle)
            return
        limits = [ScopeLimit(scope) for scope in grant.scopes]
        reserve = grant.reserve
        delta = 0 if actual_tokens is None else clamp(actual_tokens, high=MAX_TOKENS) - grant.tokens
        settle_delta = 0 if reserve is None or settle is None else clamp(settle, high=MAX_MICRO_USD) - reserve.amount
        keys = [self.key("r", grant.lease), *self._scope_keys(limits), *(reserve.keys if reserve else ())]
        args = [grant.lease, grant.second, delta, len(limits), len(reserve.keys) if reserve else 0, settle_delta]
        self._send_in_background(self._release, keys, args)

    def report(self, claim: Claim, grant: Grant, outcome: Outcome) -> None:
        if grant.local:
            self.local.report_now(claim, grant, outcome)
            return
        if self.degraded:  # what the call taught us still counts here; the lease is released when Redis is back
            self.local.health_for(claim.target).fold(outcome, claim.rules, time.time())
        keys = [self.key("t", claim.target), self.key("h", claim.target), *self._scope_keys(claim.limits)]
        self._send_in_background(self._report, keys, _report_args(claim, grant, outcome))

    # -- reads --------------------------------------------------------------------------

    async def spent(self, counters: Sequence[str]) -> list[int]:
        values = await self.client.mget(list(counters)) if counters else []
        return [int(v) if v else 0 for v in values]

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
        result = await self._send(self._snapshot, keys, args)
        now = int(result[0]) / 1000
        skew = time.time() - now  # Redis's clock and ours may differ: shift Redis's times onto ours
        return {claim.target: _state(row, claim, now, skew) for claim, row in zip(claims, result[1:], strict=True)}

    async def close(self) -> None:
        self._closing = True
        if self._kept and not self.degraded:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._send_kept()  # the last releases reach Redis before it closes
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        await super().close()  # the pipelines in flight finish: their writes still count
        with contextlib.suppress(Exception):
            await self.probe_client.aclose()


def _probe_client(client: Any, timeout: float) -> Any:
    """A client on the same server as ``client``, with one connection of its own (not from the request pool)."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout, "socket_connect_timeout": timeout}
    return aioredis.Redis.from_pool(aioredis.ConnectionPool(connection_class=pool.connection_class, max_connections=1, **kwargs))


def _admission(result: list[Any], lease: str, claims: Sequence[Claim], entry: Entry | None) -> Admission:
    """The admit script's answer as an ``Admission`` (entry grant or refusal, chosen claim, skips)."""
    chosen, probe, now_ms, status = int(result[0]), bool(int(result[1])), int(result[2]), int(result[3])
    limits = entry.limits if entry is not None else ()
    counts = tuple(
        ScopeCount(limit.scope, int(result[7 + 3 * i]), int(result[8 + 3 * i]), max(0.0, int(result[9 + 3 * i]) + WINDOW_SECONDS - now_ms / 1000))
        for i, limit in enumerate(limits)
    )
    rest = result[7 + 3 * len(limits) :]
    skips = [(int(rest[i]) - 1, _skip(rest[i + 1 : i + 4], claims[int(rest[i]) - 1])) for i in range(0, len(rest), 4)]
    if status == 0:
        assert entry is not None
        index, which = int(result[4]), _text(result[5])
        scope = entry.reserve.keys[index] if which == "reserve" and entry.reserve is not None else limits[index].scope
        return Admission(None, None, skips, refusal=Refusal(scope, which, max(0.0, int(result[6]) / 1000), counts))
    admission = Admission(None, None, skips)
    if chosen:
        claim = claims[chosen - 1]
        admission = Admission(chosen - 1, Grant(lease, tuple(lim.scope for lim in claim.limits), now_ms // 1000, claim.tokens), skips, probe)
    if entry is not None and status == 1:
        admission.entry_grant = Grant(lease, tuple(lim.scope for lim in limits), now_ms // 1000, entry.tokens, counts=counts, reserve=entry.reserve)
    return admission


def _skip(fields: list[Any], claim: Claim) -> Skip:
    """One skipped claim from the script: (cause, reason, wait ms); a limit names its scope by index."""
    cause, reason, wait = SkipCause(_text(fields[0])), _text(fields[1]), max(0.0, int(fields[2]) / 1000)
    if cause is SkipCause.LIMIT:  # 'limit:<i>:<rpm|tpm|concurrency>'
        _, index, which = reason.split(":", 2)
        reason = Refusal(claim.limits[int(index)].scope, which, wait).reason
    return Skip(cause, reason, wait)


def _report_args(claim: Claim, grant: Grant, outcome: Outcome) -> list[Any]:
    rules = claim.rules
    delta = 0 if outcome.actual_tokens is None else clamp(outcome.actual_tokens, high=MAX_TOKENS) - grant.tokens
    cooldown = outcome.retry_after if outcome.retry_after is not None else 1.0
    return [
        grant.lease, grant.second, delta, len(claim.limits), str(outcome.kind),
        int(outcome.latency_ms), -1 if outcome.ttft_ms is None else int(outcome.ttft_ms), int(min(cooldown, 86400.0) * 1000),
        _or_minus(outcome.remaining_requests), _ms_or(outcome.reset_requests, 60.0),
        _or_minus(outcome.remaining_tokens), _ms_or(outcome.reset_tokens, 60.0),
        1 if outcome.probe else 0, rules.failure_threshold, rules.failure_rate, rules.min_requests,
        int(rules.window), int(rules.cooldown * 1000), TARGET_TTL_MS,
    ]  # fmt: skip


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
