"""Alice's job in its Slurm allocation, as a hostile user, beside bob's allocation on the same node: it reaches
nothing of bob's (his job folder, his processes and their environment, his Slurm job through scancel or
scontrol) and nothing of the engine's (its allocation records, stack file, munge key, slurmd's environment)."""

from __future__ import annotations

import subprocess

import pytest

from orchestrator.cluster.identity import lookup
from orchestrator.cluster.slurm import SlurmBackend
from orchestrator.model.paths import JobPaths
from orchestrator.model.states import RUN_ENDED, RunState
from tests.integration import probes
from tests.integration.sshcluster import ensure_accounts

from ..conftest import Engine, make_settings, redis_flush, wait_for
from .test_slurm_backend import slurm  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

DB = "/2"
# $1 bob's job folder, $2 E2E_HOME, $3 bob's run pid, $4 bob's Slurm job id, $5 SLURM_CONF, $6 stack.json,
# $7 slurmd's pid.
CONTROLS = {"control": 'ls "$PWD"', "control-squeue": 'SLURM_CONF="$5" squeue -h -j "$4" | grep -q "$4"'}
ATTEMPTS = {
    "bob-dir": 'ls "$1"',
    "bob-run": 'cat "$1"/runs/run-001/pid',
    "signal-bob": 'kill -0 "$3"',
    "bob-environ": 'cat /proc/"$3"/environ',
    "scancel-bob": 'SLURM_CONF="$5" scancel "$4"',
    "suspend-bob": 'SLURM_CONF="$5" scontrol suspend "$4"',
    "slurm-records": 'ls "$2/slurm"',
    "stack-json": 'cat "$6"',
    "munge-key": 'cat /etc/munge/munge.key',
    "slurmd-environ": 'cat /proc/"$7"/environ',
    "engine-env": 'env | grep -qi -e redis -e E2E_HOME -e E2E_RUN_AS',
}
PROBE = probes.script({**CONTROLS, **ATTEMPTS})


def test_alices_job_reaches_nothing_of_bobs_allocation_or_of_the_engines(slurm, redis_url, tmp_path):  # noqa: F811
    ensure_accounts()
    redis_flush(redis_url + DB)
    settings = make_settings(tmp_path / "home", redis_url + DB, slurm_partition=slurm.partition, launch_timeout=20)
    engine = Engine(settings, worker_env={"SLURM_CONF": str(slurm.conf)})
    backend = SlurmBackend(settings)
    bob = lookup("bob")
    node = backend.inventory()[0]
    try:
        users = probes.owners(engine, "alice")
        bob_slurm = backend.allocate("jb", [node], 1, account=bob)   # bob's allocation, beside the engine's jobs
        backend.prepare_node(node, "jb", bob)
        run_dir = settings.root / "jobs" / "jb" / "runs" / "run-001"
        run_dir.parent.parent.parent.mkdir(mode=0o711, exist_ok=True)   # as the engine makes them: jobs/ passable,
        run_dir.parent.parent.mkdir(mode=0o700)                          # and a job's folder its owner's alone
        run_dir.mkdir(parents=True)
        (run_dir / "w.sh").write_text("echo $$ > pid\nexec sleep 300\n")
        backend.hand_over(node, settings.root / "jobs" / "jb", bob)
        backend.spawn_detached(node, ["sh", "w.sh"], cwd=run_dir, account=bob)
        bob_pid = int(wait_for(lambda: (run_dir / "pid").exists() and (run_dir / "pid").read_text(), 30, "bob's pid"))
        slurmd = subprocess.run(["pgrep", "-o", "-x", "slurmd"], capture_output=True, text=True).stdout.strip()
        assert slurmd, "slurmd runs on this machine"
        argv = ["bash", "-c", PROBE, "probe", settings.root / "jobs" / "jb", settings.root, bob_pid, bob_slurm,
                slurm.conf, settings.stack_file, slurmd]
        probe = users["alice"].submit_data({"name": "probe", "desktop": {"enabled": False},
                                            "cluster": {"backend": "slurm", "nodes": 1},
                                            "solver": {"name": "command", "command": [str(a) for a in argv]}})
        run = _wait_ended(engine, slurm, probe)
        out = (JobPaths.for_job(settings.root, probe).root / "runs" / "run-001" / "output.log").read_text()
        assert run.state is RunState.COMPLETED, (run.state, run.reason, out)
        probes.check(out, set(CONTROLS), set(ATTEMPTS))
        assert backend.allocation_state("jb") == "RUNNING" and backend.group_alive(node, bob_pid)
        engine.client.terminate(probe)
    finally:
        backend.release("jb")
        engine.close()


def _wait_ended(engine, slurm, job_id: str):  # noqa: F811 (slurm: the cluster, not the fixture)
    """The probe's run once it ended; when it does not, where the job, its run and Slurm stood."""
    def ended():
        doc = engine.client.status(job_id)
        return doc.runs_detail and doc.runs_detail[0].state in RUN_ENDED and doc.runs_detail[0]
    try:
        return wait_for(ended, 120, "the probe to end")
    except AssertionError as exc:
        doc = engine.client.status(job_id)
        queue = subprocess.run(["squeue", "-a", "-o", "%i %u %T %r %C %N"], env=slurm.env, capture_output=True,
                               text=True, timeout=10).stdout
        runs = [(r.state.value, r.reason) for r in doc.runs_detail]
        raise AssertionError(f"{exc}: job {doc.state.value} (waiting: {doc.waiting}), runs {runs}; "
                             f"squeue:\n{queue}") from None
