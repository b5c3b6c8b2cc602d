"""Notifications without processes: the signature, the payload (never a secret), URL and spec checks, the
outbox (only notifiable events, mirrored atomically), the at-most-once claims, the retry schedule and log,
and the control surface's scoping."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from orchestrator.control.service import ControlService
from orchestrator.engine.notify import Dispatcher, attempt
from orchestrator.model.errors import NotFound, SpecError, UserError
from orchestrator.model.events import EventKind
from orchestrator.model.notify import (
    DESKTOP_READY,
    RUN_COMPLETED,
    check_url,
    encode_body,
    notification_event,
    retry_delay,
    signature,
    verify,
)
from orchestrator.model.settings import Settings
from orchestrator.model.spec import validate_spec
from orchestrator.model.states import RunState
from orchestrator.worker import names

SPEC = {"name": "s", "desktop": {"enabled": False}, "solver": {"name": "command", "command": ["sleep", "1"]}}
LICENCE = "1055@secret-licence-host"


def settings(tmp_path: Path, **extra) -> Settings:
    return Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0", **extra)


def complete_run(store, job_id: str) -> None:
    for state in (RunState.LAUNCHING, RunState.RUNNING, RunState.COMPLETED):
        assert store.transition_run(job_id, "run-001", state)


def outbox(store) -> list:
    return store._r.xrange(store._keys.notify_outbox)


# -- the signature a receiver checks

def test_signature_is_hmac_sha256_of_the_exact_body_and_a_changed_body_fails():
    body = encode_body({"event": "run.completed", "job": {"id": "ab12"}})
    header = signature("s3cret", body)
    assert header == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert verify("s3cret", body, header)
    assert not verify("s3cret", body.replace(b"ab12", b"ab13"), header)
    assert not verify("other", body, header)


# -- what is worth a notification, and the outbox

def test_only_notifiable_events_reach_the_outbox_and_transitions_mirror_them_atomically(store):
    job_id = store.create_job(name="s", owner="ann", spec=SPEC, backend="local", solver="command")
    assert outbox(store) == []  # job.created, run.created: not notifiable
    store.transition_run(job_id, "run-001", RunState.LAUNCHING)
    store.append_event(job_id, EventKind.WARNING, {"message": "a node is slow"})
    assert outbox(store) == []
    store.transition_run(job_id, "run-001", RunState.RUNNING)
    store.append_event(job_id, EventKind.WARNING, {"limit": "walltime", "message": "ends in 60s"})
    store.append_event(job_id, EventKind.RULE_FIRED, {"rule": "cd", "action": "notify", "values": {"Cd": 0.31}})
    kinds = [(f["kind"], json.loads(f["data"]).get("state")) for _, f in outbox(store)]
    assert kinds == [("run.state", "RUNNING"), ("warning", None), ("rule.fired", None)]
    assert all(f["job"] == job_id for _, f in outbox(store))


def test_notification_events_derive_from_engine_events():
    assert notification_event("run.state", {"state": "COMPLETED", "run": "run-001"}) == RUN_COMPLETED
    assert notification_event("run.state", {"state": "STOPPING"}) is None
    assert notification_event("desktop", {"state": "ready", "url": "http://h/"}) == "desktop.ready"
    assert notification_event("desktop", {"state": "ready", "message": "VNC password changed"}) is None
    assert notification_event("job.state", {"state": "FAILED"}) == "job.failed"


# -- the dispatcher: payload and at most once

def _dispatcher(store, tmp_path, name="d1"):
    sent: list[dict] = []
    return Dispatcher(store, settings(tmp_path, public_url="https://e2e.example.org"), sent.append, name), sent


def test_payload_names_the_job_and_carries_no_secret(store, tmp_path):
    spec = {"name": "lic", "desktop": {"enabled": False},
            "solver": {"name": "mechanical", "input": "x.dat", "license_file": LICENCE}}
    job_id = store.create_job(name="lic", owner="ann", spec=spec, backend="local", solver="mechanical")
    store.notify.add_target("ann", "webhook", "http://127.0.0.1:9/hook", [RUN_COMPLETED, DESKTOP_READY])
    store.notify.ensure_group()
    complete_run(store, job_id)
    store.append_event(job_id, EventKind.DESKTOP, {"state": "ready", "url": "http://h:1/vnc.html#token=TOK&pw=PW"})
    dispatcher, sent = _dispatcher(store, tmp_path)
    for entry_id, fields in store.notify.read_outbox("d1", block_ms=0):
        dispatcher.dispatch(entry_id, fields)
    assert [t["body"]["event"] for t in sent] == [RUN_COMPLETED, DESKTOP_READY]  # RUNNING is not wanted
    body = sent[0]["body"]
    assert body["event"] == RUN_COMPLETED and body["state"] == "COMPLETED" and body["run"] == "run-001"
    assert body["job"] == {"id": job_id, "name": "lic", "owner": "ann"}
    assert body["link"] == f"https://e2e.example.org/ui/jobs/{job_id}"
    assert sent[1]["body"]["desktop_url"] == "http://h:1/vnc.html"
    text = json.dumps(sent)
    assert LICENCE not in text and store.notify.secret("ann") not in text and "TOK" not in text


def test_each_event_and_target_is_sent_once_across_dispatchers(make_store, tmp_path):
    a, b = make_store(), make_store()  # two processes on one Redis
    job_id = a.create_job(name="s", owner="ann", spec={**SPEC, "notify": {"webhooks": ["http://127.0.0.1:9/j"]}},
                          backend="local", solver="command")
    a.notify.add_target("ann", "email", "ann@example.org", [RUN_COMPLETED])
    a.notify.ensure_group()
    complete_run(a, job_id)
    da, sent_a = _dispatcher(a, tmp_path, "a")
    db, sent_b = _dispatcher(b, tmp_path, "b")
    entries = a.notify.read_outbox("a", block_ms=0)
    assert b.notify.read_outbox("b", block_ms=0) == []  # the group gave every entry to one consumer
    for entry_id, fields in entries:
        da.dispatch(entry_id, fields)
        db.dispatch(entry_id, fields)  # as if redelivered after `a` died before acknowledging
    deliveries = [t["delivery"] for t in sent_a + sent_b]
    assert len(deliveries) == 2 and len(set(deliveries)) == 2  # the email and the job's webhook, once each
    assert sent_b == []
    assert outbox(a) == []  # acknowledged and removed


def test_entries_a_dead_dispatcher_read_are_reclaimed_by_another_and_still_sent_once(make_store, tmp_path):
    a, b = make_store(), make_store()
    job_id = a.create_job(name="s", owner="ann", spec=SPEC, backend="local", solver="command")
    a.notify.add_target("ann", "webhook", "http://127.0.0.1:9/hook", [RUN_COMPLETED])
    a.notify.ensure_group()
    complete_run(a, job_id)
    entry_id = next(i for i, f in a.notify.read_outbox("a", block_ms=0) if '"COMPLETED"' in f["data"])
    da, sent_a = _dispatcher(a, tmp_path, "a")
    db, sent_b = _dispatcher(b, tmp_path, "b")
    delivery = f"{entry_id}.{a.notify.targets('ann')[0].id}"
    assert a.notify.claim(delivery, "a")  # `a` claimed and died before sending and acknowledging
    reclaimed = b.notify.reclaim("b", min_idle_ms=0)
    assert entry_id in [i for i, _ in reclaimed]
    for i, f in reclaimed:
        db.dispatch(i, f)
    assert sent_b == [] and sent_a == []  # the claim holds: at most once, even if that one is lost
    assert b.notify.reclaim("b", min_idle_ms=0) == []  # acknowledged now


# -- checks at the edge

@pytest.mark.parametrize("url, allow_private, problem", [
    ("ftp://example.org/x", True, "http:// or https://"),
    ("http://", True, "needs a host"),
    ("https://user:pw@example.org/", True, "no credentials"),
    ("https://example.org/" + "a" * 3000, True, "at most"),
    ("http://example.org/a b", True, "no spaces"),
    ("http://10.1.2.3/hook", False, "private or local"),
    ("http://localhost:8000/hook", False, "private or local"),
    ("http://[::1]/hook", False, "private or local"),
])
def test_webhook_urls_are_checked(url, allow_private, problem):
    with pytest.raises(UserError, match=problem):
        check_url(url, allow_private=allow_private)


def test_private_urls_pass_when_the_engine_allows_them():
    assert check_url("http://10.1.2.3:8080/hook", allow_private=True) == "http://10.1.2.3:8080/hook"
    assert check_url("https://93.184.216.34/hook", allow_private=False)


def test_the_spec_block_is_validated_by_field():
    with pytest.raises(SpecError) as info:
        validate_spec({**SPEC, "notify": {"events": ["run.done"], "webhooks": ["ftp://x"], "email": ["nope"]}},
                      check_paths=False)
    text = str(info.value)
    assert "notify.events" in text and "run.done" in text
    assert "notify.webhooks" in text and "notify.email" in text
    assert validate_spec({**SPEC, "notify": {"email": ["a@b.org"]}}, check_paths=False).notify.events == \
        ["run.completed", "run.failed"]


def test_submit_refuses_a_private_webhook_when_the_engine_forbids_them(store, tmp_path):
    svc = ControlService(settings(tmp_path, notify_allow_private=False), store, "ann", admin=False,
                         celery=_Celery())
    with pytest.raises(UserError, match="notify.webhooks.0"):
        svc.submit_data({**SPEC, "notify": {"webhooks": ["http://192.168.1.5/hook"]}})
    assert store.list_jobs() == []


# -- retries, backoff and the log

def test_retry_schedule_doubles_from_the_base_and_is_capped():
    assert [retry_delay(n, 1.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 16]
    assert retry_delay(20, 1.0, cap=300) == 300


def test_a_failing_attempt_is_logged_retrying_then_given_up_and_never_made_twice(store, tmp_path):
    cfg = settings(tmp_path, notify_attempts=2, notify_timeout=1)
    target = store.notify.add_target("ann", "webhook", "http://127.0.0.1:1/closed", [RUN_COMPLETED])
    task = {"delivery": "1-0.x", "target": target.model_dump(),
            "body": {"event": RUN_COMPLETED, "job": {"id": "j1"}, "delivery": "1-0.x", "time": 0}}
    assert attempt(store, cfg, task, 1, "w1") is False
    assert attempt(store, cfg, task, 1, "w2") is True  # the same attempt redelivered: not made again
    assert attempt(store, cfg, task, 2, "w1") is False
    log = store.notify.read_log(owner="ann")
    assert [(e["attempt"], e["status"]) for e in log] == [(2, "gave up"), (1, "retrying")]
    assert "Connection refused" in log[0]["error"]


# -- the control surface

class _Celery:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list]] = []

    def send_task(self, name, args=(), **_options):
        self.sent.append((name, list(args)))


def test_users_manage_only_their_own_targets_and_an_admin_sees_all(store, tmp_path):
    ann = ControlService(settings(tmp_path), store, "ann", admin=False, celery=_Celery())
    bob = ControlService(settings(tmp_path), store, "bob", admin=False)
    root = ControlService(settings(tmp_path), store, "root", admin=True)
    hook = ann.notify_add("webhook", "http://127.0.0.1:9/hook", ["run.failed"])
    with pytest.raises(UserError, match="events: unknown event 'run.done'"):
        ann.notify_add("email", "ann@example.org", ["run.done"])
    with pytest.raises(UserError, match="not an email address"):
        ann.notify_add("email", "ann at example", None)
    assert [t["id"] for t in ann.notify_targets()] == [hook["id"]]
    assert bob.notify_targets() == []
    with pytest.raises(NotFound):
        bob.notify_remove(hook["id"])
    with pytest.raises(UserError, match="only an admin"):
        bob.notify_targets(everyone=True)
    assert [t["owner"] for t in root.notify_targets(everyone=True)] == ["ann"]
    assert ann.notify_secret() == ann.notify_secret() != bob.notify_secret()
    old = ann.notify_secret()
    assert ann.notify_secret(rotate=True) != old
    [queued] = ann.notify_test()
    name, [task] = ann.celery.sent[0]
    assert name == names.NOTIFY and task["delivery"] == queued["delivery"] and task["body"]["event"] == "test"
    assert ann.notify_secret() not in json.dumps(task)
    ann.notify_remove(hook["id"])
    assert ann.notify_targets() == []


def test_a_private_webhook_is_refused_again_at_delivery_when_the_engine_forbids_them(store, tmp_path):
    cfg = settings(tmp_path, notify_allow_private=False, notify_attempts=1)
    target = store.notify.add_target("ann", "webhook", "http://localhost:1/hook", [RUN_COMPLETED])
    task = {"delivery": "2-0.x", "target": target.model_dump(),
            "body": {"event": RUN_COMPLETED, "job": {"id": "j1"}, "delivery": "2-0.x", "time": 0}}
    assert attempt(store, cfg, task, 1, "w1") is False
    [entry] = store.notify.read_log(owner="ann")
    assert entry["status"] == "gave up" and "private or local" in entry["error"]


def test_the_workers_get_the_smtp_password_itself_not_its_mask(tmp_path):
    from orchestrator.worker.stack import Stack

    env = Stack(settings(tmp_path, smtp_host="mail", smtp_password="pw-Q7x")).\
        _env("redis://127.0.0.1:1/0", "worker")
    assert env["E2E_SMTP_PASSWORD"] == "pw-Q7x" and env["E2E_SMTP_HOST"] == "mail"
    assert "pw-Q7x" not in " ".join(v for k, v in env.items() if k != "E2E_SMTP_PASSWORD")


def test_the_remote_transport_reaches_the_same_operations_through_the_api(store, tmp_path):
    from fastapi.testclient import TestClient

    from orchestrator.api.app import create_app
    from orchestrator.control.remote import RemoteControl

    http = TestClient(create_app(settings(tmp_path), store))
    ann = RemoteControl("http://testserver", store.users.create("ann"), transport=http._transport)
    bob = RemoteControl("http://testserver", store.users.create("bob"), transport=http._transport)
    hook = ann.notify_add("webhook", "https://example.org/hook", ["run.failed"])
    assert [t["id"] for t in ann.notify_targets()] == [hook["id"]] and bob.notify_targets() == []
    with pytest.raises(UserError, match="http:// or https://"):
        ann.notify_add("webhook", "file:///etc/passwd", None)
    with pytest.raises(NotFound):
        bob.notify_remove(hook["id"])
    secret = ann.notify_secret()
    assert secret == store.notify.secret("ann") and ann.notify_secret(rotate=True) != secret
    assert ann.notify_log() == []
    assert ann.notify_remove(hook["id"])["id"] == hook["id"] and ann.notify_targets() == []
