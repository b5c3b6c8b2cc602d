"""The worker: the Celery app, its thin idempotent tasks (one engine step each), task counters, and the
embedded stack that runs Redis, workers and beat as processes.

May import: model, store, engine.
"""
