"""Per-key and per-team rpm, tpm and concurrency: counted in the shared limiter, and the headers they produce.

The limits are parsed and validated with the key or team (``limits: {rpm,
tpm, concurrency}``, the same ``Limits`` a target has).  The counting is the
shared limiter's (``router/state/limiter.py``, reached through the state
store): the scopes ``key:<id>`` and ``team:<name>`` get the same sliding
60-second windows and in-flight leases that routing keeps for targets,
checked and counted for every scope at once (one Lua call on Redis, shared
by every replica; one synchronous step in memory).  While Redis is out the
store counts on this replica alone, as routing does.

    scope_limits     the key's and team's scopes, carried in the request's ``Entry``: the
                     store's admit counts 1 request and the estimated tokens (prompt + max
                     output) into every scope and takes a concurrency lease, in the same
                     step as the budget and routing's admission; 429 if any scope is full
                     (and then nothing is counted)
    release          the store's, when the request has ended (answer, error, disconnect,
                     stream end): the lease back, the token estimate replaced by the real usage

What a client sees, as OpenAI sends it, on every response of a limited key:

    x-ratelimit-limit-requests      x-ratelimit-limit-tokens
    x-ratelimit-remaining-requests  x-ratelimit-remaining-tokens
    x-ratelimit-reset-requests      x-ratelimit-reset-tokens     (like "1s", "6m0s")

and on a refusal, 429 ``rate_limit_exceeded`` with ``Retry-After`` in whole seconds.
The tightest scope (key or team, least remaining) is the one reported; a
reset is when the oldest second counted in that window leaves it, i.e.
when room comes back.  Admission leaves the headers on the request
(``RATELIMIT_HEADERS``) and an ``on_response_prepare`` hook adds them to
whatever response follows, streamed or not, errors too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from router.auth.keys import Principal
from router.config import Limits
from router.errors import RateLimited
from router.state.limiter import Refusal, ScopeCount, ScopeLimit


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


def scope_limits(principal: Principal) -> list[ScopeLimit]:
    return [ScopeLimit(s.name, s.limits.rpm, s.limits.tpm, s.limits.concurrency) for s in limit_scopes(principal)]


def tightest(limits: Sequence[ScopeLimit], counts: Sequence[ScopeCount]) -> tuple[Window | None, Window | None]:
    """The (requests, tokens) windows with the least room left, over the scopes that set each limit."""
    requests: Window | None = None
    tokens: Window | None = None
    for limit, count in zip(limits, counts, strict=True):
        if limit.rpm is not None:
            window = Window(limit.rpm, limit.rpm - count.requests, count.frees_in)
            if requests is None or window.remaining < requests.remaining:
                requests = window
        if limit.tpm is not None:
            window = Window(limit.tpm, limit.tpm - count.tokens, count.frees_in)
            if tokens is None or window.remaining < tokens.remaining:
                tokens = window
    return requests, tokens


def window_headers(limits: Sequence[ScopeLimit], counts: Sequence[ScopeCount]) -> dict[str, str]:
    """The x-ratelimit-* headers of the tightest scope, as the store's step left the windows."""
    return ratelimit_headers(*tightest(limits, counts))


def limit_refusal(limits: Sequence[ScopeLimit], refused: Refusal) -> RateLimited:
    """The 429 for a key or team limit the store refused: which one, when to retry, the windows."""
    retry_after = max(1, math.ceil(refused.retry_after or 1))
    bound = next(getattr(limit, refused.limit) for limit in limits if limit.scope == refused.scope)
    headers = {**window_headers(limits, refused.counts), "Retry-After": str(retry_after)}
    return RateLimited(f"rate limit reached for {refused.scope} ({refused.limit} {bound}); retry after {retry_after}s", headers=headers)
