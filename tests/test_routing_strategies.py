"""Each strategy, as a pure function over a hand-made snapshot, with seeded randomness."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from types import MappingProxyType

from router.config import Limits, Price, Provider, Target, Timeouts
from router.routing.engine import target_limits
from router.routing.strategies import Context, Option, order
from router.state.store import ScopeUsage, TargetState

NOW = 1_000_000.0


def target(name: str, *, weight: float = 1.0, priority: int = 0, price: tuple[str, str] | None = None, limits: Limits | None = None) -> Target:
    provider = Provider(name, "openai", "http://127.0.0.1:1", None, Timeouts(), MappingProxyType({}), MappingProxyType({}))
    p = Price(Decimal(price[0]), Decimal(price[1])) if price else None
    return Target(provider, "m", weight, priority, p, limits)


def options(*specs: tuple[Target, TargetState]) -> list[Option]:
    return [Option(i, t, s, target_limits(t)) for i, (t, s) in enumerate(specs)]


def names(ordered: list[Option]) -> list[str]:
    return [o.target.provider.name for o in ordered]


def ctx(seed: int = 1, *, tokens: int = 100, stream: bool = False) -> Context:
    return Context(NOW, tokens, stream, random.Random(seed))


def test_priority_orders_tiers_and_keeps_config_order_inside_a_tier():
    opts = options((target("b", priority=1), TargetState()), (target("a", priority=0), TargetState()), (target("c", priority=0), TargetState()))
    assert names(order("priority", opts, ctx())) == ["a", "c", "b"]


def test_priority_fails_over_past_an_open_circuit_and_a_cooldown():
    opts = options(
        (target("a", priority=0), TargetState(circuit="open", open_until=NOW + 10)),
        (target("b", priority=1), TargetState(cooldown_until=NOW + 2)),
        (target("c", priority=2), TargetState()),
    )
    assert names(order("priority", opts, ctx())) == ["c", "a", "b"]


def test_half_open_circuit_is_tried_again():
    opts = options((target("a"), TargetState(circuit="open", open_until=NOW - 1)), (target("b", priority=1), TargetState()))
    assert names(order("priority", opts, ctx()))[0] == "a"


def test_weighted_draws_in_proportion_to_weight():
    opts = options((target("heavy", weight=3), TargetState()), (target("light", weight=1), TargetState()))
    rng = random.Random(7)
    firsts = Counter(names(order("weighted", opts, Context(NOW, 1, False, rng)))[0] for _ in range(4000))
    assert 0.70 < firsts["heavy"] / 4000 < 0.80  # 3:1 is 75%


def test_weighted_is_reproducible_with_a_seed():
    opts = options(*[(target(n), TargetState()) for n in "abcdef"])
    assert names(order("weighted", opts, ctx(42))) == names(order("weighted", opts, ctx(42)))


def test_cost_picks_the_cheapest_healthy_target_with_headroom():
    opts = options(
        (target("dear", price=("5", "15")), TargetState()),
        (target("cheap-but-full", price=("0.1", "0.2"), limits=Limits(rpm=10)), TargetState(scopes={"target:cheap-but-full/m": ScopeUsage(requests=10)})),
        (target("cheap", price=("0.5", "1")), TargetState()),
        (target("unpriced"), TargetState()),
    )
    assert names(order("cost", opts, ctx())) == ["cheap", "dear", "unpriced", "cheap-but-full"]


def test_latency_prefers_the_fastest_and_measures_the_unmeasured_first():
    fresh = NOW - 1
    opts = options(
        (target("slow"), TargetState(latency_ms=900, measured_at=fresh)),
        (target("fast"), TargetState(latency_ms=100, measured_at=fresh)),
        (target("stale"), TargetState(latency_ms=50, measured_at=NOW - 3600)),
    )
    seen = Counter(tuple(names(order("latency", opts, ctx(seed)))) for seed in range(200))
    assert seen.most_common(1)[0][0] == ("stale", "fast", "slow")
    explored = sum(n for ordering, n in seen.items() if ordering[0] != "stale")
    assert 0 < explored < 60  # a little exploration, about 10%


def test_latency_uses_time_to_first_token_when_streaming():
    fresh = NOW - 1
    opts = options(
        (target("quick-start"), TargetState(latency_ms=2000, ttft_ms=100, measured_at=fresh)),
        (target("quick-end"), TargetState(latency_ms=500, ttft_ms=450, measured_at=fresh)),
    )
    rng_seed = next(s for s in range(100) if random.Random(s).random() >= 0.1)  # a draw without exploration
    assert names(order("latency", opts, ctx(rng_seed, stream=True)))[0] == "quick-start"
    assert names(order("latency", opts, ctx(rng_seed, stream=False)))[0] == "quick-end"


def test_least_busy_prefers_fewest_in_flight():
    opts = options(
        (target("busy"), TargetState(scopes={"target:busy/m": ScopeUsage(in_flight=5)})),
        (target("idle"), TargetState(scopes={"target:idle/m": ScopeUsage(in_flight=0)})),
        (target("some"), TargetState(scopes={"target:some/m": ScopeUsage(in_flight=2)})),
    )
    assert names(order("least-busy", opts, ctx())) == ["idle", "some", "busy"]


def test_default_filters_unhealthy_and_exhausted_then_weights_within_the_first_tier():
    opts = options(
        (target("down"), TargetState(circuit="open", open_until=NOW + 30)),
        (target("out", limits=Limits(concurrency=1)), TargetState(scopes={"target:out/m": ScopeUsage(in_flight=1)})),
        (target("ok1"), TargetState()),
        (target("ok2"), TargetState()),
        (target("backup", priority=1), TargetState()),
    )
    for seed in range(20):
        ordered = names(order("default", opts, ctx(seed)))
        assert set(ordered[:2]) == {"ok1", "ok2"}
        assert ordered[2] == "backup"
        assert set(ordered[3:]) == {"down", "out"}


def test_a_target_about_to_run_out_goes_behind_its_peers_before_any_429():
    opts = options(
        (target("first"), TargetState(remaining_requests=2, reset_requests_at=NOW + 20)),
        (target("second", priority=1), TargetState(remaining_requests=500, reset_requests_at=NOW + 20)),
    )
    assert names(order("priority", opts, ctx())) == ["second", "first"]
    # Near its own rpm limit counts the same.
    near = options(
        (target("near", limits=Limits(rpm=10)), TargetState(scopes={"target:near/m": ScopeUsage(requests=9)})), (target("far", priority=1), TargetState())
    )
    assert names(order("priority", near, ctx())) == ["far", "near"]
