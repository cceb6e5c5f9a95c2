"""Budgets without overshoot: reserve the most a request can cost, settle to what it did cost.

At request start, ``reserve`` adds the request's maximum cost to the spend
counter of the key and of its team for the current period, in one atomic
step (one Lua script on Redis, so every replica sees one counter), and only
if every counter stays within its limit; otherwise the request is refused
before any upstream call.  When the request ends, ``settle`` moves each
counter by (real cost - reserved); a request that never reached an upstream
gives the whole reservation back.

The bound: spend never exceeds a budget, given correct prices and an output
bound the upstream honours.  The maximum cost prices every prompt byte as a
token (a token is at least one byte of the body) at the dearest input rate,
and ``max_tokens`` (or ``auth.default_max_output_tokens``, which is then set
on the request so the upstream is held to it) times ``n`` at the dearest
output rate, at the dearest candidate target.

Counters are integer micro-dollars named by calendar period in UTC:
``<prefix>:auth:spend:key:<id>:d2026-11-21`` (day), ``w2026-11-16`` (the
week's Monday), ``m2026-11`` (month) or ``total``.  A period counter expires
a day after its period ends.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from router.accounting.pricing import max_cost_micro_usd, to_micro
from router.accounting.record import RequestRecord
from router.auth.keys import Budget, Principal
from router.config import Price
from router.errors import AuthUnavailable, BudgetExceeded
from router.request import ClientRequest
from router.state.limiter import Reserve


def period_window(period: str, now: float) -> tuple[str, float | None]:
    """(counter suffix, unix time the period ends) for the period containing ``now``."""
    return _period_window(period, int(now // 86400))


@functools.lru_cache(maxsize=64)
def _period_window(period: str, day_number: int) -> tuple[str, float | None]:
    # Every request with a budget asks; the answer changes once a day.
    if period == "total":
        return "total", None
    day = datetime.fromtimestamp(day_number * 86400, UTC)
    if period == "day":
        return f"d{day:%Y-%m-%d}", (day + timedelta(days=1)).timestamp()
    if period == "week":
        monday = day - timedelta(days=day.weekday())
        return f"w{monday:%Y-%m-%d}", (monday + timedelta(days=7)).timestamp()
    first = day.replace(day=1)
    following = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return f"m{first:%Y-%m}", following.timestamp()


@dataclass(frozen=True, slots=True)
class BudgetScope:
    label: str  # "key ci-bot", "team platform": for the client's error message
    counter: str  # relative name; the book adds its prefix
    limit_micro_usd: int
    resets_at: float | None


def budget_scopes(principal: Principal, now: float) -> list[BudgetScope]:
    scopes: list[BudgetScope] = []
    owners: list[tuple[str, str, Budget | None]] = [("key", principal.key.id, principal.key.budget)]
    if principal.team is not None:
        owners.append(("team", principal.team.name, principal.team.budget))
    for kind, name, budget in owners:
        if budget is None:
            continue
        suffix, resets_at = period_window(budget.period, now)
        scopes.append(BudgetScope(f"{kind} {name}", f"spend:{kind}:{name}:{suffix}", budget.limit_micro_usd, resets_at))
    return scopes


class BudgetBook(Protocol):
    async def reserve(self, scopes: list[BudgetScope], amount: int, now: float) -> int:
        """0 if ``amount`` was added to every scope's counter; else 1 + the index of the first that would overflow."""
        ...

    async def adjust(self, counters: list[str], delta: int) -> None: ...

    async def spent(self, counters: list[str]) -> list[int]: ...


class MemoryBudgetBook:
    """One process: no await between check and add, so the event loop makes it atomic."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    async def reserve(self, scopes: list[BudgetScope], amount: int, now: float) -> int:
        for i, scope in enumerate(scopes):
            if self.counters.get(scope.counter, 0) + amount > scope.limit_micro_usd:
                return i + 1
        for scope in scopes:
            self.counters[scope.counter] = self.counters.get(scope.counter, 0) + amount
        return 0

    async def adjust(self, counters: list[str], delta: int) -> None:
        for counter in counters:
            self.counters[counter] = self.counters.get(counter, 0) + delta

    async def spent(self, counters: list[str]) -> list[int]:
        return [self.counters.get(c, 0) for c in counters]


# All-or-nothing across the key's and the team's counters.
_RESERVE = """
local amount = tonumber(ARGV[1])
local n = #KEYS
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + amount > tonumber(ARGV[1 + i]) then return i end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], amount)
  local ttl = tonumber(ARGV[1 + n + i])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return 0
