"""``llm-router ledger migrate``: bring every postgres sink's schema up to this gateway's version.

The gateway migrates at start too; this is for a deploy step that runs the
migration once, before the replicas roll (and with its own, more privileged
DSN if the gateway's may not create tables).  Safe to run twice, and on
several machines at once (a migration takes an advisory lock).
"""

from __future__ import annotations

import sys

from router.accounting.sinks import SinkUnavailable
from router.accounting.sinks.postgres import PostgresSink
from router.config import RouteTable


async def migrate(table: RouteTable) -> int:
    sinks = [s for s in (table.ledger.sinks if table.ledger else ()) if s.kind == "postgres"]
    if not sinks:
        print(f"{table.source}: no postgres sink under 'ledger:'; nothing to migrate", file=sys.stderr)
        return 1
    failed = 0
    for settings in sinks:
        sink = PostgresSink(settings)
        try:
            before, after = await sink.migrate()
        except SinkUnavailable as exc:
            print(f"llm-router ledger migrate: {exc}", file=sys.stderr)
            failed += 1
            continue
        finally:
            await sink.close()
        change = f"{before} -> {after}" if after != before else f"{after}, up to date"
        print(f"{sink.where}: schema version {change}")
    return 1 if failed else 0
