"""Mechanical APDL plugin: -machines from the allocation, .out/.mntr progress, *** ERROR *** judgement,
the .abt stop and the ANTYPE,,RESTART deck, checked against the ansys<NNN> emulator."""

from __future__ import annotations

import time

import pytest

from orchestrator.model.errors import UserError
from solvers.base import RunMode
from solvers.contract import MemoryFiles, launch_context, prepare_and_render
from solvers.mechanical import Mechanical, MechanicalOptions
from tests.unit.solver_cases import DATA, run_emulated

OUT = """    FORCE CONVERGENCE VALUE   =  0.8208E+02  CRITERION=  0.5000E+00
         MOMENT CONVERGENCE VALUE =   0.000      CRITERION=   15.96
    EQUIL ITER   3 COMPLETED.  NEW TRIANG MATRIX.  MAX DOF INC=  0.5531E-03
    >>> SOLUTION CONVERGED AFTER EQUILIBRIUM ITERATION   3
 *** LOAD STEP     1   SUBSTEP     4  COMPLETED.    CUM ITER =     12
 *** TIME =      0.200000         TIME INC =      0.050000
"""
MNTR = "     3      1    1     4     12     1.0000       3.0000       7.0307      0.90065E-02   0.0000       2.1092\n"


def options(**extra) -> MechanicalOptions:
    return MechanicalOptions.model_validate({"name": "mechanical", "input": str(DATA / "beam.dat"), **extra})


def test_progress_from_the_output_and_the_monitor_file():
    progress = Mechanical().parse_progress(OUT, None)
    assert progress.step == pytest.approx(0.2) and progress.residuals["F"] == pytest.approx(82.08)
    assert progress.residuals["M"] == 0 and progress.residuals["M_criterion"] == pytest.approx(15.96)
    assert "substep 4" in progress.message
    assert Mechanical().parse_progress(MNTR, None).step == pytest.approx(3.0)


def test_errors_and_non_convergence_fail_the_run():
    tail = OUT + " *** ERROR ***                         CP =       0.123   TIME= 00:00:01\n Element 12 is distorted.\n"
    outcome = Mechanical().judge_exit(0, tail)
    assert not outcome.ok and "Element 12 is distorted." in outcome.reason
    assert not Mechanical().judge_exit(0, OUT + " *** SOLUTION NOT CONVERGED ***\n").ok
    assert Mechanical().judge_exit(0, OUT).ok and not Mechanical().judge_exit(8, OUT).ok


def test_machines_list_and_hybrid_processes(tmp_path):
    prepared, script = prepare_and_render(Mechanical(), options(threads_per_process=2),
                                          launch_context(tmp_path / "run", 3, cores=4))
    assert "-np 6 -machines node1.cluster:2:node2.cluster:2:node3.cluster:2" in script and "-nt 2" in script
    assert prepared.progress_total == 1.0  # TIME,1 in the deck


def test_stop_writes_the_abort_file_for_the_rendered_jobname(tmp_path):
    ctx = launch_context(tmp_path / "run", 1)
    prepare_and_render(Mechanical(), options(jobname="bracket"), ctx)
    assert Mechanical().request_stop(MemoryFiles(ctx.run_dir))
    assert (ctx.run_dir / "bracket.abt").read_text() == "nonlinear\n"


def test_restart_needs_the_restart_files(tmp_path):
    with pytest.raises(UserError, match="rerun"):
        Mechanical().prepare(options(), launch_context(tmp_path / "run", 1, RunMode.RESTART, 2))


def test_emulator_aborts_on_the_abt_file_and_restart_finishes_the_load_step(tmp_path):
    ctx = launch_context(tmp_path / "run", 3)
    prepare_and_render(Mechanical(), options(jobname="beam", version="232"), ctx)
    proc = run_emulated(ctx.run_dir, wait=False, E2E_EMULATOR_DELAY="0.03")
    out = ctx.run_dir / "beam-1.out"
    deadline = time.monotonic() + 20
    while not (out.exists() and "SUBSTEP     3" in out.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert (ctx.run_dir / "beam.lock").exists()
    Mechanical().request_stop(MemoryFiles(ctx.run_dir))
    assert proc.wait(30) == 0
    text = out.read_text()
    assert "terminated by the user via the abort file" in text and "DISTRIBUTED-MEMORY PARALLEL run with 6" in text
    stopped_at = Mechanical().parse_progress(text, None).step
    assert 0 < stopped_at < 1.0 and not (ctx.run_dir / "beam.lock").exists()
    assert Mechanical().latest_checkpoint(ctx.run_dir).startswith("beam.r001")

    again = launch_context(tmp_path / "run", 3, RunMode.RESTART, 2)
    _, script = prepare_and_render(Mechanical(), options(jobname="beam", version="232"), again)
    assert "ANTYPE,,RESTART" in (again.run_dir / "restart-2.inp").read_text() and "-i restart-2.inp" in script
    assert run_emulated(again.run_dir).returncode == 0
    text = (again.run_dir / "beam-2.out").read_text()
    assert "RESTARTING FROM LOAD STEP 1" in text and Mechanical().judge_exit(0, text).ok
    assert Mechanical().parse_progress(text, None).step == pytest.approx(1.0)


def test_emulator_refuses_a_stale_lock_and_bad_flags(tmp_path):
    ctx = launch_context(tmp_path / "run", 1)
    prepare_and_render(Mechanical(), options(jobname="beam"), ctx)
    (ctx.run_dir / "beam.lock").write_text("123")
    assert run_emulated(ctx.run_dir).returncode == 8
    assert not Mechanical().judge_exit(8, (ctx.run_dir / "beam-1.out").read_text()).ok
    assert "beam.lock" not in [p for p in Mechanical.cleanup_patterns if p == "beam.lock"]
    assert any(ctx.run_dir.glob(Mechanical.cleanup_patterns[1]))  # *.lock is cleaned before a restart
    (ctx.run_dir / "run.sh").write_text("ansys241 -b -dis -np 2 -machines localhost:4 -i x -o y\n")
    result = run_emulated(ctx.run_dir)
    assert result.returncode == 2 and "does not match" in result.stderr
