"""The studio core shared by the API (backend/) and the workers (worker/).

Settings, the SQL schema and its migrations, database sessions, the Celery broker app (delivery
only: the API sends tasks by name, workers register them), the job/run state machine and the
leaderboard store. It imports the engine's light modules at most and never `backend` or `worker`
(tests/unit/test_imports.py holds the layer order).
"""
