"""Node faults without nodes: drain-and-swap in the store, restart on replacement nodes, observe seeing a run end."""

from __future__ import annotations

import pytest

from orchestrator.cluster.local import LocalBackend
from orchestrator.engine.node_health import restart_on_replacement, wants_recovery
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.settings import Settings
from orchestrator.model.spec import validate_spec
from orchestrator.model.states import JobState, RunState

INVENTORY = ["node-01", "node-02", "node-03"]
NOTE = {"reason": "node node-02 stopped answering", "job": "j", "run": "run-001"}


def leased_job(store, nodes: int = 2, name: str = "sim", **cluster) -> str:
    job_id = store.create_job(name=name, owner="alice", backend="local", solver="command",
                              spec={"name": name, "cluster": {"nodes": nodes, **cluster},
                                    "solver": {"name": "command", "command": ["true"]}})
    leased = store.allocate("local", job_id, nodes, INVENTORY)
    assert store.transition_job(job_id, JobState.PROVISIONING, nodes=leased)
    return job_id


def owners(store) -> dict[str, str]:
    return store.leases("local")


def test_a_dead_node_is_drained_and_swapped_in_place_once(store):
    job_id = leased_job(store)
    assert store.get_job(job_id).nodes == ["node-01", "node-02"]

    swaps = store.replace_nodes("local", job_id, ["node-01"], INVENTORY, NOTE)

    assert swaps == {"node-01": "node-03"}
    assert store.get_job(job_id).nodes == ["node-03", "node-02"]  # the replacement is the new head
    assert owners(store) == {"node-01": "", "node-02": job_id, "node-03": job_id}
    assert store.drained("local") == {"node-01": NOTE}
    # a second call (a redelivered task) finds nothing left to swap and changes nothing
    assert store.replace_nodes("local", job_id, ["node-01"], INVENTORY, NOTE) == "none"
    assert store.get_job(job_id).nodes == ["node-03", "node-02"]


def test_drained_nodes_are_never_leased_until_undrained(store):
    job_id = leased_job(store)
    store.replace_nodes("local", job_id, ["node-02"], INVENTORY, NOTE)
    store.release("local", job_id)
    waiting = store.create_job(name="w", owner="bob", spec={"name": "w"}, backend="local", solver="command")
    assert store.allocate("local", waiting, 3, INVENTORY) == "nodes"  # node-02 is free but drained
    assert store.undrain("local", "node-02") == NOTE
    assert store.undrain("local", "node-02") is None
    assert sorted(store.allocate("local", waiting, 3, INVENTORY)) == INVENTORY


def test_without_a_free_node_nothing_moves_unless_fewer_nodes_will_do(store):
    job_id = leased_job(store, nodes=3)
    before = owners(store)
    assert store.replace_nodes("local", job_id, ["node-02"], INVENTORY, NOTE) == "nofree"
    assert owners(store) == before and store.get_job(job_id).nodes == INVENTORY
    assert "node-02" in store.drained("local")  # dead either way

    assert store.replace_nodes("local", job_id, ["node-02"], INVENTORY, NOTE, allow_fewer=True) == {"node-02": None}
    assert store.get_job(job_id).nodes == ["node-01", "node-03"]
    assert owners(store)["node-02"] == ""


# -- the restart

@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path, local_nodes=3)


def failed_by_node_fault(store, settings, job_id: str, dead: list[str]) -> dict:
    assert store.transition_job(job_id, JobState.UP)
    for to in (RunState.LAUNCHING, RunState.RUNNING):
        assert store.transition_run(job_id, "run-001", to)
    JobPaths.for_job(settings.root, job_id).run("run-001").root.mkdir(parents=True)  # its checkpoint
    assert store.transition_run(job_id, "run-001", RunState.FAILED, reason=f"node {dead[0]} stopped answering",
                                failed_nodes=dead, pid=1234)
    return store.get_run(job_id, "run-001")


