"""How accounting hooks into a Gateway: one record listener feeding the ledger and the metrics.

The listener prices each finished request once (``row_from_record``), hands
the row to the ledger's buffer and counts it in the metrics; both are
in-memory appends and increments.  The ledger's writer task starts and stops
with the gateway (its start-up and shutdown hooks), so ``Gateway.stop``
flushes every record.
"""

from __future__ import annotations

from router.accounting.ledger import Ledger
from router.accounting.record import RequestRecord
from router.accounting.usage import row_from_record
from router.gateway import Gateway
from router.metrics import Metrics


def install_accounting(gateway: Gateway) -> None:
    metrics = Metrics(gateway)
    gateway.metrics = metrics
    settings = gateway.table.ledger
    ledger = Ledger(settings) if settings is not None else None
    gateway.ledger = ledger

    def account(record: RequestRecord) -> None:
        if ledger is not None:
            row = ledger.record(record)
        else:
            row = row_from_record(record)
        metrics.observe(record, row)

    gateway.record_listeners.append(account)
    if ledger is not None:
        gateway.startup_hooks.append(ledger.start)
        gateway.shutdown_hooks.append(ledger.close)
