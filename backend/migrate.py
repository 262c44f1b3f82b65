"""Moved to studio/migrate.py; this alias only keeps benchmarks/ingest.py (another owner) working.
Remove it once that script imports studio.migrate."""

from studio.migrate import upgrade_database  # noqa: F401
