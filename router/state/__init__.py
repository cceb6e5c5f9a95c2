"""Shared routing state: the ``StateStore`` interface, its in-memory and Redis implementations, the limiter.

store.py        the interface and the values that cross it
limiter.py      sliding-window rpm/tpm + in-flight leases over any scope string
                (routing uses target:/account:, access control reuses it for key:/team:)
memory.py       one process (the default)
redis_store.py  any number of replicas, Lua scripts, falls back to memory when Redis is out
"""

from __future__ import annotations

from typing import Any

from router.config import StateSettings
from router.state.store import StateStore


def open_store(settings: StateSettings, redis_client: Any = None) -> StateStore:
    if settings.backend == "redis" and redis_client is not None:
        from router.state.redis_store import RedisStore

        return RedisStore(redis_client, settings)
    from router.state.memory import MemoryStore

    return MemoryStore()
