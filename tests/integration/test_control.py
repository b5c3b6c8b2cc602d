"""Interactive control on real OpenFOAM runs: pause and restart (numerically the same result), freeze and
resume (every rank stopped), edits (refused, recorded, live), rerun, history."""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path

import pytest

from orchestrator.cluster.local import process_states, tagged_processes
from orchestrator.model.errors import InvalidState, SpecError
from orchestrator.model.events import EventKind
from orchestrator.model.records import Run
from orchestrator.model.states import JobState, RunState

from .conftest import PITZ, wait_for

pytestmark = pytest.mark.integration

END = 100  # pitzDaily converges near iteration 280, so both runs stop at exactly this iteration
# pitzDaily amplifies a last-digit difference ~10x every dozen iterations at this stage, so restart data
# must be exact: binary fields restart bit for bit (ASCII with 15 digits drifted to 1e-3 by iteration 200).


def _spec(name: str, case: Path, **params) -> dict:
    return {"name": name, "solver": {"name": "openfoam", "application": "simpleFoam", "case": str(case),
                                     "parameters": {"endTime": END, "writeInterval": END, "writeFormat": "binary",
                                                    **params}},
            "cluster": {"backend": "local", "nodes": 2, "cores_per_node": 1}, "desktop": {"enabled": False}}


def _run(client, job_id: str) -> Run:
    doc = client.status(job_id)
    return next(r for r in doc.runs_detail if r.id == doc.current_run)


def _step(client, job_id: str) -> float:
    progress = _run(client, job_id).progress
    return progress.step if progress and progress.step is not None else -1


def read_field(path: Path) -> list[float]:
    """The internalField values of a binary OpenFOAM field file (64-bit scalars), flattened."""
    data = path.read_bytes()
    head = data.index(b"internalField")
    kind = b"vector" if b"List<vector>" in data[head:head + 80] else b"scalar"
    newline = data.index(b"\n", head)
    count_end = data.index(b"(", newline)
    count = int(data[newline:count_end])
    width = 3 if kind == b"vector" else 1
    return list(struct.unpack(f"<{count * width}d", data[count_end + 1:count_end + 1 + 8 * count * width]))


def _final(engine, job_id: str, run_id: str = "run-001") -> dict[str, list[float]]:
    time_dir = engine.settings.root / "jobs" / job_id / "runs" / run_id / str(END)
    return {name: read_field(time_dir / name) for name in ("U", "p")}


def test_paused_then_restarted_run_ends_with_the_same_fields(engine, openfoam, tmp_path):
    shutil.copytree(PITZ, tmp_path / "pitz")
    client = engine.client
    # Given the same case run once straight through ...
    straight = client.submit_data(_spec("straight", tmp_path / "pitz"))
    # ... and once paused part-way and restarted
    paused = client.submit_data(_spec("paused", tmp_path / "pitz"))
    wait_for(lambda: _step(client, paused) >= 30, 120, "the second run past iteration 30")
    client.pause(paused)
    doc = engine.wait_run(paused, timeout=120)
    run = doc.runs_detail[0]
    assert run.state is RunState.PAUSED, run
    assert run.exit_code == 0 and run.term_sent_at is None, "the pause needed SIGTERM"
    paused_at = run.progress.step
    assert 30 <= paused_at < END
    run_dir = engine.settings.root / "jobs" / paused / "runs" / "run-001"
    assert (run_dir / "processor0" / f"{paused_at:g}" / "U").is_file(), "no checkpoint at the pause point"
    # A running-only command is refused with the state and what is allowed
    with pytest.raises(InvalidState, match="allowed now: edit, restart, rerun, terminate"):
        client.pause(paused)
    # When it is restarted
    client.restart(paused)
    doc = engine.wait_run(paused, timeout=180)
    run = doc.runs_detail[0]
    # Then the second attempt continued from the checkpoint (counters continue) to the end
    assert run.state is RunState.COMPLETED, run
    assert run.attempt == 2 and run.progress.step == END
    log = (run_dir / "log.simpleFoam").read_text()
    assert f"Time = {paused_at:g}\n" in log and log.count("\nStarting time loop") == 2
    assert log.count(f"\nTime = {paused_at + 1:g}\n") == 1, "an iteration ran twice"
    engine.wait_run(straight, timeout=180)
    # And the final fields equal the uninterrupted run's
    a, b = _final(engine, straight), _final(engine, paused)
    for name in a:
        assert len(a[name]) == len(b[name]) > 1000
        scale = max(abs(v) for v in a[name])
        worst = max(abs(x - y) for x, y in zip(a[name], b[name], strict=False))
        assert worst <= 1e-12 * scale, f"{name}: max difference {worst:g} (scale {scale:g})"
    for job_id in (straight, paused):
        client.terminate(job_id)
    for job_id in (straight, paused):
        assert engine.wait_job_terminal(job_id).state is JobState.TERMINATED


