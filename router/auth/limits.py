"""Per-key and per-team rpm, tpm and concurrency: where they are enforced, and the headers they produce.

The limits are parsed and validated with the key or team (``limits: {rpm,
tpm, concurrency}``, the same ``Limits`` a target has).  The counting itself
belongs to the shared limiter in ``router/state`` (sliding-window rpm/tpm and
concurrency, atomic across replicas); ``enforce_limits`` is the one place
that will call it, once per request, for the scopes ``limit_scopes`` lists.
Until that limiter is wired in, ``enforce_limits`` admits every request and
reports nothing, so no request is refused on a count we do not keep.

What a client sees, as OpenAI sends it, on every response of a limited key:

    x-ratelimit-limit-requests      x-ratelimit-limit-tokens
    x-ratelimit-remaining-requests  x-ratelimit-remaining-tokens
    x-ratelimit-reset-requests      x-ratelimit-reset-tokens     (like "1s", "6m0s")

and on a refusal, 429 ``rate_limit_exceeded`` with ``Retry-After`` in whole seconds.
The tightest scope (key or team) is the one reported.  Admission leaves the
headers on the request (``RATELIMIT_HEADERS``) and an ``on_response_prepare``
hook adds them to whatever response follows, streamed or not, errors too.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from router.auth.keys import Principal
from router.config import Limits
from router.errors import RateLimited


@dataclass(frozen=True, slots=True)
class LimitScope:
    name: str  # "key:<id>" or "team:<name>": the limiter's counter identity, shared by every replica
    limits: Limits


@dataclass(frozen=True, slots=True)
class Window:
    """One scope's state for one kind of limit, as the limiter reports it after counting this request."""

    limit: int
    remaining: int
    reset_seconds: float


@dataclass(slots=True)
class LimitDecision:
    requests: Window | None = None
    tokens: Window | None = None
    retry_after: float | None = None  # set when refused
    refused_by: str | None = None  # "rpm of key:<id>", ...
    release: Callable[[], Awaitable[None]] | None = None  # gives back a concurrency slot
    headers: dict[str, str] = field(default_factory=dict)


def limit_scopes(principal: Principal) -> list[LimitScope]:
    scopes = [LimitScope(f"key:{principal.key.id}", principal.key.limits)] if principal.key.limits else []
    if principal.team is not None and principal.team.limits is not None:
        scopes.append(LimitScope(f"team:{principal.team.name}", principal.team.limits))
    return scopes


def format_reset(seconds: float) -> str:
    """OpenAI's duration style: "1s", "250ms", "6m0s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def ratelimit_headers(requests: Window | None, tokens: Window | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, window in (("requests", requests), ("tokens", tokens)):
        if window is None:
            continue
        headers[f"x-ratelimit-limit-{kind}"] = str(window.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, window.remaining))
        headers[f"x-ratelimit-reset-{kind}"] = format_reset(window.reset_seconds)
    return headers


def refusal(decision: LimitDecision) -> RateLimited:
    retry_after = max(1, math.ceil(decision.retry_after or 1))
    headers = {**ratelimit_headers(decision.requests, decision.tokens), "Retry-After": str(retry_after)}
    return RateLimited(f"rate limit reached for {decision.refused_by or 'this key'}; retry after {retry_after}s", headers=headers)


async def enforce_limits(principal: Principal, estimated_tokens: int) -> LimitDecision:
    """Count this request against every scope's rpm/tpm/concurrency; raise ``RateLimited`` if any is full.

    Not yet counting: the shared limiter (router/state) lands in another
    branch.  When it does, this becomes: for each of ``limit_scopes``, ask
    the limiter to admit one request and ``estimated_tokens`` tokens (one
    Redis round trip for all scopes, folded into the budget reservation's if
    both apply), take the tightest ``Window`` of each kind, and ``raise
    refusal(decision)`` when one is full.
    """
    return LimitDecision()
