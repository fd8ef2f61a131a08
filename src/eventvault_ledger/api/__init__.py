"""The ledger's HTTP API (FastAPI)."""
