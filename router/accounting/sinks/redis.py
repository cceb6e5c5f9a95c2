"""The Redis sink: a capped stream of records plus per-day roll-up counters, for many replicas.

Keys, under ``<prefix>:usage:``:

    stream                  XADD of each row as JSON, trimmed to ``maxlen`` and ``max_age_days``
    day:<YYYY-MM-DD>        hash of counters "<field>|<team>|<alias>|<provider>|<model>" -> sum,
                            kept ``rollup_days``
    seen:<request id>       set once per request, kept ``dedupe_days``; a replay finds it and
                            adds nothing (journals are replayed within seconds of the sink's
                            return, so a week is ample and keeps Redis memory bounded)

One Lua script per row makes "seen? then append and count" atomic, so a
replayed batch never counts twice; a batch is one pipelined round trip.
Queries read the stream over the window and group in Python; the day
hashes are there for cheap dashboards that only need daily totals.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router.accounting.sinks import SinkUnavailable
from router.accounting.usage import SUM_FIELDS, UsageRow, aggregate, check_group_by
from router.config import SinkSettings

_RECORD_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'row', ARGV[3])
  for i = 5, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  redis.call('EXPIRE', KEYS[3], ARGV[4])
  return 1
end
return 0
"""
ROLLUP_FIELDS = ("requests", *SUM_FIELDS)


def rollup_key(row: UsageRow) -> str:
    return "|".join(v or "" for v in (row.team, row.alias, row.provider, row.model))


class RedisSink:
    queryable = True

    def __init__(self, settings: SinkSettings) -> None:
        self.name = settings.name
        self.settings = settings
        self.base = f"{settings.prefix}:usage:"
        self.stream_key = self.base + "stream"
        self._client: Any = None
        self._script: Any = None

    async def open(self) -> None:
        s = self.settings
        self._client = aioredis.from_url(s.url, socket_timeout=s.timeout, socket_connect_timeout=s.timeout)
        self._script = self._client.register_script(_RECORD_ONCE)

    async def write(self, rows: list[UsageRow]) -> int:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                results = await self._queue_rows(pipe, rows)
            # Age cap: drop stream entries older than max_age_days (IDs are arrival times in ms).
            max_age = self.settings.max_age_days * 86400
            await self._client.xtrim(self.stream_key, minid=int((time.time() - max_age) * 1000), approximate=True)
        except (RedisError, OSError) as exc:
            raise SinkUnavailable(f"redis sink {self.name}: {exc}") from exc
        return sum(int(r) for r in results)

    async def _queue_rows(self, pipe: Any, rows: list[UsageRow]) -> list[Any]:
        dedupe_ttl, rollup_ttl = self.settings.dedupe_days * 86400, self.settings.rollup_days * 86400
        for row in rows:
            group = rollup_key(row)
            counters: list[Any] = []
            for name in ROLLUP_FIELDS:
                value = 1 if name == "requests" else getattr(row, name)
                if value:
                    counters += [f"{name}|{group}", value]
            await self._script(
                keys=[self.base + "seen:" + row.request_id, self.stream_key, self.base + "day:" + row.day],
                args=[dedupe_ttl, self.settings.maxlen, orjson.dumps(row.to_dict()), rollup_ttl, *counters],
                client=pipe,
            )
        return list(await pipe.execute())

    async def rows(self, start: float, end: float) -> list[UsageRow]:
        out: list[UsageRow] = []
        # A row is appended after its request started, so its ID is never below start.
        cursor = str(int(start * 1000))
        try:
            while True:
                batch = await self._client.xrange(self.stream_key, min=cursor, max="+", count=1000)
                if not batch:
                    break
                for _, entry in batch:
                    row = UsageRow.from_dict(orjson.loads(entry[b"row"]))
                    if start <= row.started_at < end:
                        out.append(row)
                last_id = batch[-1][0].decode()
                cursor = "(" + last_id
        except (RedisError, OSError) as exc:
            raise SinkUnavailable(f"redis sink {self.name}: {exc}") from exc
        return out

    async def query(self, start: float, end: float, group_by: list[str]) -> list[dict[str, Any]]:
        return aggregate(await self.rows(start, end), check_group_by(group_by))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