"""


def _ttls(scopes: list[BudgetScope], now: float) -> list[int]:
    """Seconds each period counter lives: a day past its period's end (0: a total budget never expires)."""
    return [math.ceil(s.resets_at - now) + 86400 if s.resets_at is not None else 0 for s in scopes]


class RedisBudgetBook:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.base = prefix.rstrip(":") + ":auth:"
        self._reserve = redis.register_script(_RESERVE)

    def counters(self, scopes: list[BudgetScope], amount: int, now: float) -> Reserve:
        """The reservation as the state store's ``acquire`` carries it beside the key's limits: one round trip for both."""
        return Reserve(tuple(self.base + s.counter for s in scopes), amount, tuple(s.limit_micro_usd for s in scopes), tuple(_ttls(scopes, now)))

    async def reserve(self, scopes: list[BudgetScope], amount: int, now: float) -> int:
        from redis.exceptions import RedisError

        ttls = _ttls(scopes, now)
        try:
            return int(await self._reserve(keys=[self.base + s.counter for s in scopes], args=[amount, *(s.limit_micro_usd for s in scopes), *ttls]))
        except (RedisError, OSError, TimeoutError) as exc:
            # Fail closed: admitting without a reservation could overspend.
            raise AuthUnavailable("the budget store is unavailable; try again shortly") from exc

    async def adjust(self, counters: list[str], delta: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for counter in counters:
            pipe.incrby(self.base + counter, delta)
        await pipe.execute()

    async def spent(self, counters: list[str]) -> list[int]:
        values = await self.redis.mget([self.base + c for c in counters]) if counters else []
        return [int(v) if v else 0 for v in values]


@dataclass(slots=True)
class Reservation:
    book: BudgetBook
    scopes: list[BudgetScope]
    amount: int
    done: bool = field(default=False)

    async def settle(self, actual: int) -> None:
        """Replace the reservation by the real cost (0 releases it); once only."""
        if self.done:
            return
        self.done = True
        if actual != self.amount:
            await self.book.adjust([s.counter for s in self.scopes], actual - self.amount)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def reserve(book: BudgetBook, principal: Principal, amount: int) -> Reservation | None:
    now = time.time()
    scopes = budget_scopes(principal, now)
    if not scopes:
        return None
    failed = await book.reserve(scopes, amount, now)
    if failed:
        raise budget_refusal(scopes[failed - 1], amount, now)
    return Reservation(book, scopes, amount)


def budget_refusal(scope: BudgetScope, amount: int, now: float) -> BudgetExceeded:
    limit = Decimal(scope.limit_micro_usd) / 1_000_000
    cost = Decimal(amount) / 1_000_000
    if scope.resets_at is None:
        when, headers = "it does not reset (a total budget)", {}
    else:
        when, headers = f"it resets at {_utc(scope.resets_at)}", {"Retry-After": str(max(1, math.ceil(scope.resets_at - now)))}
    return BudgetExceeded(
        f"the budget of {scope.label} (${limit} per {scope.resets_at and 'period' or 'lifetime'}) cannot cover this request's "
        f"maximum cost of ${cost}; {when}. Lower max_tokens or ask for a larger budget.",
        headers=headers,
    )


def max_request_cost(req: ClientRequest, body_bytes: int, prices: list[Price | None]) -> int:
    """The most this request can cost at the dearest of ``prices``: every body byte a prompt token, every choice at its output bound."""
    per_choice = req.max_output_tokens or 0
    choices = max((v for v in (req.body.get("n"), req.body.get("best_of")) if isinstance(v, int) and not isinstance(v, bool)), default=1)
    output = per_choice * max(1, choices)
    return max((max_cost_micro_usd(body_bytes, output, price) for price in prices), default=0)


def actual_cost(record: RequestRecord, reserved: int) -> int:
    """What the request really cost: every attempt's cost, priced once when its usage was known (``AttemptRecord.charge``).

    An attempt that answered but whose usage we never learned (a stream cut
    short, a provider that reports none: the usage is then the ledger's
    estimate) is charged the whole reservation: unknown spend must not free budget.
    """
    for attempt in record.attempts:
        if attempt.answered and (attempt.usage is None or attempt.usage.estimated):
            return reserved  # the ledger records an estimate for finance; a budget must not trust one
    return to_micro(record.cost)


async def settle_quietly(reservation: Reservation, actual: int, log: Any) -> None:
    try:
        await reservation.settle(actual)
    except asyncio.CancelledError:
        raise
    except Exception:  # the spend stays reserved (never under-counted); say so
        log.exception("could not settle a budget reservation of %d micro-USD (actual %d)", reservation.amount, actual)
