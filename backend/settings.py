"""Moved to studio/settings.py; this alias only keeps benchmarks/ingest.py (another owner) working.
Remove it once that script imports studio.settings."""

from studio.settings import Settings  # noqa: F401
