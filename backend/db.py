"""Moved to studio/db.py; this alias only keeps benchmarks/ingest.py (another owner) working.
Remove it once that script imports studio.db."""

from studio.db import make_engine, session_scope  # noqa: F401
