"""How accounting hooks into a Gateway: one record listener feeding the ledger and the metrics.

The listener prices each finished request once (``row_from_record``), hands
the row to the ledger's buffer and counts it in the metrics; both are
in-memory appends and increments.  The ledger's writer task starts and stops
in its own cleanup context (router/app.py), which flushes every record.
"""

from __future__ import annotations

from router.accounting.record import RequestRecord
from router.accounting.usage import row_from_record
from router.gateway import Gateway
from router.metrics import Metrics
from router.reload import Reloader


def install_accounting(gateway: Gateway, reloader: Reloader) -> Metrics:
    """Price each finished request once and hand the row to the ledger (if any) and the metrics."""
    metrics = Metrics(gateway, reloader)
    ledger = gateway.ledger

    def account(record: RequestRecord) -> None:
        row = ledger.record(record) if ledger is not None else row_from_record(record)
        metrics.observe(record, row)

    gateway.record_listeners.append(account)
    return metrics
