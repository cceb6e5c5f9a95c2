"""The circuit breaker's transitions, cooldowns and provider quota: pure rules, then both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from router.config import HealthPolicy, StateSettings
from router.errors import GatewayError, UpstreamClientError, UpstreamConnectError, UpstreamStatusError, UpstreamTimeout
from router.outcome import SkipCause
from router.routing.health import Health, parse_duration, read_quota
from router.state.limiter import ScopeLimit
from router.state.memory import MemoryStore
from router.state.store import Claim, Outcome, Skip, StateStore
from tests.conftest import wait_for

RULES = HealthPolicy(failure_threshold=3, failure_rate=0.5, min_requests=6, window=30, cooldown=10, probe_timeout=5)


def why(refused: tuple[Skip | None, bool]) -> str | None:
    """The reason a refusal gives (its cause and wait are checked where they matter)."""
    skip = refused[0]
    return None if skip is None else skip.reason


def fail(health: Health, now: float, probe: bool = False) -> None:
    health.fold(Outcome("fail", probe=probe), RULES, now)


def test_consecutive_failures_open_the_circuit():
    h = Health()
    fail(h, 100)
    fail(h, 100)
    assert h.refusal(100, 1, True) == (None, False)
    fail(h, 100)
    assert why(h.refusal(100.5, 1, True)) == "open circuit" and h.refusal(100.5, 1, True)[1] is False
    assert h.state(100.5).circuit == "open"


def test_a_success_resets_the_consecutive_count():
    h = Health()
    fail(h, 100)
    fail(h, 100)
    h.fold(Outcome("ok", latency_ms=10), RULES, 100)
    fail(h, 100)
    fail(h, 100)
    assert why(h.refusal(100, 1, True)) is None


def test_failure_rate_over_the_window_opens_the_circuit():
    h = Health()
    for i in range(3):  # alternate: never 3 in a row, but 50% of 6
        h.fold(Outcome("ok", latency_ms=10), RULES, 100 + i)
        fail(h, 100 + i)
    assert h.state(103).circuit == "open"


def test_old_failures_leave_the_window():
    h = Health()
    for i in range(3):
        h.fold(Outcome("ok", latency_ms=10), RULES, 100 + i)
        fail(h, 100 + i)
        h.failures = 0  # isolate the rate rule
        if i == 1:
            break
    h.fold(Outcome("ok"), RULES, 200)
    fail(h, 200)  # the earlier 4 calls are 100 s old: only 2 in the window
    assert h.state(200).circuit == "closed"


def test_half_open_lets_one_probe_through_and_its_success_closes():
    h = Health()
    for _ in range(3):
        fail(h, 100)
    assert why(h.refusal(109, 1, True)) == "open circuit"
    reason, probe = h.refusal(110, 1, True)
    assert (reason, probe) == (None, True)
    assert h.state(110).circuit == "half-open"
    h.admitted(110, 1, probe, RULES)
    assert why(h.refusal(110.1, 1, True)) == "circuit half-open, probe in flight"
    h.fold(Outcome("ok", latency_ms=10, probe=True), RULES, 111)
    assert h.state(111).circuit == "closed"
    assert h.refusal(111, 1, True) == (None, False)


def test_a_failed_probe_opens_the_circuit_again_for_a_full_cooldown():
    h = Health()
    for _ in range(3):
        fail(h, 100)
    _, probe = h.refusal(110, 1, True)
    h.admitted(110, 1, probe, RULES)
    fail(h, 111, probe=True)
    assert why(h.refusal(120, 1, True)) == "open circuit"
    assert h.refusal(121.1, 1, True) == (None, True)


def test_a_probe_that_never_reports_frees_the_slot_after_its_timeout():
    h = Health()
    for _ in range(3):
        fail(h, 100)
    h.admitted(110, 1, True, RULES)
    assert why(h.refusal(114, 1, True)) == "circuit half-open, probe in flight"
    assert h.refusal(115.1, 1, True) == (None, True)


def test_throttle_cools_down_without_touching_the_circuit():
    h = Health()
    h.fold(Outcome("throttle", retry_after=2), RULES, 100)
    assert h.failures == 0
    assert why(h.refusal(101, 1, True)).startswith("cooldown")
    assert h.refusal(101, 1, False) == (None, False)  # a retry that already waited it out
    assert h.refusal(102.01, 1, True) == (None, False)


def test_caller_errors_say_nothing_about_health():
    h = Health()
    for _ in range(10):
        h.fold(Outcome("neutral"), RULES, 100)
    assert h.state(100).circuit == "closed" and h.failures == 0


def test_reported_quota_is_decremented_by_admissions_and_exhaustion_skips():
    h = Health()
    h.fold(Outcome("ok", remaining_requests=2, reset_requests=30), RULES, 100)
    h.admitted(100, 10, False, RULES)
    h.admitted(100, 10, False, RULES)
    assert why(h.refusal(100, 10, True)) == "provider quota exhausted (requests)"
    # an older report from the same window does not raise it again
    h.fold(Outcome("ok", remaining_requests=1, reset_requests=29.5), RULES, 100.2)
    assert h.remaining_requests == 0
    # after the reset the target is open for business
    assert h.refusal(131, 10, True) == (None, False)


def test_token_quota_is_compared_with_the_estimate():
    h = Health()
    h.fold(Outcome("ok", remaining_tokens=500, reset_tokens=10), RULES, 100)
    assert why(h.refusal(100, 400, True)) is None
    assert why(h.refusal(100, 600, True)) == "provider quota exhausted (tokens)"


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("soon", None), (None, None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_read_quota_from_openai_headers():
    outcome = Outcome("ok")
    read_quota(
        {
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "6m0s",
        },
        outcome,
    )
    assert (outcome.remaining_requests, outcome.reset_requests, outcome.remaining_tokens, outcome.reset_tokens) == (59, 1.0, 149984, 360.0)


def test_each_error_carries_its_health_effect():
    assert GatewayError("x").health == "neutral"  # a gateway-side error (or the client leaving) says nothing of the target
    assert UpstreamConnectError("x").health == "fail"
    assert UpstreamTimeout("x").health == "fail"
    assert UpstreamStatusError(500, "x").health == "fail"
    assert UpstreamStatusError(429, "x").health == "throttle"
    assert UpstreamStatusError(503, "x", retry_after=1).health == "throttle"
    assert UpstreamClientError(400, "x").health == "neutral"


# -- the same transitions through both stores, on real time ----------------------

FAST = HealthPolicy(failure_threshold=2, failure_rate=0.5, min_requests=10, window=30, cooldown=0.3, probe_timeout=5)


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_url, redis_prefix) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    import redis.asyncio as aioredis

    from router.state.redis_store import RedisStore

    client = aioredis.from_url(redis_url)
    s = RedisStore(client, StateSettings(backend="redis", prefix=redis_prefix, timeout=2.0))
    yield s
    await s.close()
    await client.aclose()


def claim(name: str) -> Claim:
    return Claim(name, (ScopeLimit(f"target:{name}"),), 10, FAST)


async def test_store_walks_closed_open_half_open_closed(store: StateStore):
    a, b = claim("p/a"), claim("p/b")
    for _ in range(2):
        adm = await store.admit([a, b], 5)
        assert adm.index == 0
        store.report(a, adm.grant, Outcome("fail"))
        await store.tasks.drain()
    adm = await store.admit([a, b], 5)
    assert adm.index == 1 and [(i, s.cause, s.reason) for i, s in adm.skips] == [(0, SkipCause.CIRCUIT, "open circuit")]
    store.report(b, adm.grant, Outcome("ok", latency_ms=5))
    assert (await store.read([a]))["p/a"].circuit == "open"

    async def probe_admitted():
        got = await store.admit([a], 5)
        return got if got.index == 0 else None

    probe = await wait_for(probe_admitted, timeout=3)
    assert probe.probe
    second = await store.admit([a, b], 5)
    assert [(i, s.reason) for i, s in second.skips] == [(0, "circuit half-open, probe in flight")]
    store.report(b, second.grant, Outcome("ok"))
    store.report(a, probe.grant, Outcome("ok", latency_ms=5, probe=True))
    await store.tasks.drain()
    state = (await store.read([a]))["p/a"]
    assert state.circuit == "closed"
    assert state.scopes["target:p/a"].in_flight == 0


async def test_store_cooldown_from_retry_after(store: StateStore):
    a = claim("p/a")
    adm = await store.admit([a], 5)
    store.report(a, adm.grant, Outcome("throttle", retry_after=0.4))
    await store.tasks.drain()
    refused = await store.admit([a], 5)
    assert refused.index is None and refused.skips[0][1].reason.startswith("cooldown") and refused.skips[0][1].cause is SkipCause.COOLDOWN
    assert await wait_for(lambda: _admitted(store, a), timeout=3)


async def _admitted(store: StateStore, c: Claim) -> bool:
    adm = await store.admit([c], 5)
    if adm.grant is not None:
        store.report(c, adm.grant, Outcome("ok"))
    return adm.index == 0


async def test_limiter_is_all_or_nothing_across_scopes(store: StateStore):
    key, team = ScopeLimit("key:k1", rpm=5), ScopeLimit("team:t1", rpm=2)
    assert not hasattr(await store.acquire([key, team], 10, 5), "limit")
    assert not hasattr(await store.acquire([key, team], 10, 5), "limit")
    refused = await store.acquire([key, team], 10, 5)
    assert (refused.scope, refused.limit) == ("team:t1", "rpm")
    assert 0 < refused.retry_after <= 60
    # the refusal by the team did not use up the key's budget: 3 more fit on the key alone
    for _ in range(3):
        assert not hasattr(await store.acquire([key], 10, 5), "limit")
    assert (await store.acquire([key], 10, 5)).limit == "rpm"


async def test_limiter_concurrency_and_token_correction(store: StateStore):
    scope = ScopeLimit("key:k2", tpm=1000, concurrency=1)
    first = await store.acquire([scope], 900, 5)
    assert (await store.acquire([scope], 10, 5)).limit == "concurrency"
    store.release(first, actual_tokens=100)  # the estimate was 900, the truth 100
    await store.tasks.drain()
    second = await store.acquire([scope], 850, 5)
    assert not hasattr(second, "limit"), second  # 100 + 850 fits under 1000; 900 + 850 would not
