"""Every error the gateway can show a client, and the one place that renders it.

    GatewayError                      500 api_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── BodyTooLarge              413
    │   ├── BodyTimeout               408 request_timeout (a body sent slower than server.body_timeout)
    │   ├── UnknownModel              404 model_not_found
    │   ├── NativeOnly                400 needs_native_target (only a target speaking the client's API can take it)
    │   ├── OverPriceCeiling          400 price_ceiling_exceeded (every candidate above max_price)
    │   ├── ConfigRejected            422 invalid_config (POST /admin/reload with a file `check` refuses)
    │   ├── NotFound                  404 not_found (an admin API object that does not exist)
    │   └── Conflict                  409 conflict (an admin change the current state forbids)
    ├── AuthenticationFailed          401 authentication_error
    ├── PermissionDenied              403 permission_error
    ├── RateLimited                   429 rate_limit_error
    │   └── UpstreamsRateLimited      every candidate refused for rate: Retry-After when the soonest frees up
    ├── BudgetExceeded                402 insufficient_quota budget_exceeded (says when it resets)
    ├── AuthUnavailable               503 the key store did not answer (fail closed)
    ├── UpstreamError                 one attempt at one target went wrong
    │   ├── UpstreamConnectError      refused, reset, DNS: retryable
    │   ├── UpstreamTimeout           timeouts.total or the request's deadline: retryable
    │   │   ├── UpstreamConnectTimeout    timeouts.connect
    │   │   ├── FirstTokenTimeout         timeouts.first_token: the next candidate is tried
    │   │   └── StreamStalled             timeouts.idle mid-stream
    │   ├── UpstreamStatusError       non-2xx answer; retryable for 408/429/5xx/401/403
    │   │   └── UpstreamClientError   400/404/413/422: the caller's fault, returned as is
    │   ├── UpstreamStreamError       an error event in a stream
    │   └── UpstreamProtocolError     answer we could not read: retryable
    │       └── UpstreamTooLarge      a whole answer over server.max_response_bytes (502 response_too_large)
    ├── TargetUnavailable             skipped before any I/O (circuit open, cooldown, over limit)
    ├── LedgerNotConfigured           404 /v1/usage on a gateway with no queryable sink
    ├── LedgerUnavailable             503 the usage sink did not answer a query
    ├── AllCandidatesFailed           502/503/504 with one line per attempt
    └── Overloaded                    503 overloaded (server.max_in_flight in hand), Retry-After: 1

Each class states its row of the error table in its header, as data: its
HTTP status, its OpenAI error ``type`` and ``code``, whether a retry could
help (``retryable``), which ``retry.on`` kind it is (``retry_on``: connect,
timeout, 429, 5xx, or None when the same target is not worth another try) and
what it does to the target's health (``health``).  ``retry.py``, the routing
engine, the health checks and the ledger read these fields; none classifies
an exception itself.  ``upstream_status_error`` is the one mapping from an
upstream's HTTP status to an error.  ``to_body`` is the only path from an
exception to bytes a client sees, and it never includes a provider secret:
upstream messages are scrubbed by ``router.secrets`` before they are wrapped
here.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from router.outcome import HealthEffect

_TABLE_FIELDS = ("status", "type", "code", "retryable", "retry_on", "health", "reason", "closes_connection")


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None
    retryable: bool = False
    retry_on: str | None = None  # the retry.on kind that may retry the same target; None: never
    health: HealthEffect = HealthEffect.NEUTRAL  # a gateway-side error says nothing about the target
    reason: str = "error"  # a short phrase for traces and logs
    retry_after: float | None = None  # seconds the upstream asked us to wait
    throttled: bool = False  # refused for rate (a 429, a cooldown, a limit): frees up by itself after retry_after
    closes_connection: bool = False  # the answer ends the client's connection (it may still be sending)

    def __init_subclass__(cls, **data: Any) -> None:
        """A subclass states its row of the error table in its header: ``class X(GatewayError, status=404, code="...")``."""
        for name, value in data.items():
            if name not in _TABLE_FIELDS:
                raise TypeError(f"{cls.__name__}: {name!r} is not a field of the error table ({', '.join(_TABLE_FIELDS)})")
            setattr(cls, name, value)
        super().__init_subclass__()

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_body(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequest(GatewayError, status=400, type="invalid_request_error", code="invalid_request"):
    """The client's request is wrong; the message names the field."""


