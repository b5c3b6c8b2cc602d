"""The engine on the slurm backend: a job's allocation is a Slurm job; freeze is scontrol suspend; terminate
scancels."""

from __future__ import annotations

import pytest

from orchestrator.cluster.identity import lookup
from orchestrator.cluster.local import process_states
from orchestrator.cluster.slurm import SlurmBackend, job_name
from orchestrator.model.states import JobState, RunState

from ..conftest import Engine, make_settings, redis_flush, wait_for
from .test_slurm_accounts import uid_lines
from .test_slurm_backend import slurm  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def test_job_runs_in_its_slurm_allocation_freezes_and_terminates(slurm, redis_url, tmp_path):  # noqa: F811
    redis_flush(redis_url + "/10")
    settings = make_settings(tmp_path / "home", redis_url + "/10", slurm_partition=slurm.partition)
    engine = Engine(settings, worker_env={"SLURM_CONF": str(slurm.conf)})
    try:
        client = engine.client
        backend = SlurmBackend(settings)
        job_id = client.submit_data({"name": "in-slurm", "desktop": {"enabled": False},
                                     "cluster": {"backend": "slurm", "nodes": 1},
                                     "solver": {"name": "command", "command": [
                                         "sh", "-c", "while :; do sleep 0.2; echo tick >> ticks; done"]}})
        wait_for(lambda: client.status(job_id).runs_detail[0].state is RunState.RUNNING, 60, "RUNNING")
        assert backend.allocation_state(job_id) == "RUNNING"
        pid = client.status(job_id).runs_detail[0].pid
        # every process of the run (wrapper, shell, its sleeps) is the job account's, in the owner's allocation
        account = lookup(client.status(job_id).account)
        tagged = wait_for(lambda: backend.tagged_processes(backend.inventory()[0], f"{job_id}/run-001", account),
                          20, "the run's processes")
        assert uid_lines([pid, *tagged]) == {p: [account.uid] * 4 for p in [pid, *tagged]}
        assert backend.slurm("squeue", "--noheader", f"--name={job_name(job_id)}", "--format=%u").stdout.strip() \
            == account.name
        client.pause(job_id, freeze=True)
        wait_for(lambda: backend.allocation_state(job_id) == "SUSPENDED", 30, "the allocation to be suspended")
        wait_for(lambda: process_states([pid]) == {"T"}, 10, "the run to be stopped")
        client.resume(job_id)
        wait_for(lambda: backend.allocation_state(job_id) == "RUNNING", 30, "the allocation to run again")
        assert client.status(job_id).runs_detail[0].state is RunState.RUNNING
        client.terminate(job_id)
        assert engine.wait_job_terminal(job_id, timeout=120).state is JobState.TERMINATED
        # scancel was sent; Slurm shows COMPLETING while it ends the allocation's steps
        wait_for(lambda: backend.allocation_state(job_id) in ("CANCELLED", "COMPLETED", None), 30,
                 "the allocation to end")
        wait_for(lambda: not process_states([pid]), 20, "the run's processes to be gone")
    finally:
        engine.close()
