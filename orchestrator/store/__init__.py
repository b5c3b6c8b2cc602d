"""The store: the only owner of Redis. Typed records, atomic transitions, events, and every other key
family (nodes and leases, users and tokens, keys and access rules, secrets, audit, metrics, locks).

May import: `orchestrator.model` (and `solvers.base` for Progress). Nothing outside this package touches
the Redis connection: `JobStore` is the façade (jobs, runs, events, nodes and sweeps as its methods; the
other families as `store.users`, `.ssh_keys`, `.access`, `.secrets`, `.audit`, `.metrics`, `.locks`, `.notify`), and
every key name is built in `store.keys`.
"""

from orchestrator.store.jobs import JobStore, StoreError

__all__ = ["JobStore", "StoreError"]
