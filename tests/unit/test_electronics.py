"""Electronics Desktop plugin: the machine list, batch options, -monitor progress, completion judgement, and the
emulator's lock file and solved passes carried into a restart."""

from __future__ import annotations

import os
import signal
import time

import pytest

from solvers.base import RunMode
from solvers.contract import MemoryFiles, launch_context, prepare_and_render
from solvers.electronics import Electronics, ElectronicsOptions
from tests.unit.solver_cases import DATA, run_emulated

PASS = "[info] Project:patch, Design:HFSSDesign1 (DrivenModal), Setup1 : Adaptive Pass 4 of 10, Delta S: 0.04536\n"
DONE = "[info] Normal completion of simulation on server: Local Machine. (12:36:57 PM  Jul 20, 2026)\n"


def options(**extra) -> ElectronicsOptions:
    return ElectronicsOptions.model_validate({"name": "electronics", "project": str(DATA / "patch.aedt"), **extra})


def test_progress_and_completion():
    progress = Electronics().parse_progress(PASS, None)
    assert (progress.step, progress.total, progress.residuals) == (4, 10, {"delta_s": pytest.approx(0.04536)})
    assert Electronics().judge_exit(0, PASS + DONE).ok
    # batchsolve may exit 0 without solving: no completion line, no success
    assert not Electronics().judge_exit(0, PASS).ok
    assert not Electronics().judge_exit(0, "[error] Project:patch: license checkout failed\n").ok
    assert not Electronics().judge_exit(0, PASS + "[info] Fatal solver process terminated\n" + DONE).ok


def test_machine_list_and_options(tmp_path):
    _, script = prepare_and_render(Electronics(), options(design="D1", setup="S1", tasks_per_node=2, gpus_per_node=1),
                                   launch_context(tmp_path / "run", 3, cores=8))
    assert "list=node1.cluster:2:8:90%:1,node2.cluster:2:8:90%:1,node3.cluster:2:8:90%:1" in script
    assert "HFSS/NumCoresPerDistributedTask=4" in script and "-batchsolve D1:Nominal:S1 patch.aedt" in script


def test_stop_ends_the_solve_after_the_current_pass_and_keeps_the_passes(tmp_path):
    ctx = launch_context(tmp_path / "run", 1)
    prepare_and_render(Electronics(), options(), ctx)
    proc = run_emulated(ctx.run_dir, wait=False, E2E_EMULATOR_DELAY="0.02")
    log = ctx.run_dir / "ansysedt-1.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and "Adaptive Pass 2" in log.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    files = MemoryFiles(ctx.run_dir)
    assert Electronics().request_stop(files) and files.written == ["e2e-stop"]
    assert proc.wait(30) == 0
    text = log.read_text()
    outcome = Electronics().judge_exit(0, text)
    assert outcome.ok and "stopped on request" in outcome.reason and "Normal completion" not in text
    assert Electronics().latest_checkpoint(ctx.run_dir).startswith("solved data in patch.aedtresults")


def test_killed_solve_leaves_a_lock_the_restart_cleans_and_passes_are_reused(tmp_path):
    ctx = launch_context(tmp_path / "run", 3)
    prepare_and_render(Electronics(), options(), ctx)
    proc = run_emulated(ctx.run_dir, wait=False, E2E_EMULATOR_DELAY="0.02")
    log = ctx.run_dir / "ansysedt-1.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and "Adaptive Pass 3" in log.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the engine's fallback: the whole process group, without warning
    proc.wait(10)
    time.sleep(0.3)
    lock = ctx.run_dir / "patch.aedt.lock"
    assert lock.exists(), "a killed solve leaves its lock"
    assert Electronics().latest_checkpoint(ctx.run_dir)
    again = launch_context(tmp_path / "run", 3, RunMode.RESTART, 2)
    prepare_and_render(Electronics(), options(), again)
    assert run_emulated(again.run_dir).returncode == 1  # the stale lock blocks the project...
    for pattern in Electronics.cleanup_patterns:  # ...until the engine's cleanup removes it
        for path in again.run_dir.glob(pattern):
            path.unlink()
    assert run_emulated(again.run_dir).returncode == 0
    text = (again.run_dir / "ansysedt-2.log").read_text()
    assert "Reusing" in text and "Adaptive Pass 1 " not in text and Electronics().judge_exit(0, text).ok
    assert (again.run_dir / "patch.aedt.q.completed").exists()
    assert Electronics().judge_exit(0, text).reason == "patch.aedt.q.completed written"
