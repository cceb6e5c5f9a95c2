"""The coalescer: every Redis command the state store sends in one event-loop turn goes out as one pipeline.

Under load many requests reach the store in the same loop turn (admits,
releases, reports, settles, snapshot reads).  One ``pipeline(transaction=False)``
carrying all of them costs one connection, one write and one round trip
instead of one of each per command, so a small pool serves many callers.

    send(command, *args) -> Future   queue a raw command (MGET, PING, ...)
    evalsha(script, keys, args)      queue a script call by its SHA

The batch is flushed by a callback scheduled with ``call_soon`` when its
first command arrives: it runs after every task woken in the same turn has
had its chance to join.  ``execute(raise_on_error=False)`` gives each command
its own reply or error, so a failure fails only its caller; a script Redis
does not know (restarted or flushed: ``NoScriptError``) is loaded once and
just those commands are sent again.  A connection-level error (reset,
timeout, no connection from the pool in time) fails every command of that
pipeline: some may have run, which is why the store makes its writes
idempotent by lease (see ``redis_store.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

from router.state.store import BackgroundTasks

MAX_BATCH = 512  # commands per pipeline: bounds one reply parse, keeps a burst from becoming one huge write


@dataclass(slots=True)
class Script:
    """A Lua script sent by SHA; ``source`` reloads it when Redis has forgotten it."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


@dataclass(slots=True)
class _Command:
    args: tuple[Any, ...]
    script: Script | None
    future: asyncio.Future[Any]


class Pipeliner:
    def __init__(self, client: Any, tasks: BackgroundTasks) -> None:
        self.client = client
        self._queue: list[_Command] = []
        self._tasks = tasks  # the store's: draining the store waits for the pipelines in flight
        self.pipelines = 0  # sent, for tests and metrics: how well calls coalesce
        self.commands = 0

    def send(self, *args: Any) -> asyncio.Future[Any]:
        return self._enqueue(args, None)

    def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        return self._enqueue(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    def _enqueue(self, args: tuple[Any, ...], script: Script | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Command(args, script, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return future

    @property
    def pending(self) -> int:
        """Commands queued for the next flush (it runs at the end of this loop turn)."""
        return len(self._queue)

    def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            self._tasks.spawn(self._run(batch), "state pipeline")

    async def _run(self, batch: list[_Command]) -> None:
        try:
            replies = await self._execute(batch)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                for script in {id(s): s for i in missing if (s := batch[i].script) is not None}.values():
                    await self.client.script_load(script.source)
                again = await self._execute([batch[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except BaseException as exc:  # the connection failed: every caller of this pipeline learns it
            for command in batch:
                if not command.future.done():
                    command.future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for command, reply in zip(batch, replies, strict=True):
            if command.future.done():
                continue
            if isinstance(reply, BaseException):
                command.future.set_exception(reply)
            else:
                command.future.set_result(reply)

    async def _execute(self, batch: list[_Command]) -> list[Any]:
        self.pipelines += 1
        self.commands += len(batch)
        async with self.client.pipeline(transaction=False) as pipe:
            for command in batch:
                pipe.execute_command(*command.args)
            return list(await pipe.execute(raise_on_error=False))
