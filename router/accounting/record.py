"""``RequestRecord``: everything known about one client request when it ends.

The pipeline fills one in as the request goes (attempts, the answering
target, usage, timings) and hands it to the ledger exactly once, whether the
request succeeded, failed or the client went away.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.base import Usage
from router.config import Price


@dataclass(slots=True)
class AttemptRecord:
    target: str  # "provider/model"
    alias: str
    outcome: str  # "ok", "skipped: <reason>", or the error reason ("status 503", "timeout", ...)
    status: int | None = None
    latency_ms: float = 0.0
    usage: Usage | None = None  # a failed attempt that consumed tokens is charged
    price: Price | None = None  # the target's price when the attempt was made


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
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tries(self) -> int:
        return sum(1 for a in self.attempts if not a.outcome.startswith("skipped"))

    def finish(self, status: int, error_class: str | None = None) -> None:
        if self.ended_mono is None:
            self.ended_mono = time.monotonic()
            self.status = status
            self.error_class = error_class


# Bounds on what a client can attach, so a record (and the ledger) stays small.
MAX_METADATA_KEYS = 32
MAX_METADATA_CHARS = 256
METADATA_HEADER = "x-router-metadata-"
TAGS_HEADER = "x-router-tags"


def request_metadata(body_metadata: dict[str, str], headers: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The request's attribution: its ``metadata`` object plus ``x-router-metadata-*`` headers, and its tags.

    A header wins over a body field of the same name (a proxy in front of the
    client can then set attribution the client cannot override).  ``x-router-tags``
    is a comma-separated list; a tag ``key:value`` also sets metadata ``key``.
    """
    metadata: dict[str, str] = {}
    for key, value in body_metadata.items():
        if isinstance(value, str):
            metadata[str(key)[:MAX_METADATA_CHARS]] = value[:MAX_METADATA_CHARS]
    tags: list[str] = []
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(METADATA_HEADER) and len(lower) > len(METADATA_HEADER):
            metadata[lower[len(METADATA_HEADER) :][:MAX_METADATA_CHARS]] = value[:MAX_METADATA_CHARS]
        elif lower == TAGS_HEADER:
            for tag in value.split(","):
                tag = tag.strip()[:MAX_METADATA_CHARS]
                if not tag:
                    continue
                tags.append(tag)
                key, sep, tag_value = tag.partition(":")
                if sep and key and tag_value:
                    metadata.setdefault(key, tag_value)
    if len(metadata) > MAX_METADATA_KEYS:
        metadata = dict(list(metadata.items())[:MAX_METADATA_KEYS])
    return metadata, tags[:MAX_METADATA_KEYS]
