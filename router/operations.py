"""The client-facing operations the gateway serves, shared by routes and adapters."""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self is Operation.CHAT else "/v1/completions"
