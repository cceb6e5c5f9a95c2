"""Every error the gateway can show a client, and the one place that renders it.

    GatewayError                      500 api_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── BodyTooLarge              413
    │   ├── UnknownModel              404 model_not_found
    │   ├── OverPriceCeiling          400 price_ceiling_exceeded (every candidate above max_price)
    │   ├── ConfigRejected            422 invalid_config (POST /admin/reload with a file `check` refuses)
    │   ├── NotFound                  404 not_found (an admin API object that does not exist)
    │   └── Conflict                  409 conflict (an admin change the current state forbids)
    ├── AuthenticationFailed          401 authentication_error
    ├── PermissionDenied              403 permission_error
    ├── RateLimited                   429 rate_limit_error
    ├── BudgetExceeded                402 insufficient_quota budget_exceeded (says when it resets)
    ├── AuthUnavailable               503 the key store did not answer (fail closed)
    ├── UpstreamError                 one attempt at one target went wrong
    │   ├── UpstreamConnectError      refused, reset, DNS: retryable
    │   ├── UpstreamTimeout           connect/read/total timeout: retryable
    │   ├── UpstreamStatusError       non-2xx answer; retryable for 408/429/5xx/401/403
    │   │   └── UpstreamClientError   400/404/413/422: the caller's fault, returned as is
    │   └── UpstreamProtocolError     answer we could not read: retryable
    ├── TargetUnavailable             skipped before any I/O (circuit open, cooldown, over limit)
    ├── LedgerNotConfigured           404 /v1/usage on a gateway with no queryable sink
    ├── LedgerUnavailable             503 the usage sink did not answer a query
    └── AllCandidatesFailed           502/503/504 with one line per attempt

Each class knows its HTTP status, its OpenAI error ``type`` and whether a retry
could help.  ``to_body`` is the only path from an exception to bytes a client
sees, and it never includes a provider secret: upstream messages are scrubbed
by ``router.secrets`` before they are wrapped here.
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None
    retryable: bool = False

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


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ConfigRejected(InvalidRequest):
    status = 422
    code = "invalid_config"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class NotFound(InvalidRequest):
    status = 404
    code = "not_found"


class Conflict(InvalidRequest):
    status = 409
    code = "conflict"


class UnknownModel(InvalidRequest):
    status = 404
    code = "model_not_found"


class OverPriceCeiling(InvalidRequest):
    code = "price_ceiling_exceeded"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(GatewayError):
    """402, not 429: SDKs retry a 429 at once, and a spent budget does not come back in seconds."""

    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"


class AuthUnavailable(GatewayError):
    status = 503
    code = "auth_unavailable"


class UpstreamError(GatewayError):
    """One attempt failed.  ``reason`` is a short phrase for traces and logs."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True
    reason = "error"
    retry_after: float | None = None


class UpstreamConnectError(UpstreamError):
    reason = "connect"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    reason = "timeout"


class UpstreamProtocolError(UpstreamError):
    reason = "protocol"


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


class UpstreamClientError(UpstreamStatusError):
    """A 4xx that is the caller's fault: shown to the client with the upstream's status."""

    type = "invalid_request_error"
    retryable = False

    def __init__(self, upstream_status: int, message: str, *, body: dict[str, Any] | None = None) -> None:
        super().__init__(upstream_status, message, body=body)
        self.status = upstream_status
        self.retryable = False
        if body and isinstance(body.get("error"), dict):
            err = body["error"]
            self.param = err.get("param") if isinstance(err.get("param"), str) else None
            if isinstance(err.get("code"), str):
                self.code = err["code"]
            if isinstance(err.get("type"), str):
                self.type = err["type"]
        else:
            self.code = "upstream_rejected"


class TargetUnavailable(GatewayError):
    """A candidate skipped before any I/O; never reaches a client on its own."""

    status = 503
    type = "upstream_error"
    retryable = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LedgerNotConfigured(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "ledger_not_configured"


class LedgerUnavailable(GatewayError):
    status = 503
    code = "ledger_unavailable"


class AllCandidatesFailed(GatewayError):
    type = "upstream_error"
    code = "all_upstreams_failed"

    def __init__(self, status: int, lines: list[str], *, headers: dict[str, str] | None = None) -> None:
        message = "every upstream failed: " + "; ".join(lines) if lines else "no upstream could be tried"
        super().__init__(message, headers=headers)
        self.status = status
        self.lines = lines


def status_for_failures(errors: list[GatewayError]) -> int:
    """502 by default; 504 when every attempt timed out; 503 when all were capacity refusals."""
    if not errors:
        return 503
    if all(isinstance(e, UpstreamTimeout) for e in errors):
        return 504
    if all(isinstance(e, TargetUnavailable) or (isinstance(e, UpstreamStatusError) and e.upstream_status in (429, 503)) for e in errors):
        return 503
    return 502
