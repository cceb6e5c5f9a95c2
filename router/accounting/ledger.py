"""The ledger: every finished request priced once and written, in batches, off the request path.

    record listener  ->  buffer (a deque; the only work on the hot path)
                     ->  writer task: every ``flush_interval`` or ``batch_size`` rows,
                         one batch to each sink, which gets ``flush_interval`` to take it
    sink down        ->  the batch goes to that sink's journal file
    (or too slow)        (<journal_dir>/<sink>.jsonl) and is replayed, in batches,
                         every ``retry_interval`` until the sink takes it, by a
                         replay task of its own: the writer keeps journaling
    shutdown         ->  ``close()`` drains the buffer (to the sink or its journal)

The SIGKILL bound: a record is in a sink or on disk at most flush_interval
after it was answered while its sinks answer or are known to be down, and at
most 2 x ``flush_interval`` when a sink stops answering (flush_interval in the
buffer, flush_interval for the sink before the journal takes a copy; the sink
then counts as down until that write answers).  Before the replay ran as its
own task, every retry of a sink that hung (a frozen Redis) held the writer
for the sink's whole timeout, and a SIGKILL lost records answered a second
before it.

Sinks are idempotent by request id, so a replay that repeats rows (the
process died between a write and the journal's truncation) never counts
twice.  A journal left by a previous run is replayed at start-up: a graceful
restart loses nothing that was answered.  Journal file I/O runs on a worker
thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from router.accounting.record import RequestRecord
from router.accounting.sinks import Sink, SinkUnavailable, build_sink
from router.accounting.usage import UsageRow, row_from_record
from router.config import LedgerSettings

log = logging.getLogger("router.ledger")


class Journal:
    """Rows a sink could not take, one JSON line each, kept on disk until it can."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size if path.exists() else 0

    def append(self, rows: list[UsageRow]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in rows)
        with self.path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the only copy of answered requests while the sink is down
        self.size += len(data)

    def read(self) -> tuple[list[UsageRow], int]:
        """Every row, and the byte offset read up to (rows appended later start there)."""
        if not self.path.exists():
            return [], 0
        data = self.path.read_bytes()
        rows = []
        for line in data.splitlines():
            try:
                rows.append(UsageRow.from_dict(orjson.loads(line)))
            except (ValueError, TypeError):
                log.error("journal %s: skipping a line that is not a usage row (a torn write?)", self.path)
        return rows, len(data)

    def replace(self, rows: list[UsageRow], read_upto: int) -> None:
        """Keep ``rows`` (those read and still not written) and every line appended after ``read_upto``.

        Runs on the journal thread, like ``append``, so no append lands between
        reading the tail and replacing the file.
        """
        tail = b""
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(read_upto)
                tail = f.read()
        data = b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in rows) + tail
        if not data:
            self.path.unlink(missing_ok=True)
            self.size = 0
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)
        self.size = len(data)


class SinkState:
    def __init__(self, sink: Sink, journal: Journal) -> None:
        self.sink = sink
        self.journal = journal
        self.up = True
        self.written = 0  # rows newly stored by this process
        self.next_retry = 0.0
        self.held: list[UsageRow] = []  # rows neither the sink nor the journal would take
        self.replay: asyncio.Task[None] | None = None  # the journal's replay, off the writer's path
        self.late: set[asyncio.Future[int]] = set()  # writes that outlived flush_interval and still run
        self.only_slow = False  # held back because a write was slow, not because the sink failed

    @property
    def replaying(self) -> bool:
        return self.replay is not None and not self.replay.done()

    @property
    def backlog(self) -> bool:
        return bool(self.journal.size or self.held or self.replaying)


