"""Opening the state: the request path's Redis client and the store over it (memory, or Redis for replicas)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError

from router.config import StateSettings
from router.state.memory import MemoryStore
from router.state.redis_store import RedisStore
from router.state.store import StateStore


def open_redis(settings: StateSettings) -> Any:
    """The request path's Redis client: a bounded pool whose exhaustion waits, never raises at once.

    Short socket timeouts: Redis trouble must fail a call quickly, never stall
    a request.  No health_check_interval: its PING would be a second round trip
    before an upstream call; the store's prober watches Redis on its own connection.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.pool_size,
        timeout=settings.pool_timeout,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        # Once, at once, and only when the connection failed (a pooled connection a restarted
        # Redis no longer knows): never after a timeout, when the script may already have run,
        # and never with redis-py's default backoff of seconds on the request path.
        retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
    )
    return aioredis.Redis.from_pool(pool)  # the client owns its pool: closing it closes the connections


def open_store(settings: StateSettings, redis_client: Any = None) -> StateStore:
    if settings.backend == "redis" and redis_client is not None:
        return RedisStore(redis_client, settings)
    return MemoryStore()