def test_the_flag_restarts_the_run_as_its_next_attempt_on_a_replacement(store, settings):
    job_id = leased_job(store, restart_on_node_failure=True)
    run = failed_by_node_fault(store, settings, job_id, ["node-02"])
    assert wants_recovery(store.get_job(job_id), run)

    assert restart_on_replacement(store, settings, job_id, "run-001", LocalBackend(settings))

    run = store.get_run(job_id, "run-001")
    assert run.state is RunState.PENDING and run.attempt == 2 and run.mode == "restart"
    assert run.pid is None and run.failed_nodes is None and run.reason is None
    assert store.get_job(job_id).nodes == ["node-01", "node-03"]
    assert (settings.root / "nodes" / "node-03" / "jobs" / job_id).is_dir()  # prepared for the job
    events = store.events(job_id)
    replaced = [e.data for e in events if e.kind is EventKind.NODE_REPLACED]
    assert replaced == [{"run": "run-001", "node": "node-02", "replacement": "node-03",
                         "message": "node node-02 replaced by node-03"}]
    restart = [e.data for e in events if e.kind is EventKind.CONTROL][-1]
    assert restart["action"] == "restart" and restart["by"] == "engine" and restart["attempt"] == 2
    # done: a second pass does nothing
    assert not restart_on_replacement(store, settings, job_id, "run-001", LocalBackend(settings))


def test_without_the_flag_the_run_stays_failed(store, settings):
    job_id = leased_job(store)
    run = failed_by_node_fault(store, settings, job_id, ["node-02"])
    assert not wants_recovery(store.get_job(job_id), run)
    assert not restart_on_replacement(store, settings, job_id, "run-001", LocalBackend(settings))
    assert store.get_run(job_id, "run-001").state is RunState.FAILED
    assert store.drained("local") == {}


def test_no_free_node_leaves_the_run_failed_saying_so(store, settings, monkeypatch):
    from solvers.command import Command
    monkeypatch.setattr(Command, "runs_on_fewer_nodes", False)  # like a decomposed OpenFOAM case
    job_id = leased_job(store, nodes=3, restart_on_node_failure=True)
    failed_by_node_fault(store, settings, job_id, ["node-03"])

    assert not restart_on_replacement(store, settings, job_id, "run-001", LocalBackend(settings))

    run = store.get_run(job_id, "run-001")
    assert run.state is RunState.FAILED
    assert run.reason == "node node-03 stopped answering; not restarted: no replacement node free"
    assert not wants_recovery(store.get_job(job_id), run)  # not tried again on every pass
    assert store.get_job(job_id).nodes == INVENTORY


def test_a_plugin_that_runs_on_fewer_nodes_restarts_on_the_survivors(store, settings):
    job_id = leased_job(store, nodes=3, restart_on_node_failure=True)
    failed_by_node_fault(store, settings, job_id, ["node-01"])
    assert restart_on_replacement(store, settings, job_id, "run-001", LocalBackend(settings))
    assert store.get_job(job_id).nodes == ["node-02", "node-03"]
    assert store.get_run(job_id, "run-001").state is RunState.PENDING


def test_a_terminating_job_is_not_restarted(store, settings):
    job_id = leased_job(store, restart_on_node_failure=True)
    failed_by_node_fault(store, settings, job_id, ["node-02"])
    assert store.transition_job(job_id, JobState.TERMINATING)
    assert not restart_on_replacement(store, settings, job_id, "run-001", LocalBackend(settings))
    assert store.get_run(job_id, "run-001").state is RunState.FAILED


def test_the_flag_is_a_cluster_field_defaulting_to_false():
    base = {"name": "a", "solver": {"name": "command", "command": ["true"]}}
    assert validate_spec(base).cluster.restart_on_node_failure is False
    spec = validate_spec({**base, "cluster": {"nodes": 2, "restart_on_node_failure": True}})
    assert spec.cluster.restart_on_node_failure is True


# -- a run ending between observe's two looks (the exit code read, then the process group)

class EndsBetweenLooks(LocalBackend):
    """The wrapper records exit code 0 and exits just after the first read of the exit code."""

    def __init__(self, settings):
        super().__init__(settings)
        self.reads = 0

    def read_bytes(self, node, path, offset=0, limit=None):
        if path.name == "exit_code":
            self.reads += 1
            return None if self.reads == 1 else b"0\n"
        return None

    def group_alive(self, node, pgid):
        return False


def test_a_run_that_ends_between_the_looks_completes_rather_than_fails(store, settings):
    from orchestrator.engine.lifecycle import Lifecycle

    job_id = leased_job(store)
    assert store.transition_job(job_id, JobState.UP)
    for to in (RunState.LAUNCHING, RunState.RUNNING):
        assert store.transition_run(job_id, "run-001", to, pid=4321)
    lc = Lifecycle.create(store, settings)
    backend = EndsBetweenLooks(settings)
    lc.ctx.backend_of = lambda job: backend  # the steps find a job's backend through their shared context

    lc.observe(store.get_job(job_id), store.get_run(job_id, "run-001"))

    assert backend.reads == 2
    assert store.get_run(job_id, "run-001").state is RunState.COMPLETED
