"""The store's key families on fakeredis: each family's methods, and the exact key names existing data uses."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import fakeredis
import fakeredis.aioredis
import pytest

import orchestrator.store.events_async as events_async
import orchestrator.store.metrics as metrics_module
from orchestrator.model.errors import NotFound, UserError
from orchestrator.model.events import EventKind
from orchestrator.model.states import JobState
from orchestrator.store import StoreError
from orchestrator.store.keys import CELERY_PRIORITY_SEP, KeyNames
from orchestrator.store.users import hash_token
from orchestrator.worker import task_stats


def new_job(store, owner: str = "alice") -> str:
    return store.create_job(name="j", owner=owner, spec={"name": "j"}, backend="local", solver="command")


def raw_keys(store) -> set[str]:
    return set(store._r.keys("*"))


# -- key names: one place, and exactly the names stored data already has

def test_key_names_are_the_stored_ones():
    k = KeyNames("e2e")
    assert k.job("ab12") == "e2e:job:{ab12}" and k.run("ab12", "run-001") == "e2e:job:{ab12}:run:run-001"
    assert k.events("ab12") == "e2e:job:{ab12}:events" and k.revisions("ab12") == "e2e:job:{ab12}:revisions"
    assert (k.jobs, k.active, k.seq, k.queue) == ("e2e:jobs", "e2e:jobs:active", "e2e:seq", "e2e:queue")
    assert k.owned("ann") == "e2e:owner:ann"
    assert k.pool("local") == "e2e:nodes:local" and k.drained("local") == "e2e:nodes:local:drained"
    assert k.pool_backend("e2e:nodes:ssh") == "ssh" and k.pool_backend("e2e:nodes:ssh:drained") is None
    assert k.inventory("ssh") == "e2e:nodes:ssh:inventory" and k.pool_backend(k.inventory("ssh")) is None
    assert k.leftovers == "e2e:leftovers" and k.sweep("s1") == "e2e:sweep:s1" and k.sweeps == "e2e:sweeps"
    assert (k.account("ann"), k.token("d1"), k.account_tokens("ann")) == (
        "e2e:account:ann", "e2e:token:d1", "e2e:account-tokens:ann")
    assert k.ssh_keys("ann") == "e2e:user:ann:ssh-keys" and k.access("ann") == "e2e:user:ann:access"
    assert k.desktop_secret("ab12") == "e2e:job:{ab12}:desktop-secret"
    assert k.audit == "e2e:audit"
    assert k.task_totals == "e2e:celery:tasks" and k.task_minute(7) == "e2e:celery:minute:7"
    assert (k.control_cursor, k.control_latency, k.control_fold_lock) == (
        "e2e:metrics:control-cursor", "e2e:metrics:control-latency", "e2e:metrics:fold-lock")
    assert k.reconcile_lock == "e2e:lock:reconcile" and k.desktop_lock("ab12") == "e2e:lock:desktop:ab12"
    assert k.sync_forward_lock("ab12") == "e2e:sync:{ab12}:lock"
    assert k.sync_forward_offset("ab12") == "e2e:sync:{ab12}:offset"
    assert k.celery_queue("e2e.jobs") == "e2e.jobs"
    assert k.celery_queue("e2e.jobs", 3) == f"e2e.jobs{CELERY_PRIORITY_SEP}3"
    assert KeyNames("t1").job("x") == "t1:job:{x}"


def test_the_connection_is_private(store):
    assert not hasattr(store, "r")
    assert not hasattr(store, "events_key")


# -- users and tokens

def test_users_create_authenticate_revoke_and_list(store):
    token = store.users.create("ann", admin=True)
    assert {"e2e:account:ann", f"e2e:token:{hash_token(token)}", "e2e:account-tokens:ann"} <= raw_keys(store)
    assert token not in json.dumps(store._r.hgetall(f"e2e:token:{hash_token(token)}"))
    assert store.users.authenticate(token).name == "ann" and store.users.authenticate(token).admin
    assert store.users.authenticate("nope") is None and store.users.authenticate(None) is None
    second = store.users.issue("ann", "laptop")
    assert store.users.list() == [{"name": "ann", "admin": True, "os_user": "", "tokens": 2}]
    assert store.users.revoke(token) == "ann" and store.users.authenticate(token) is None
    assert store.users.revoke_all("ann") == 1 and store.users.authenticate(second) is None
    assert store.users.get("ann").admin  # the user stays
    with pytest.raises(NotFound):
        store.users.get("bob")
    with pytest.raises(UserError, match="exists already"):
        store.users.create("ann")


# -- ssh keys and access rules

def test_ssh_keys_are_a_hash_per_user(store):
    store.ssh_keys.put("ann", "SHA256:a", {"type": "ssh-ed25519", "added_at": 1.0})
    store.ssh_keys.put("ann", "SHA256:b", {"type": "ssh-rsa", "added_at": 2.0})
    assert store._r.hkeys("e2e:user:ann:ssh-keys") == ["SHA256:a", "SHA256:b"]
    assert store.ssh_keys.all("ann")["SHA256:b"] == {"type": "ssh-rsa", "added_at": 2.0}
    assert store.ssh_keys.all("bob") == {}
    assert store.ssh_keys.delete("ann", "SHA256:a", "SHA256:zz") == 1
    assert store.ssh_keys.delete("ann") == 0
    assert list(store.ssh_keys.all("ann")) == ["SHA256:b"]


def test_access_rules_per_user(store):
    assert store.access.rules("ann") is None
    store.access.set_rules("ann", ["192.0.2.0/24", "my-ip"])
    assert json.loads(store._r.get("e2e:user:ann:access")) == ["192.0.2.0/24", "my-ip"]
    assert store.access.rules("ann") == ["192.0.2.0/24", "my-ip"] and store.access.rules("bob") is None
    store.access.set_rules("ann", None)
    assert store.access.rules("ann") is None and "e2e:user:ann:access" not in raw_keys(store)


def test_client_address_from_client_info(store, monkeypatch):
    monkeypatch.setattr(store._r, "client_info", lambda: {"addr": "[::ffff:10.0.0.1]:5000"})
    assert store.client_address() == "10.0.0.1"
    monkeypatch.setattr(store._r, "client_info", lambda: {"addr": "junk"})
    assert store.client_address() is None

    def broken():
        raise RuntimeError("unknown command")
    monkeypatch.setattr(store._r, "client_info", broken)
    assert store.client_address() is None


# -- desktop secrets

def test_secrets_are_created_once_replaced_by_a_password_change_and_deleted(store):
    assert store.secrets.read("ab12") is None
    first = store.secrets.ensure("ab12", password="pw1", token="tok")
    assert (first.password, first.view_password, first.token, first.version) == ("pw1", None, "tok", 1)
    assert store.secrets.ensure("ab12", password="other", token="other") == first  # never replaced by ensure
    assert store.secrets.set_password("ab12", "pw2", "view") == 2
    again = store.secrets.read("ab12")
    assert (again.password, again.view_password, again.token, again.version) == ("pw2", "view", "tok", 2)
    assert "e2e:job:{ab12}:desktop-secret" in raw_keys(store)
    store.secrets.delete("ab12")
    assert store.secrets.read("ab12") is None and not raw_keys(store)


# -- audit

def test_audit_records_newest_first_without_nones(store):
    store.audit.record("no token", address="192.0.2.1", user=None)
    store.audit.record("admins only", user="ann", path="/api/v1/admin/queues")
    rows = store.audit.recent()
    assert [r["reason"] for r in rows] == ["admins only", "no token"]
    assert "user" not in rows[1] and rows[1]["address"] == "192.0.2.1" and rows[0]["id"] and rows[0]["ts"] > 0
    assert store._r.xlen("e2e:audit") == 2 and len(store.audit.recent(1)) == 1


# -- metrics

def test_task_counters_totals_and_recent_minutes(store):
    now = 6000.0 * 60
    for outcome in ("succeeded", "succeeded", "failed"):
        store.metrics.count_task("e2e.launch", outcome, now=now)
    store.metrics.count_task("e2e.launch", "retried", now=now - 10 * 60)  # outside a 5-minute window
    assert store.metrics.task_totals() == {"e2e.launch": {"succeeded": 2, "failed": 1, "retried": 1}}
    assert store.metrics.task_recent(5, now=now) == {"e2e.launch": {"succeeded": 2, "failed": 1, "retried": 0}}
    assert 0 < store._r.ttl(f"e2e:celery:minute:{int(now // 60)}") <= metrics_module.MINUTE_TTL


def test_the_worker_signal_handler_counts_on_its_own_connection(store, fake_server, monkeypatch):
    monkeypatch.setattr(metrics_module.redis.Redis, "from_url",
                        lambda url, **kw: fakeredis.FakeRedis(server=fake_server))  # bytes, as in a worker
    monkeypatch.setattr(metrics_module, "_for_url", {})
    sender = SimpleNamespace(name="e2e.reconcile", app=SimpleNamespace(conf=SimpleNamespace(broker_url="redis://x")))
    task_stats.HANDLERS["succeeded"](sender=sender)
    task_stats.HANDLERS["failed"](sender=sender)
    task_stats.HANDLERS["failed"](sender=None)  # nothing to count
    assert store.metrics.task_totals() == {"e2e.reconcile": {"succeeded": 1, "failed": 1, "retried": 0}}
    assert metrics_module.metrics_for_url("redis://x") is metrics_module.metrics_for_url("redis://x")


def test_a_redis_error_while_counting_is_swallowed(monkeypatch):
    class Broken:
        def count_task(self, *args):
            raise StoreError("down")
    monkeypatch.setattr(task_stats, "metrics_for_url", lambda url, prefix: Broken())
    sender = SimpleNamespace(name="e2e.x", app=SimpleNamespace(conf=SimpleNamespace(broker_url="redis://x")))
    task_stats.HANDLERS["retried"](sender=sender)


def test_celery_queue_lengths_sum_every_priority_list(store):
    store._r.rpush("e2e.jobs", "m1", "m2")
    store._r.rpush(f"e2e.jobs{CELERY_PRIORITY_SEP}9", "m3")
    store._r.hset("unacked", mapping={"t1": "x"})
    assert store.metrics.celery_queue_lengths(["e2e.jobs", "e2e.reconcile"]) == {"e2e.jobs": 3, "e2e.reconcile": 0}
    assert store.metrics.celery_unacked() == 1


def test_control_latency_storage(store, make_store):
    m = store.metrics
    assert m.try_fold_lock(30) and not make_store().metrics.try_fold_lock(30)
    m.release_fold_lock()
    assert make_store().metrics.try_fold_lock(30)
    m.record_control("ab12", [("pause", 0.3), ("pause", 7.0)], (0.25, 0.5, 10.0), {"after": "1-0", "pending": []})
    assert m.control_cursors() == {"ab12": {"after": "1-0", "pending": []}}
    hist = m.control_histogram(("pause", "rerun"), (0.25, 0.5, 10.0))
    assert hist["pause"] == {"buckets": [(0.25, 0), (0.5, 1), (10.0, 2)], "count": 2, "sum": pytest.approx(7.3)}
    assert hist["rerun"]["count"] == 0
    m.record_control("ab12", [], (0.25,), None)
    assert m.control_cursors() == {}


def test_snapshot_reads(store):
    a, b = new_job(store), new_job(store, "bob")
    store.transition_job(b, JobState.PROVISIONING)
    assert store.job_states([a, b, "nope"]) == ["QUEUED", "PROVISIONING", None]
    assert store.count_jobs() == 2 and store.queue_length() == 2
    store._r.hset("e2e:nodes:local", mapping={"n0": a, "n1": "", "n2": ""})
    store.drain("local", "n2", {"reason": "test"})
    assert store.pool_summary() == {"local": {"total": 3, "leased": 1, "drained": 1}}
    store.append_event(a, EventKind.SYNC_STATS, {"lag_max": 1.5})
    store.append_event(a, EventKind.WARNING, {"message": "later"})
    assert store.latest_event(a, EventKind.SYNC_STATS, 10).data == {"lag_max": 1.5}
    assert store.latest_event(a, EventKind.SYNC_STATS, 1) is None  # beyond the lookback
    assert store.latest_event(b, EventKind.SYNC_STATS, 10) is None


# -- locks

def test_reconcile_lease_is_held_by_one_store_at_a_time(store, make_store):
    lease = store.locks.reconcile(10)
    assert lease.acquire()
    assert not make_store().locks.reconcile(10).acquire()
    assert "e2e:lock:reconcile" in raw_keys(store)
    lease.release()
    assert make_store().locks.reconcile(10).acquire()


def test_desktop_lock_per_job(store, make_store):
    held = store.locks.desktop("ab12")
    assert held.acquire()
    assert not make_store().locks.desktop("ab12", wait=0).acquire()
    assert not make_store().locks.desktop("ab12", wait=0.1).acquire()  # waited, still held
    assert make_store().locks.desktop("cd34").acquire()                # another job's desktop
    held.release()
    assert make_store().locks.desktop("ab12", wait=0.1).acquire()


def test_sync_forward_claim_and_offset(store, make_store):
    assert store.locks.claim_sync_forward("ab12") and not make_store().locks.claim_sync_forward("ab12")
    assert 0 < store._r.pttl("e2e:sync:{ab12}:lock") <= 10_000
    assert store.locks.sync_forward_offset("ab12") == 0
    store.locks.set_sync_forward_offset("ab12", 4096)
    assert make_store().locks.sync_forward_offset("ab12") == 4096
    store.locks.release_sync_forward("ab12")
    assert make_store().locks.claim_sync_forward("ab12")


# -- the asyncio event reader

def test_async_events_wait_for_new_events(store, fake_server, monkeypatch):
    monkeypatch.setattr(events_async.aioredis, "from_url",
                        lambda url, **kw: fakeredis.aioredis.FakeRedis(server=fake_server, decode_responses=True))
    job_id = new_job(store)
    first = store.events(job_id)

    async def follow():
        async with store.async_events("redis://x", socket_timeout=5) as reader:
            old = await reader.read(job_id, "0-0", block_ms=100)
            quiet = await reader.read(job_id, old[-1].id, block_ms=50)
            store.append_event(job_id, EventKind.WARNING, {"message": "hi"})
            new = await reader.read(job_id, old[-1].id, block_ms=1000)
            return old, quiet, new

    old, quiet, new = asyncio.run(follow())
    assert [e.id for e in old] == [e.id for e in first] and quiet == []
    assert [(e.kind, e.data) for e in new] == [(EventKind.WARNING, {"message": "hi"})]
