"""Moved to studio/models.py; this alias only keeps benchmarks/ingest.py (another owner) working.
Remove it once that script imports studio.models."""

from studio.models import Run  # noqa: F401
