"""The client-facing operations the gateway serves, shared by routes and adapters (providers import nothing from router)."""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"  # POST /v1/embeddings
