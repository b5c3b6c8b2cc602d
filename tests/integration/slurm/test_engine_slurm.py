"""The engine on the slurm backend: a job's allocation is a Slurm job; freeze is scontrol suspend; terminate
scancels."""

from __future__ import annotations

import os
import time

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
        owners = uid_lines([pid, *tagged])  # the loop's sleeps come and go: the wrapper and the shell stay
        assert pid in owners and len(owners) >= 2
        assert owners == {p: [account.uid] * 4 for p in owners}
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


def test_a_job_waits_while_slurm_queues_its_allocation_and_starts_when_the_nodes_free(slurm, redis_url,  # noqa: F811
                                                                                      tmp_path):
    """Another Slurm user holds every CPU: the engine's allocation pends in Slurm. The job waits PROVISIONING
    (not FAILED), says why and when Slurm expects it to start, and runs once the other job ends."""
    import subprocess

    redis_flush(redis_url + "/10")
    settings = make_settings(tmp_path / "home", redis_url + "/10", slurm_partition=slurm.partition, launch_timeout=2)
    other = subprocess.run(["sbatch", "--parsable", f"--partition={slurm.partition}", "--uid=bob", "--chdir=/",
                            "--output=/dev/null", f"--ntasks={os.cpu_count() or 1}", "--time=10",
                            "--wrap=exec sleep 600"], env=slurm.env, capture_output=True, text=True, check=True)
    other_id = other.stdout.strip().split(";")[0]
    engine = Engine(settings, worker_env={"SLURM_CONF": str(slurm.conf)})
    try:
        client = engine.client
        wait_for(lambda: SlurmBackend(settings).slurm("squeue", "--noheader", f"--jobs={other_id}", "--format=%T")
                 .stdout.strip() == "RUNNING", 30, "the other user's job to run")
        job_id = client.submit_data({"name": "waits", "desktop": {"enabled": False},
                                     "cluster": {"backend": "slurm", "nodes": 1},
                                     "solver": {"name": "command", "command": ["sleep", "30"]}})
        doc = wait_for(lambda: (d := client.status(job_id)).state is JobState.PROVISIONING and d.queue and d, 30,
                       "the job to say it waits for Slurm")
        assert doc.state is JobState.PROVISIONING and doc.queue.position is None
        assert "PENDING" in doc.queue.why and "Slurm allocation" in doc.queue.why
        time.sleep(3 * settings.launch_timeout)   # several re-drives later, it still waits: never FAILED
        assert client.status(job_id).state is JobState.PROVISIONING
        subprocess.run(["scancel", other_id], env=slurm.env, check=True)
        wait_for(lambda: client.status(job_id).runs_detail[0].state is RunState.RUNNING, 60, "the run to start")
        assert client.status(job_id).queue is None and not client.status(job_id).waiting
        client.terminate(job_id)
        engine.wait_job_terminal(job_id, timeout=120)
    finally:
        subprocess.run(["scancel", other_id], env=slurm.env, check=False)
        engine.close()
