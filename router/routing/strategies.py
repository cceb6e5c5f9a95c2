"""Strategies: pure functions that order one alias's targets from a snapshot of their state.

Every strategy puts targets in three bands and orders only within them:

    ready        healthy (circuit closed or due a half-open probe, no cooldown)
                 with headroom under every limit and provider-reported quota
    running low  healthy, but at 90% of a limit or nearly out of the quota the
                 provider reported: tried only when no ready target is left
    unavailable  open circuit, cooldown, or a limit reached: kept last, so the
                 admission step (which reads live state) can still say why

Within a band:

    priority     ascending ``priority`` tier, config order inside a tier
    weighted     random, each target drawn in proportion to its ``weight``
    cost         cheapest first (input + output price per million); unpriced last
    latency      lowest moving average (time to first token when streaming,
                 whole latency otherwise); unmeasured or stale targets first so
                 they get measured, and with probability ``EXPLORE`` a random
                 other target goes first, so a recovered target is seen again
    least-busy   fewest requests in flight, ties broken at random
    default      priority tiers, weighted random within a tier

Randomness comes from the ``rng`` argument, so tests seed it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from router.config import Target
from router.outcome import SkipCause
from router.routing.health import healthy, running_low
from router.state.limiter import Refusal, ScopeLimit
from router.state.store import Skip, TargetState

EXPLORE = 0.1
STALE_AFTER = 60.0  # seconds after which a latency average no longer counts
NEAR_LIMIT = 0.9


@dataclass(frozen=True, slots=True)
class Option:
    position: int  # in the alias's config order
    target: Target
    state: TargetState
    limits: tuple[ScopeLimit, ...]


@dataclass(frozen=True, slots=True)
class Context:
    now: float
    tokens: int  # this request's estimate
    stream: bool
    rng: random.Random


def unavailable(option: Option, ctx: Context) -> Skip | None:
    """Why the last state read says admission would refuse this target now (admission, on live state, decides)."""
    state, now = option.state, ctx.now
    if state.cooldown_until > now:
        wait = state.cooldown_until - now
        return Skip(SkipCause.COOLDOWN, f"cooldown {wait:.1f}s", wait)
    if not healthy(state, now):
        return Skip(SkipCause.CIRCUIT, "open circuit", state.open_until - now)
    for limit in option.limits:
        usage = state.usage(limit.scope)
        if limit.rpm is not None and usage.requests + 1 > limit.rpm:
            return Skip(SkipCause.LIMIT, Refusal(limit.scope, "rpm", 0.0).reason)
        if limit.tpm is not None and usage.tokens > 0 and usage.tokens + ctx.tokens > limit.tpm:
            return Skip(SkipCause.LIMIT, Refusal(limit.scope, "tpm", 0.0).reason)
        if limit.concurrency is not None and usage.in_flight >= limit.concurrency:
            return Skip(SkipCause.LIMIT, Refusal(limit.scope, "concurrency", 0.0).reason)
    if state.remaining_requests is not None and state.remaining_requests <= 0:
        return Skip(SkipCause.QUOTA, "provider quota exhausted (requests)", max(0.0, state.reset_requests_at - now))
    return None


def band(option: Option, ctx: Context) -> int:
    """0 ready, 1 running low, 2 unavailable."""
    if unavailable(option, ctx) is not None:
        return 2
    state = option.state
    low = running_low(state, ctx.tokens, ctx.now)
    for limit in option.limits:
        usage = state.usage(limit.scope)
        if limit.rpm is not None:
            low = low or usage.requests + 1 > NEAR_LIMIT * limit.rpm
        if limit.tpm is not None:
            low = low or usage.tokens + ctx.tokens > NEAR_LIMIT * limit.tpm
    return 1 if low else 0


def by_priority(options: Sequence[Option], ctx: Context) -> list[Option]:
    return sorted(options, key=lambda o: (o.target.priority, o.position))


def by_weight(options: Sequence[Option], ctx: Context) -> list[Option]:
    # Efraimidis-Spirakis: sorting by u ** (1 / w) draws without replacement in proportion to weight.
    def key(o: Option) -> float:
        return ctx.rng.random() ** (1.0 / o.target.weight) if o.target.weight > 0 else -1.0

    return sorted(options, key=key, reverse=True)


def _price(o: Option) -> Decimal | float:
    price = o.target.price
    return math.inf if price is None else price.input + price.output


def by_cost(options: Sequence[Option], ctx: Context) -> list[Option]:
    return sorted(options, key=lambda o: (_price(o), o.target.priority, o.position))


def _latency(o: Option, ctx: Context) -> float:
    state = o.state
    value = state.ttft_ms if ctx.stream and state.ttft_ms is not None else state.latency_ms
    if value is None or ctx.now - state.measured_at > STALE_AFTER:
        return -1.0  # unmeasured: measure it
    return value


def by_latency(options: Sequence[Option], ctx: Context) -> list[Option]:
    ordered = sorted(options, key=lambda o: (_latency(o, ctx), o.position))
    if len(ordered) > 1 and ctx.rng.random() < EXPLORE:
        pick = ctx.rng.randrange(1, len(ordered))
        ordered.insert(0, ordered.pop(pick))
    return ordered


def by_in_flight(options: Sequence[Option], ctx: Context) -> list[Option]:
    shuffled = list(options)
    ctx.rng.shuffle(shuffled)

    def in_flight(o: Option) -> int:
        return o.state.usage(o.limits[0].scope).in_flight if o.limits else 0

    return sorted(shuffled, key=in_flight)


def by_default(options: Sequence[Option], ctx: Context) -> list[Option]:
    """Priority tiers; inside a tier, the order the route table lists (failover as written).

    Weighted random only where the table asks for it with unequal weights, so a
    plain list of targets means "this one, then that one", as the README's
    route table section promises; ``order`` has already moved unhealthy and
    exhausted targets behind the ready ones.
    """
    tiers: dict[int, list[Option]] = {}
    for o in options:
        tiers.setdefault(o.target.priority, []).append(o)
    ordered: list[Option] = []
    for tier in sorted(tiers):
        group = tiers[tier]
        weighted = len({o.target.weight for o in group}) > 1
        ordered.extend(by_weight(group, ctx) if weighted else sorted(group, key=lambda o: o.position))
    return ordered


STRATEGIES: dict[str, Callable[[Sequence[Option], Context], list[Option]]] = {
    "priority": by_priority,
    "weighted": by_weight,
    "cost": by_cost,
    "latency": by_latency,
    "least-busy": by_in_flight,
    "default": by_default,
}


def order(strategy: str, options: Sequence[Option], ctx: Context) -> list[Option]:
    """The alias's targets in the order to try them."""
    choose = STRATEGIES[strategy]
    bands: list[list[Option]] = [[], [], []]
    for option in options:
        bands[band(option, ctx)].append(option)
    return [o for group in bands for o in (choose(group, ctx) if len(group) > 1 else group)]
