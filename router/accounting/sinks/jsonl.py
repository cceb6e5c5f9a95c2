"""The JSONL sink: one JSON object per line, appended, for log shippers (Vector, Fluent Bit, Filebeat).

Write-only: it answers no queries.  Appends run on a worker thread.  A
replay after a failure could repeat a line, so request ids written recently
are remembered and skipped; shippers should still key on ``request_id``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from router.accounting.sinks import SinkUnavailable
from router.accounting.usage import UsageRow
from router.config import SinkSettings

REMEMBERED_IDS = 200_000


class JsonlSink:
    queryable = False

    def __init__(self, settings: SinkSettings) -> None:
        self.name = settings.name
        self.path = Path(settings.path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ledger-{self.name}")
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def open(self) -> None:
        pass

    def _append(self, lines: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(lines)

    async def write(self, rows: list[UsageRow]) -> int:
        fresh = [r for r in rows if r.request_id not in self._seen]
        if not fresh:
            return 0
        data = b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in fresh)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._append, data)
        except OSError as exc:
            raise SinkUnavailable(f"jsonl sink {self.path}: {exc.strerror or exc}") from exc
        for row in fresh:
            self._seen[row.request_id] = None
        while len(self._seen) > REMEMBERED_IDS:
            self._seen.popitem(last=False)
        return len(fresh)

    async def query(self, start: float, end: float, group_by: list[str]) -> list[dict[str, Any]]:
        raise NotImplementedError("the jsonl sink is write-only; query the sqlite, redis or postgres sink")

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
