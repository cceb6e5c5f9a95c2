"""What each request used and cost: records, prices, the ledger and its sinks."""
