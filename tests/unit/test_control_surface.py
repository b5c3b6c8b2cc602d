"""The control surface without processes: scoping by owner, live edits through a worker task (run inline
here), the task names, and both transports implementing the one Control protocol."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from orchestrator.control import service as service_module
from orchestrator.control import steering
from orchestrator.control.protocol import Control, JobStatus
from orchestrator.control.remote import RemoteControl
from orchestrator.control.service import ControlService
from orchestrator.engine.live_edit import APPLIED, FAILED, apply_live_edit
from orchestrator.model.errors import InfrastructureError, InvalidState, NotFound, SpecError, UserError
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.settings import Settings
from orchestrator.model.states import JobState, RunState
from orchestrator.worker import names

SPEC = {"name": "s", "desktop": {"enabled": False}, "solver": {"name": "command", "command": ["sleep", "1"]}}


def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0")


def new_job(store, owner: str, spec: dict | None = None) -> str:
    return store.create_job(name="s", owner=owner, spec=spec or SPEC, backend="local", solver="command")


# -- scoping

def test_an_account_sees_only_its_own_jobs_and_others_answer_not_found(store, tmp_path):
    mine, theirs = new_job(store, "alice"), new_job(store, "bob")
    refused = []
    alice = ControlService(settings(tmp_path), store, "alice", admin=False)
    alice.on_refused = refused.append
    assert alice.resolve(mine) == mine and alice.resolve(mine[:-2]) == mine
    with pytest.raises(NotFound, match="no job"):
        alice.resolve(theirs)
    assert refused == [theirs]
    assert [j.id for j in alice.jobs()] == [mine]
    assert [j.id for j in alice.jobs(owner="bob")] == [mine]  # a plain account cannot ask for another owner
    root = ControlService(settings(tmp_path), store, "root", admin=True)
    assert root.resolve(theirs) == theirs and {j.id for j in root.jobs()} == {mine, theirs}
    local = ControlService(settings(tmp_path), store, "someone")  # the engine machine's own user
    assert local.resolve(theirs) == theirs and not local.scoped and local.admin


def test_status_is_a_typed_document(store, tmp_path):
    job_id = new_job(store, "alice")
    doc = ControlService(settings(tmp_path), store, "alice").status(job_id)
    assert isinstance(doc, JobStatus) and doc.state is JobState.QUEUED
    assert doc.current.id == "run-001" and doc.current.state is RunState.PENDING
    assert doc.allowed == ["terminate"]


# -- live edits: control sends the task, a worker applies it and reports on the job's stream

class FakeBackend:
    name = "local"

    def __init__(self) -> None:
        self.written: dict[str, bytes] = {}

    def write_bytes(self, node, path, data: bytes) -> None:
        self.written[str(path)] = data


class FakePlugin:
    def __init__(self, refuse: Exception | None = None) -> None:
        self.refuse = refuse

    def apply_live(self, old, new, files) -> list[str]:
        if self.refuse:
            raise self.refuse
        files.write_text("system/controlDict", "endTime 5;")
        return ["parameters.endTime"]


class FakeLifecycle:
    """What apply_live_edit uses of the worker's Lifecycle."""

    def __init__(self, store, home: Path, plugin: FakePlugin) -> None:
        self.store, self.home, self.plugin, self.backend = store, home, plugin, FakeBackend()

    def backend_of(self, job):
        return self.backend

    def nodes_of(self, job, backend):
        return ["head"]

    def paths(self, job_id):
        return JobPaths.for_job(self.home, job_id)

    def plugin_of(self, job):
        return self.plugin


class InlineCelery:
    """Runs the live-edit task at once, as a worker would (or drops every task)."""

    def __init__(self, lc: FakeLifecycle | None) -> None:
        self.lc, self.sent = lc, []

    def send_task(self, name: str, args: list, **options) -> None:
        self.sent.append(name)
        if name == names.APPLY_LIVE and self.lc is not None:
            apply_live_edit(self.lc, *args)


def running_job(store) -> str:
    job_id = new_job(store, "alice")
    for state in (JobState.PROVISIONING, JobState.UP):
        assert store.transition_job(job_id, state)
    for state in (RunState.LAUNCHING, RunState.RUNNING):
        assert store.transition_run(job_id, "run-001", state)
    return job_id


def test_a_live_edit_is_applied_by_the_worker_task_and_recorded(store, tmp_path):
    job_id = running_job(store)
    lc = FakeLifecycle(store, tmp_path, FakePlugin())
    celery = InlineCelery(lc)
    local = tmp_path / "fvSchemes"
    local.write_text("new schemes")
    client = ControlService(settings(tmp_path), store, "alice", celery=celery)
    result = client.edit(job_id, ["limits.walltime=2h"], files={str(local): "system/fvSchemes"}, live=True)
    assert celery.sent == [names.APPLY_LIVE]
    assert result["revision"] == 2 and result["applied_live"] == ["parameters.endTime", "system/fvSchemes"]
    assert lc.backend.written[str(tmp_path / "jobs" / job_id / "runs" / "run-001" / "system" / "fvSchemes")] == \
        b"new schemes"
    actions = [e.data["action"] for e in store.events(job_id) if e.kind is EventKind.CONTROL]
    assert actions[:2] == ["edit-live", APPLIED]