class NativeOnly(InvalidRequest, code="needs_native_target"):
    """Valid in the API the client called, but only a target that speaks that API itself can take it (a Responses
    ``previous_response_id``, an Anthropic document block): the others are skipped; with none left, this 400."""


class ConfigRejected(InvalidRequest, status=422, code="invalid_config"):
    """POST /admin/reload with a file `check` refuses."""


class BodyTooLarge(InvalidRequest, status=413, code="request_too_large"):
    """The body is over server.max_body_bytes."""


class NotFound(InvalidRequest, status=404, code="not_found"):
    """An admin API object that does not exist."""


class Conflict(InvalidRequest, status=409, code="conflict"):
    """An admin change the current state forbids."""


class UnknownModel(InvalidRequest, status=404, code="model_not_found"):
    """No alias serves this model name; the message lists those that exist."""


class OverPriceCeiling(InvalidRequest, code="price_ceiling_exceeded"):
    """Every candidate is above the request's max_price."""


class AuthenticationFailed(GatewayError, status=401, type="authentication_error", code="invalid_api_key"):
    """A missing, malformed, unknown or revoked key (all answered alike)."""


class PermissionDenied(GatewayError, status=403, type="permission_error", code="permission_denied"):
    """A known key that may not do this (an alias it may not use, an expired key)."""


class RateLimited(GatewayError, status=429, type="rate_limit_error", code="rate_limit_exceeded"):
    """A key's or team's rpm, tpm or concurrency is used up; Retry-After says when."""


class BudgetExceeded(GatewayError, status=402, type="insufficient_quota", code="budget_exceeded"):
    """402, not 429: SDKs retry a 429 at once, and a spent budget does not come back in seconds."""


class AuthUnavailable(GatewayError, status=503, code="auth_unavailable"):
    """The key or budget store did not answer: fail closed."""


class UpstreamError(GatewayError, status=502, type="upstream_error", code="upstream_error", retryable=True, retry_on="5xx", health=HealthEffect.FAIL):
    """One attempt failed.  ``reason`` is a short phrase for traces and logs."""


class UpstreamConnectError(UpstreamError, reason="connect", retry_on="connect"):
    """Refused, reset, DNS: another try may reach it."""


class UpstreamTimeout(UpstreamError, status=504, code="upstream_timeout", reason="timeout", retry_on="timeout"):
    """A timeout of the upstream call (timeouts.total, or the request's retry.deadline)."""


class UpstreamConnectTimeout(UpstreamTimeout, reason="connect timeout"):
    """No connection within timeouts.connect."""


class FirstTokenTimeout(UpstreamTimeout, reason="first token timeout"):
    """No first stream event (or whole answer's headers) within timeouts.first_token: the next candidate is tried."""


class StreamStalled(UpstreamTimeout, reason="idle timeout"):
    """A stream silent for longer than timeouts.idle after it began: broken, too late to fail over."""


class UpstreamProtocolError(UpstreamError, reason="protocol"):
    """An answer we could not read: retried like a 5xx."""


class UpstreamStreamError(UpstreamError, reason="error event"):
    """An upstream stream sent an ``{"error": ...}`` event: before the first byte the next candidate is tried, after it the stream is broken."""


class UpstreamTooLarge(UpstreamProtocolError, code="response_too_large", reason="response too large"):
    """A whole answer over server.max_response_bytes: read no further, the next candidate is tried."""


class BodyTimeout(InvalidRequest, status=408, code="request_timeout", closes_connection=True):
    """The client sent its body slower than server.body_timeout allows."""


