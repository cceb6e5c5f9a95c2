"""``RequestRecord``: everything known about one client request when it ends.

The pipeline fills one in as the request goes (attempts, the answering
target, usage, timings) and hands it to the ledger exactly once, whether the
request succeeded, failed or the client went away.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from providers.base import Usage


@dataclass(slots=True)
class AttemptRecord:
    target: str  # "provider/model"
    alias: str
    outcome: str  # "ok", "skipped: <reason>", or the error reason ("status 503", "timeout", ...)
    status: int | None = None
    latency_ms: float = 0.0
    usage: Usage | None = None  # a failed attempt that consumed tokens is charged


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    operation: str
    stream: bool
    requested_models: list[str]
    started_at: float = field(default_factory=time.time)  # wall clock, for the ledger
    started_mono: float = field(default_factory=time.monotonic)
    first_token_mono: float | None = None
    upstream_started_mono: float | None = None
    ended_mono: float | None = None
    alias: str | None = None
    provider: str | None = None
    model: str | None = None
    target_key: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    status: int = 0
    error_class: str | None = None
    usage: Usage | None = None
    usage_estimated: bool = False
    client_disconnected: bool = False
    user: str | None = None
    key_id: str | None = None  # the virtual key that made the request (router/auth), never the key itself
    team: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tries(self) -> int:
        return sum(1 for a in self.attempts if not a.outcome.startswith("skipped"))

    def finish(self, status: int, error_class: str | None = None) -> None:
        if self.ended_mono is None:
            self.ended_mono = time.monotonic()
            self.status = status
            self.error_class = error_class