def test_a_live_edit_of_the_monitor_rules_needs_nothing_of_the_solver(store, tmp_path):
    # a plugin that cannot apply edits to its solver: the rules are the worker's own, so they change anyway
    job_id = running_job(store)
    celery = InlineCelery(FakeLifecycle(store, tmp_path, FakePlugin(refuse=UserError("cannot apply edits"))))
    client = ControlService(settings(tmp_path), store, "alice", celery=celery)
    rule = "monitor.rules=[{name: conv, when: converged, below: {p: 1e-4}, action: stop}]"
    result = client.edit(job_id, [rule], live=True)
    assert result["revision"] == 2 and result["applied_live"] == ["monitor.rules"]
    assert store.get_job(job_id).spec["monitor"]["rules"][0]["name"] == "conv"


@pytest.mark.parametrize("refusal, kind", [
    (SpecError([("solver.parameters", "endTime is off the write interval")]), SpecError),
    (UserError("command cannot apply edits to a running solver"), UserError),
    (RuntimeError("disk gone"), InfrastructureError),
])
def test_a_refused_live_edit_comes_back_as_its_error_and_records_nothing(store, tmp_path, refusal, kind):
    job_id = running_job(store)
    celery = InlineCelery(FakeLifecycle(store, tmp_path, FakePlugin(refuse=refusal)))
    client = ControlService(settings(tmp_path), store, "alice", celery=celery)
    with pytest.raises(kind) as err:
        client.edit(job_id, ["limits.walltime=2h"], live=True)
    if kind is SpecError:
        assert err.value.problems == [("solver.parameters", "endTime is off the write interval")]
        assert "write interval" in err.value.message
    assert store.get_job(job_id).revision == 1 and store.revisions(job_id) == []


def test_a_live_edit_no_worker_takes_fails_clearly_and_late_delivery_applies_nothing(store, tmp_path, monkeypatch):
    job_id = running_job(store)
    monkeypatch.setattr(steering, "LIVE_EDIT_TIMEOUT", 0.6)
    client = ControlService(settings(tmp_path), store, "alice", celery=InlineCelery(None))
    with pytest.raises(InfrastructureError, match="not applied within"):
        client.edit(job_id, ["limits.walltime=2h"], live=True)
    assert store.get_job(job_id).revision == 1
    # the task delivered after its caller gave up applies nothing
    lc = FakeLifecycle(store, tmp_path, FakePlugin())
    assert apply_live_edit(lc, job_id, "run-001", "r1", SPEC, SPEC, {}, "alice", deadline=0.0) is None
    assert lc.backend.written == {}
    assert store.events(job_id)[-1].data["action"] == FAILED


def test_a_live_edit_of_a_run_no_longer_running_is_refused(store, tmp_path):
    job_id = running_job(store)
    assert store.transition_run(job_id, "run-001", RunState.COMPLETED)
    lc = FakeLifecycle(store, tmp_path, FakePlugin())
    assert apply_live_edit(lc, job_id, "run-001", "r1", SPEC, SPEC, {}) is None
    error = store.events(job_id)[-1].data["error"]
    assert error["type"] == InvalidState.__name__ and "COMPLETED" in error["message"]


# -- one surface, two transports; task names are constants

def test_both_transports_implement_every_operation_of_the_protocol():
    members = [name for name, _ in inspect.getmembers(Control) if not name.startswith("_")]
    assert {"submit", "status", "edit", "nodes", "desktop", "usage"} <= set(members)
    for transport in (ControlService, RemoteControl):
        missing = [m for m in members if not hasattr(transport, m)]
        assert not missing, (transport.__name__, missing)


def test_the_worker_registers_every_task_under_its_constant_name():
    from orchestrator.worker import tasks  # noqa: F401  (registers the tasks)
    from orchestrator.worker.celery_app import app

    constants = {v for k, v in vars(names).items() if k.isupper()}
    assert constants <= set(app.tasks)


def test_no_api_module_imports_the_app_module():
    """The routers share their dependencies through api/deps.py: the app imports them, never the reverse."""
    api = Path(service_module.__file__).parents[1] / "api"
    importers = [p.name for p in api.rglob("*.py") if p.name != "app.py" and "orchestrator.api.app " in
                 p.read_text().replace("orchestrator.api.app:", "")]
    assert importers == []