# Statuses where another target (or a later try) may well succeed.  401/403
# mean *our* provider key is wrong, so another provider is worth a try; the
# caller cannot fix it either way.
RETRYABLE_STATUSES = frozenset({401, 403, 408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
CALLER_FAULT_STATUSES = frozenset({400, 404, 413, 415, 422})


class UpstreamStatusError(UpstreamError):
    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retryable = upstream_status in RETRYABLE_STATUSES or upstream_status >= 500
        self.retry_after = retry_after
        self.body = body
        self.reason = f"status {upstream_status}"
        # 401/403/408/409: another target, not this one again.
        self.retry_on = "429" if upstream_status == 429 else "5xx" if upstream_status >= 500 else None
        self.throttled = upstream_status == 429 or (upstream_status == 503 and retry_after is not None)
        self.health = HealthEffect.THROTTLE if self.throttled else HealthEffect.FAIL


class UpstreamClientError(UpstreamStatusError, type="invalid_request_error"):
    """A 4xx that is the caller's fault: shown to the client with the upstream's status."""

    def __init__(self, upstream_status: int, message: str, *, body: dict[str, Any] | None = None) -> None:
        super().__init__(upstream_status, message, body=body)
        self.status = upstream_status
        self.retryable = False
        self.retry_on = None
        self.health = HealthEffect.NEUTRAL  # the caller's mistake says nothing about the target
        if body and isinstance(body.get("error"), dict):
            err = body["error"]
            self.param = err.get("param") if isinstance(err.get("param"), str) else None
            if isinstance(err.get("code"), str):
                self.code = err["code"]
            if isinstance(err.get("type"), str):
                self.type = err["type"]
        else:
            self.code = "upstream_rejected"


class TargetUnavailable(GatewayError, status=503, type="upstream_error", retryable=True):
    """A candidate skipped before any I/O; never reaches a client on its own."""

    def __init__(self, reason: str, *, throttled: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.throttled = throttled
        self.retry_after = retry_after


def upstream_status_error(
    provider: str, status: int, message: str, *, retry_after: float | None = None, body: dict[str, Any] | None = None
) -> UpstreamStatusError:
    """The one mapping from an upstream's non-2xx status to an error: the caller's fault, or the target's."""
    if status in CALLER_FAULT_STATUSES:
        return UpstreamClientError(status, f"{provider} rejected the request: {message}", body=body)
    return UpstreamStatusError(status, f"{provider} answered {status}: {message}", retry_after=retry_after)


class LedgerNotConfigured(GatewayError, status=404, type="invalid_request_error", code="ledger_not_configured"):
    """/v1/usage on a gateway with no queryable sink."""


class LedgerUnavailable(GatewayError, status=503, code="ledger_unavailable"):
    """The usage sink did not answer a query."""


class AllCandidatesFailed(GatewayError, type="upstream_error", code="all_upstreams_failed"):
    """Every candidate failed or was skipped; the message has one line per attempt."""

    def __init__(self, status: int, lines: list[str], *, headers: dict[str, str] | None = None) -> None:
        message = "every upstream failed: " + "; ".join(lines) if lines else "no upstream could be tried"
        super().__init__(message, headers=headers)
        self.status = status
        self.lines = lines


class UpstreamsRateLimited(RateLimited):
    """Every candidate was refused for rate (429s, cooldowns, quotas, limits): Retry-After is when the soonest frees up,
    so an SDK's rate-limit handling (openai.RateLimitError and its retry) takes over."""

    def __init__(self, lines: list[str], wait: float, *, headers: dict[str, str]) -> None:
        seconds = max(1, math.ceil(wait))
        headers = {**headers, "Retry-After": str(seconds), "retry-after-ms": str(max(1, round(wait * 1000)))}
        super().__init__(f"every upstream is rate limited; the soonest frees up in {seconds} s: " + "; ".join(lines), headers=headers)
        self.lines = lines


def all_failed(errors: list[GatewayError], lines: list[str], headers: dict[str, str]) -> GatewayError:
    """What the client hears when no candidate answered: 429 when every one was refused for rate, else 502/503/504."""
    if errors and all(e.throttled for e in errors):
        wait = min((e.retry_after for e in errors if e.retry_after is not None), default=1.0)
        return UpstreamsRateLimited(lines, wait, headers=headers)
    return AllCandidatesFailed(status_for_failures(errors), lines, headers=headers)


def status_for_failures(errors: list[GatewayError]) -> int:
    """502 by default; 504 when every attempt timed out; 503 when all were capacity refusals."""
    if not errors:
        return 503
    if all(isinstance(e, UpstreamTimeout) for e in errors):
        return 504
    if all(isinstance(e, TargetUnavailable) or (isinstance(e, UpstreamStatusError) and e.upstream_status in (429, 503)) for e in errors):
        return 503
    return 502


class Overloaded(GatewayError, status=503, type="server_error", code="overloaded"):
    """This process already has ``server.max_in_flight`` requests in hand: answered at once, never queued."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})
