"""Budgets without overshoot: reserve the most a request can cost, settle to what it did cost.

At request start the request's maximum cost is added to the spend counter
of the key and of its team for the current period, in the same atomic step
as the key's limits and routing's admission (the state store's ``admit``:
one Lua script on Redis, so every replica sees one counter), and only if
every counter stays within its limit; otherwise the request is refused
before any upstream call.  When the request ends, the store's ``release``
moves each counter by (real cost - reserved), once, even if it has to wait
for Redis to come back; a request that never reached an upstream gives the
whole reservation back.

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

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from router.accounting.pricing import max_cost_micro_usd
from router.accounting.record import RequestRecord
from router.auth.keys import Budget, Principal
from router.config import Price
from router.errors import BudgetExceeded
from router.request import ClientRequest
from router.state.limiter import Reserve
from router.state.store import StateStore


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


def _ttls(scopes: list[BudgetScope], now: float) -> list[int]:
    """Seconds each period counter lives: a day past its period's end (0: a total budget never expires)."""
    return [math.ceil(s.resets_at - now) + 86400 if s.resets_at is not None else 0 for s in scopes]


class BudgetBook:
    """Budget counters as the state store keeps them: in memory for one instance, in Redis for replicas.

    The store reserves and settles them (``Entry.reserve`` in ``admit``,
    ``release(settle=...)``), in the same step as the key's limits and the
    target's admission; the book names them and reads them for the admin API.
    """

    def __init__(self, store: StateStore, base: str = "") -> None:
        self.store = store
        self.base = base  # "<prefix>:auth:" on Redis; "" in memory

    def reserve(self, scopes: list[BudgetScope], amount: int, now: float) -> Reserve:
        """``amount`` to add to every scope's counter, only if each stays within its limit."""
        keys = tuple(self.base + s.counter for s in scopes)
        return Reserve(keys, amount, tuple(s.limit_micro_usd for s in scopes), tuple(_ttls(scopes, now)))

    def scope_of(self, scopes: list[BudgetScope], key: str) -> BudgetScope:
        return scopes[[self.base + s.counter for s in scopes].index(key)]

    async def spent(self, counters: list[str]) -> list[int]:
        return await self.store.spent([self.base + c for c in counters])

    @property
    def counters(self) -> dict[str, int]:
        """In memory: every counter by name (for tests and the admin API)."""
        return dict(getattr(self.store, "counters", {}))


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    return record.cost_micro