def test_freeze_stops_every_rank_and_resume_continues(engine, openfoam, tmp_path):
    shutil.copytree(PITZ, tmp_path / "pitz")
    client = engine.client
    job_id = client.submit_data(_spec("frozen", tmp_path / "pitz", endTime=5000, writeInterval=5000))
    wait_for(lambda: _step(client, job_id) >= 10, 120, "progress past iteration 10")
    tag = f"{job_id}/run-001"
    ranks = [p for p in tagged_processes(tag)
             if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].endswith(b"simpleFoam")]
    assert len(ranks) == 2, "expected two simpleFoam ranks"
    # When the run is frozen
    client.pause(job_id, freeze=True)
    assert _run(client, job_id).state is RunState.FROZEN
    wait_for(lambda: process_states(tagged_processes(tag)) == {"T"}, 10, "every process of the run stopped")
    log = engine.settings.root / "jobs" / job_id / "runs" / "run-001" / "log.simpleFoam"
    # the engine has parsed everything written before the stop: the parse offset stops moving (the log may
    # end in a partial line, which is never parsed)
    def parse_settled():
        before = _run(client, job_id).log_offset or 0
        time.sleep(3 * engine.settings.reconcile_interval)
        return (_run(client, job_id).log_offset or 0) == before and log.stat().st_size - before < 200
    wait_for(parse_settled, 15, "the log parsed up to the freeze")
    size = log.stat().st_size
    step = _step(client, job_id)
    time.sleep(1.0)
    # Then nothing advances while frozen
    assert log.stat().st_size == size and _step(client, job_id) == step
    with pytest.raises(InvalidState, match="allowed now: pause, resume, terminate"):
        client.restart(job_id)
    # When it is resumed, the ranks run again and iterations continue
    client.resume(job_id)
    wait_for(lambda: "T" not in process_states(tagged_processes(tag)), 10, "the processes running again")
    wait_for(lambda: _step(client, job_id) > step + 5, 60, "iterations to continue after resume")
    # And a frozen run can be terminated (it is thawed first, then stopped gracefully)
    client.pause(job_id, freeze=True)
    client.terminate(job_id)
    doc = engine.wait_job_terminal(job_id, timeout=120)
    assert doc.runs_detail[0].state is RunState.STOPPED
    assert tagged_processes(tag) == []


