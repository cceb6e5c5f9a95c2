"""Retrying one target: tenacity, exponential backoff with jitter, Retry-After honoured, a hard deadline.

Only failures that another try could cure are retried, and only the kinds
the alias's ``retry.on`` names (``connect``, ``timeout``, ``429``, ``5xx``;
an unreadable answer counts as ``5xx``); a caller's 4xx never is, and with
``retry.same_target: false`` nothing is retried here: the failure moves on to
the next candidate at once.  The wait is the larger of the backoff and the
upstream's ``Retry-After`` (``retry-after-ms`` first), capped by
``retry_after_cap``, and no retry starts if its wait would end past the
request's deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from router.config import RetryPolicy
from router.errors import UpstreamError

T = TypeVar("T")


def failure_kind(exc: BaseException) -> str | None:
    """The ``retry.on`` name of a failure (the error table's ``retry_on``), or None when no retry of the same target can help."""
    return exc.retry_on if isinstance(exc, UpstreamError) and exc.retryable else None


def retries_same_target(policy: RetryPolicy) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        return policy.same_target and failure_kind(exc) in policy.retry_on

    return check


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the upstream asked us to wait: ``retry-after-ms`` first, then ``Retry-After`` in seconds."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None  # an HTTP date: rare from model APIs; the backoff applies instead
    return None


class wait_backoff_or_retry_after(wait_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self.backoff = wait_exponential_jitter(multiplier=policy.backoff_initial, max=policy.backoff_max, jitter=policy.backoff_initial)
        self.cap = policy.retry_after_cap

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = float(self.backoff(retry_state))
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(float(retry_after), self.cap))
        return delay


class stop_before_deadline(stop_base):
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.monotonic() + retry_state.upcoming_sleep >= self.deadline


async def call_with_retries(policy: RetryPolicy, deadline: float, attempt: Callable[[], Awaitable[T]]) -> T:
    if policy.attempts <= 1 or not policy.same_target:  # the common case costs no retry machinery
        return await attempt()
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | stop_before_deadline(deadline),
        wait=wait_backoff_or_retry_after(policy),
        retry=retry_if_exception(retries_same_target(policy)),
        sleep=asyncio.sleep,
        reraise=True,
    )
    return await retrying(attempt)
