"""The store: the only owner of Redis. Typed records, atomic transitions, events, and every other key
family (nodes and leases, users and tokens, keys and access rules, secrets, audit, metrics, locks).

May import: `orchestrator.model` (and `solvers.base` for Progress). Nothing outside this package touches
the Redis connection.
"""

from orchestrator.store.jobs import JobStore

__all__ = ["JobStore"]
