"""A terminate that could not reach a silent node: its leftovers are noted once, and killed when it answers."""

from __future__ import annotations

import signal

from orchestrator.cluster.local import LocalBackend
from orchestrator.engine.node_health import kill_leftovers, note_leftovers
from orchestrator.model.events import EventKind
from orchestrator.model.settings import Settings
from tests.unit.test_node_recovery import leased_job


class SilentNodes(LocalBackend):
    """Local nodes, some of which do not answer a probe; records the signals it is asked to send."""

    def __init__(self, settings: Settings, silent: set[str]) -> None:
        super().__init__(settings)
        self.silent = silent
        self.sent: list[tuple[str, str, int]] = []

    def probe(self, node, timeout):
        return "timed out" if node.name in self.silent else None

    def signal_group(self, node, pgid, signum, account=None):
        self.sent.append((node.name, f"group {pgid}", signum))
        return True

    def signal_tagged(self, node, tag, signum, account=None):
        self.sent.append((node.name, tag, signum))
        return 1


def test_leftovers_on_a_silent_node_are_killed_once_it_answers(store, tmp_path):
    backend = SilentNodes(Settings(home=tmp_path, local_nodes=3), silent={"node-02"})
    job_id = leased_job(store)
    store.update_run(job_id, "run-001", pid=4242, node="node-01")
    job = store.get_job(job_id)

    note_leftovers(store, job, ["node-02"])
    note_leftovers(store, job, ["node-02"])  # a second terminate pass notes nothing new
    warnings = [e for e in store.events(job_id) if e.kind is EventKind.WARNING]
    assert len(warnings) == 1 and "node-02" in warnings[0].data["message"]

    # While the node stays silent nothing is sent, and it stays noted (retried later, not every pass)
    kill_leftovers(store, lambda name: backend, timeout=0.1)
    assert backend.sent == [] and store.leftovers()[job_id]["nodes"] == ["node-02"]

    # Once it answers (and the retry is due), the run's tagged processes there are killed, and the note goes
    backend.silent.clear()
    store.set_leftovers(job_id, {**store.leftovers()[job_id], "next": 0})
    kill_leftovers(store, lambda name: backend, timeout=0.1)
    assert ("node-02", f"{job_id}/run-001", signal.SIGKILL) in backend.sent
    assert not any(name == "node-02" and what.startswith("group") for name, what, _ in backend.sent), \
        "the pid is a process group on the head node only"
    assert store.leftovers() == {}
    assert "killed" in [e for e in store.events(job_id) if e.kind is EventKind.WARNING][-1].data["message"]


def test_nothing_is_noted_for_a_job_whose_runs_never_started(store):
    job_id = leased_job(store)
    note_leftovers(store, store.get_job(job_id), ["node-02"])
    assert store.leftovers() == {}