class Ledger:
    def __init__(self, settings: LedgerSettings, sinks: list[Sink] | None = None) -> None:
        self.settings = settings
        journal_dir = Path(settings.journal_dir)
        built = sinks if sinks is not None else [build_sink(s) for s in settings.sinks]
        self.sinks = [SinkState(sink, Journal(journal_dir / f"{sink.name}.jsonl")) for sink in built]
        self.buffer: deque[UsageRow] = deque()
        self.accepted = 0
        self._wake = asyncio.Event()  # a record arrived, or close()
        self._full = asyncio.Event()  # a whole batch is waiting, or close()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        # One thread for journal files: appends and rewrites stay in order.
        self._files = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-journal")

    # -- the hot path -----------------------------------------------------------

    def record(self, record: RequestRecord) -> UsageRow:
        """Price, flatten, append.  No I/O: this runs as the request ends."""
        row = row_from_record(record, self.settings.team_from_metadata)
        self.append(row)
        return row

    def append(self, row: UsageRow) -> None:
        if self._closed:
            self._late(row)
            return
        self.buffer.append(row)
        self.accepted += 1
        self._idle.clear()
        self._wake.set()
        if len(self.buffer) >= self.settings.batch_size:
            self._full.set()

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        for state in self.sinks:
            await state.sink.open()
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def close(self) -> None:
        """Flush everything (to the sinks, or their journals), then close the sinks."""
        self._closing = True
        self._wake.set()
        self._full.set()
        if self._task is not None:
            await self._task
            self._task = None
        for state in self.sinks:
            await state.sink.close()
        self._files.shutdown(wait=True)
        self._closed = True

    def _late(self, row: UsageRow) -> None:
        """A request that ended after close(): straight to the journals (the next start replays them).

        Blocking file I/O, but only during shutdown, never on a serving request's path.
        """
        for state in self.sinks:
            try:
                state.journal.append([row])
            except OSError as exc:
                log.error("ledger closed and journal %s unwritable (%s): record %s is lost", state.journal.path, exc, row.request_id)

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until every record accepted so far is in a sink or a journal, and slow writes have ended."""
        self._full.set()
        async with asyncio.timeout(timeout):
            await self._idle.wait()
            late = {write for state in self.sinks for write in state.late}
            if late:
                await asyncio.wait(late)
            # A sink that was only slow is up again with rows in its journal: those are written now too.
            while pending := [state for state in self.sinks if state.up and state.backlog]:
                for state in pending:
                    if not state.replaying:
                        state.replay = asyncio.create_task(self._replay(state), name=f"ledger-replay-{state.sink.name}")
                    assert state.replay is not None
                    await state.replay
                if all(not state.up for state in pending):
                    break

    @property
    def journal_bytes(self) -> int:
        return sum(s.journal.size for s in self.sinks)

    @property
    def pending_in_journals(self) -> bool:
        return any(s.backlog for s in self.sinks)

    def query_sink(self) -> Sink | None:
        return next((s.sink for s in self.sinks if s.sink.queryable), None)

    # -- the writer task ---------------------------------------------------------

    async def _files_call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._files, fn, *args)

    async def _pause(self, event: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass

    async def _run(self) -> None:
        await self._retry_journals()  # a journal left by the previous run goes first
        while True:
            if not self.buffer:
                if self._closing:
                    break
                self._wake.clear()
                await self._pause(self._wake, self._wait_time())
                if not self.buffer:
                    await self._retry_journals()
                    continue
                if len(self.buffer) < self.settings.batch_size and not self._closing:
                    # Let a few more records join the batch: one write for many requests.
                    self._full.clear()
                    await self._pause(self._full, self.settings.flush_interval)
            while self.buffer:
                batch = [self.buffer.popleft() for _ in range(min(len(self.buffer), self.settings.batch_size))]
                await asyncio.shield(self._deliver(batch))
            self._idle.set()
            await self._retry_journals()
        await self._retry_journals(final=True)

    def _wait_time(self) -> float:
        return self.settings.retry_interval if self.pending_in_journals else 3600.0

    async def _deliver(self, batch: list[UsageRow]) -> None:
        for state in self.sinks:
            if not state.up or state.held:
                # A sink known to be down gets no calls from the writer: new rows join its journal.
                await self._journal(state, batch)
                continue
            write = asyncio.ensure_future(state.sink.write(batch))
            try:
                # A sink that hangs (a frozen Redis) must not hold the batch in memory past the flush bound.
                done, _ = await asyncio.wait({write}, timeout=self.settings.flush_interval)
                if not done:
                    # Slow or hanging: down until the write answers (it goes on); the journal takes a copy now.
                    self._late_write(state, write)
                    self._sink_slow(state)
                    await self._journal(state, batch)
                    continue
                state.written += write.result()
                state.up = True
            except SinkUnavailable as exc:
                self._sink_down(state, exc)
                await self._journal(state, batch)
            except Exception as exc:
                log.exception("ledger sink %s failed unexpectedly; journaling the batch", state.sink.name)
                self._sink_down(state, exc)
                await self._journal(state, batch)

    def _late_write(self, state: SinkState, write: asyncio.Future[int]) -> None:
        """A write past its time goes on; the batch is journaled too (sinks are idempotent by request id).

        Not cancelled: a cancelled SQLite write still runs on its thread, and
        the rows it stores must be counted once, here, not by the replay.
        """

        def count(done: asyncio.Future[int]) -> None:
            if done.cancelled():
                return
            exc = done.exception()
            if exc is None:
                # It was only slow: up again, and its journal is replayed now rather than after retry_interval.
                state.written += done.result()
                state.up, state.next_retry = True, 0.0
                self._wake.set()
            elif isinstance(exc, Exception):
                self._sink_down(state, exc)

        state.late.add(write)
        write.add_done_callback(count)
        write.add_done_callback(state.late.discard)

    async def _journal(self, state: SinkState, rows: list[UsageRow]) -> None:
        try:
            await self._files_call(state.journal.append, rows)
        except OSError as exc:
            # Disk trouble too: keep the rows in memory rather than lose them, and say so loudly.
            log.error("ledger journal %s cannot be written (%s); holding %d records in memory", state.journal.path, exc, len(rows))
            state.held.extend(rows)

    def _sink_down(self, state: SinkState, exc: Exception) -> None:
        if state.up or state.only_slow:
            log.warning("ledger sink %s is down (%s); journaling to %s until it answers", state.sink.name, exc, state.journal.path)
        state.up, state.only_slow = False, False
        state.next_retry = time.monotonic() + self.settings.retry_interval

    def _sink_slow(self, state: SinkState) -> None:
        """A write took longer than flush_interval: its batch goes to the journal too, and so do the next
        ones until it answers.  Busy, not down (a loaded gateway's SQLite thread, say): said at info."""
        if state.up:
            log.info(
                "ledger sink %s is slow (no answer within flush_interval, %s s); journaling until its write answers",
                state.sink.name,
                self.settings.flush_interval,
            )
            state.only_slow = True
        state.up = False
        state.next_retry = time.monotonic() + self.settings.retry_interval

    async def _retry_journals(self, final: bool = False) -> None:
        now = time.monotonic()
        for state in self.sinks:
            if final:
                if state.late:
                    await asyncio.wait(state.late)  # each ends by the sink's own timeout
                if state.replay is not None:
                    await state.replay
                    state.replay = None
                if state.backlog:
                    await self._replay(state)
                if state.held:
                    log.error("ledger: %d records for sink %s could be neither written nor journaled and are lost", len(state.held), state.sink.name)
            elif state.backlog and not state.replaying and now >= state.next_retry:
                state.replay = asyncio.create_task(self._replay(state), name=f"ledger-replay-{state.sink.name}")
                state.replay.add_done_callback(self._replayed)

    def _replayed(self, task: asyncio.Task[None]) -> None:
        # Rows journaled while the replay ran are still waiting: let the writer start the next one.
        self._wake.set()

    async def _replay(self, state: SinkState) -> None:
        size = self.settings.batch_size
        try:
            while state.held:
                state.written += await state.sink.write(state.held[:size])
                del state.held[:size]
            rows: list[UsageRow]
            rows, read_upto = await self._files_call(state.journal.read)
        except SinkUnavailable as exc:
            self._sink_down(state, exc)
            return
        except Exception as exc:
            log.exception("ledger sink %s: replay failed", state.sink.name)
            self._sink_down(state, exc)
            return
        done = 0
        try:
            while done < len(rows):
                state.written += await state.sink.write(rows[done : done + size])
                done += size
        except Exception as exc:
            if not isinstance(exc, SinkUnavailable):
                log.exception("ledger sink %s failed unexpectedly during replay", state.sink.name)
            self._sink_down(state, exc)
        else:
            if not state.up:
                level = logging.INFO if state.only_slow else logging.WARNING
                log.log(level, "ledger sink %s is back; replayed %d journaled records", state.sink.name, len(rows))
            state.up, state.only_slow = True, False
            state.next_retry = 0.0
        if done:
            try:
                await self._files_call(state.journal.replace, rows[done:], read_upto)
            except OSError as exc:
                # The rows stay in the journal and will be replayed again: harmless, writes are idempotent.
                log.error("ledger journal %s cannot be rewritten: %s", state.journal.path, exc)
