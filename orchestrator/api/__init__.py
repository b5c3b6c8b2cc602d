"""The REST API: the engine over HTTP for many users, with the admin task monitor and /metrics.

May import: control (every operation goes through the control surface), model, the worker's Celery app, and the
store (to open it and authenticate tokens).
Never the engine or a cluster backend, and never the CLI.
"""
