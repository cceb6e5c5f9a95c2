"""The client-facing operations, named where routes and adapters both see them (providers/operations.py)."""

from __future__ import annotations

from providers.operations import Operation

__all__ = ["Operation"]