def test_edits_are_validated_recorded_and_used_by_rerun_and_live(engine, openfoam, tmp_path):
    shutil.copytree(PITZ, tmp_path / "pitz")
    client = engine.client
    job_id = client.submit_data(_spec("edits", tmp_path / "pitz", endTime=30, writeInterval=10))
    doc = engine.wait_run(job_id, timeout=120)
    assert doc.runs_detail[0].state is RunState.COMPLETED
    # Invalid edits are refused with the field named, and change nothing
    with pytest.raises(SpecError, match="cluster"):
        client.edit(job_id, ["cluster.nodes=3"])
    with pytest.raises(SpecError, match=r"solver\.parameters"):
        client.edit(job_id, ["parameters.endTime=a;b"])
    with pytest.raises(SpecError, match="--file"):
        client.edit(job_id, files={str(tmp_path / "missing"): "system/fvSolution"})
    with pytest.raises(SpecError, match="--file"):
        client.edit(job_id, files={str(tmp_path / "pitz" / "system" / "fvSolution"): "../escape"})
    assert client.history(job_id).revision == 1
    # A valid edit: new parameters and a replaced input file
    schemes = tmp_path / "fvSchemes"
    schemes.write_text((tmp_path / "pitz" / "system" / "fvSchemes").read_text() + "\n// edited by test\n")
    if os.geteuid() == 0:  # copied as the job's account: a file it cannot read is refused, by name
        schemes.chmod(0o600)
        with pytest.raises(SpecError, match=f"{schemes} -> system/fvSchemes: Permission denied for OS account"):
            client.edit(job_id, files={str(schemes): "system/fvSchemes"})
        assert client.history(job_id).revision == 1
    schemes.chmod(0o644)
    result = client.edit(job_id, ["parameters.endTime=40", "limits.walltime=2h"],
                         files={str(schemes): "system/fvSchemes"}, message="longer")
    assert result["revision"] == 2
    assert {c["field"] for c in result["changes"]} == {"solver.parameters.endTime", "limits.walltime"}
    # Rerun: a new run directory from the inputs plus the edits; the first run's results stay
    client.rerun(job_id)
    doc = engine.wait_run(job_id, timeout=120)
    run2 = doc.runs_detail[1]
    assert doc.current_run == "run-002" and run2.state is RunState.COMPLETED and run2.revision == 2
    runs = engine.settings.root / "jobs" / job_id / "runs"
    assert (runs / "run-001" / "30").is_dir() and (runs / "run-002" / "40").is_dir()
    assert "// edited by test" in (runs / "run-002" / "system" / "fvSchemes").read_text()
    assert "// edited by test" not in (runs / "run-001" / "system" / "fvSchemes").read_text()
    assert doc.deadlines["walltime"] > doc.up_at
    # Live: raise endTime of a running solver; a value off the write interval is refused
    client.edit(job_id, ["parameters.endTime=5000", "parameters.writeInterval=5000"])
    client.rerun(job_id)
    wait_for(lambda: _step(client, job_id) >= 5, 120, "run-003 iterating")
    with pytest.raises(SpecError, match="write interval"):
        client.edit(job_id, ["parameters.endTime=4999"], live=True)
    reached = int(_step(client, job_id))
    new_end = (reached // 10 + 3) * 10
    client.edit(job_id, [f"parameters.endTime={new_end}", "parameters.writeInterval=10"], live=True)
    doc = engine.wait_run(job_id, timeout=120)
    run3 = doc.runs_detail[2]
    assert run3.state is RunState.COMPLETED and run3.progress.step == new_end
    assert (runs / "run-003" / str(new_end)).is_dir()
    history = client.history(job_id)
    assert [r["revision"] for r in history.revisions] == [1, 2, 3, 4]
    assert history.revisions[3]["live"] and history.revisions[1]["message"] == "longer"
    assert any(e.kind is EventKind.CONTROL and e.data.get("action") == "edit" for e in client.events(job_id))
    client.terminate(job_id)
    assert engine.wait_job_terminal(job_id).state is JobState.TERMINATED


def test_e2e_nodes_shows_the_engines_nodes_whatever_the_callers_settings(engine):
    """The worker publishes what it leases from (8 virtual nodes here); a CLI whose own environment says
    nothing of nodes (E2E_LOCAL_NODES unset: 4 by default) shows the engine's 8."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_") or k == "E2E_RUN_AS"}
    env.update(E2E_HOME=str(engine.settings.root), E2E_REDIS_URL=engine.settings.redis_url)

    def shown() -> list[str] | None:
        done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "nodes", "--json"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        names = [row["name"] for row in json.loads(done.stdout)]
        return names if len(names) == engine.settings.local_nodes else None

    assert wait_for(shown, 30, "the engine's nodes in `e2e nodes`") == \
        [f"node-{i:02d}" for i in range(1, engine.settings.local_nodes + 1)]
