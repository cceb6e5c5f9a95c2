"""``AuthService``: everything access control keeps while the gateway runs, under ``gateway.auth``.

The store and the budget book follow ``state.backend``: in memory for one
instance, in Redis (the Gateway's client, with its short timeouts) for
replicas.  Settlements run as tracked background tasks, off the client's
wait, and are awaited at shutdown so no spend is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable
from typing import Any

from router.auth.budget import BudgetBook
from router.auth.store import KeyResolver, KeyStore, MemoryKeyStore, RedisKeyStore
from router.auth.throttle import FailureThrottle
from router.state.memory import MemoryStore
from router.state.store import StateStore

log = logging.getLogger("router.auth")

ADMIN_TOKEN_ENV = "ROUTER_ADMIN_TOKEN"


class AuthService:
    def __init__(self) -> None:
        self.store: KeyStore = MemoryKeyStore()
        self.book = BudgetBook(MemoryStore())  # the gateway's state store replaces it at start (use_store)
        self.resolver = KeyResolver(self.store)
        self.throttle = FailureThrottle()
        self._tasks: set[asyncio.Task[None]] = set()
        token = os.environ.get(ADMIN_TOKEN_ENV, "")
        # Kept only as a digest: comparing digests is constant-time whatever the lengths.
        self._admin_digest = hashlib.sha256(token.encode()).digest() if len(token) >= 16 else None
        if token and self._admin_digest is None:
            log.warning("%s is shorter than 16 characters; the admin API stays disabled", ADMIN_TOKEN_ENV)

    def use_redis(self, redis: Any, prefix: str) -> None:
        self.store = RedisKeyStore(redis, prefix)
        self.resolver = KeyResolver(self.store)

    def use_store(self, store: StateStore, prefix: str | None) -> None:
        """Budgets live in the state store: ``prefix`` names their Redis keys (None: in memory)."""
        self.book = BudgetBook(store, prefix.rstrip(":") + ":auth:" if prefix is not None else "")

    @property
    def admin_enabled(self) -> bool:
        return self._admin_digest is not None

    def admin_token_ok(self, presented: str | None) -> bool:
        if self._admin_digest is None or not presented:
            return False
        return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), self._admin_digest)

    def counters(self) -> dict[str, int]:
        """For /metrics: failed authentication attempts, and how many of them were slowed down."""
        return {"auth_failures_total": self.throttle.total, "auth_failures_slowed_total": self.throttle.slowed}

    def in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every pending settlement (at shutdown, and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
