"""Read-only reports over the ledger and the runs: plain functions, each returning a frozen dataclass."""
