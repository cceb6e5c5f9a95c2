"""Retrying one target: tenacity, exponential backoff with jitter, Retry-After honoured, a hard deadline.

Only failures that another try could cure are retried (connect errors,
timeouts, 429, 5xx); a caller's 4xx never is.  The wait is the larger of the
backoff and the upstream's ``Retry-After`` (capped by the policy), and no
retry starts if its wait would end past the request's deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from router.config import RetryPolicy
from router.errors import UpstreamError

T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamError) and exc.retryable


class wait_backoff_or_retry_after(wait_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self.backoff = wait_exponential_jitter(initial=policy.backoff_initial, max=policy.backoff_max, jitter=policy.backoff_initial)
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
    if policy.attempts <= 1:  # the common case costs no retry machinery
        return await attempt()
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | stop_before_deadline(deadline),
        wait=wait_backoff_or_retry_after(policy),
        retry=retry_if_exception(is_retryable),
        sleep=asyncio.sleep,
        reraise=True,
    )
    return await retrying(attempt)
