"""CalculiX plugin: deck splitting with per-step restart records, completed steps from .sta, judgement by
' Job finished' (the exit code lies), the restart deck and first-node-only placement."""

from __future__ import annotations

import pytest

from orchestrator.model.errors import UserError
from solvers.base import RunMode
from solvers.calculix import CalculiX, CalculiXOptions, completed_steps, split_deck
from solvers.contract import MemoryFiles, launch_context, prepare_and_render
from tests.unit.solver_cases import DATA

DECK = """*HEADING
test
*NODE
1,0,0,0
*RESTART,WRITE,FREQUENCY=5
*STEP
*STATIC
0.1,2.
*END STEP
** a comment *STEP inside
*STEP,NLGEOM
*DYNAMIC
0.1,0.5
*END STEP
"""


def options(**extra) -> CalculiXOptions:
    return CalculiXOptions.model_validate({"name": "calculix", "input": str(DATA / "cantilever.inp"), **extra})


def test_deck_is_split_into_steps_each_writing_a_restart_record():
    deck = split_deck(DECK)
    assert deck.model.startswith("*HEADING") and "*RESTART" not in deck.model
    assert len(deck.steps) == 2 and deck.periods == [2.0, 0.5]
    assert all(s.count("*RESTART,WRITE,FREQUENCY=1") == 1 for s in deck.steps)
    with pytest.raises(UserError, match="STEP"):
        split_deck("*NODE\n1,0,0,0\n")


def test_completed_steps_follow_the_sta_table(tmp_path):
    rows = ["     1         20     1     2  0.200000E+01  0.200000E+01  0.100000E+00",
            "     2          1     1     2  0.210000E+01  0.100000E+00  0.100000E+00"]
    (tmp_path / "job.sta").write_text("SUMMARY\n header\n" + rows[0] + "\n")
    assert completed_steps(tmp_path, "job", [2.0, 0.5]) == 1
    (tmp_path / "job.sta").write_text("SUMMARY\n header\n" + "\n".join(rows) + "\n")
    assert completed_steps(tmp_path, "job", [2.0, 0.5]) == 1
    (tmp_path / "job_r2.sta").write_text("SUMMARY\n header\n     2  5  1  2  0.250000E+01  0.500000E+00  0.1E+00\n")
    assert completed_steps(tmp_path, "job", [2.0, 0.5]) == 2


def test_judged_by_job_finished_not_by_the_exit_code():
    assert not CalculiX().judge_exit(0, " *ERROR in readinput: cannot open file job.inp\n").ok
    assert not CalculiX().judge_exit(139, "").ok
    assert CalculiX().judge_exit(0, " Job finished\n").ok
    progress = CalculiX().parse_progress(" increment 3 attempt 1 \n actual total time=3.000000e-01\n"
                                         " largest residual force= 0.000005 in node 101 and dof 3\n", None)
    assert progress.step == pytest.approx(0.3) and progress.residuals == {"force": pytest.approx(5e-6)}


def test_runs_on_the_first_node_only_and_says_so(tmp_path):
    prepared, script = prepare_and_render(CalculiX(), options(), launch_context(tmp_path / "run", 3, cores=4))
    assert "export OMP_NUM_THREADS=4" in script and "ccx -i job" in script
    assert "node1" in prepared.info["nodes"] and "2 other" in prepared.info["nodes"]
    assert prepared.progress_total == pytest.approx(4.0)
    assert CalculiX().request_stop(MemoryFiles(tmp_path / "run")) and (tmp_path / "run" / "e2e-stop").exists()


def test_restart_deck_reads_the_record_and_repeats_the_unfinished_steps(tmp_path):
    ctx = launch_context(tmp_path / "run", 1)
    prepare_and_render(CalculiX(), options(), ctx)
    with pytest.raises(UserError, match="rerun"):
        CalculiX().prepare(options(), launch_context(tmp_path / "run", 1, RunMode.RESTART, 2))
    (ctx.run_dir / "job.rout").write_bytes(b"record")
    (ctx.run_dir / "job.sta").write_text("S\nH\n     1   50  1  2  0.100000E+01  0.100000E+01  0.2E-01\n"
                                         "     2    7  1  2  0.114000E+01  0.140000E+00  0.2E-01\n")
    again = launch_context(tmp_path / "run", 1, RunMode.RESTART, 2)
    prepared, script = prepare_and_render(CalculiX(), options(), again)
    deck = (again.run_dir / "job_r2.inp").read_text()
    assert "*RESTART,READ\n" in deck and deck.count("*STEP") == 3 and "*NODE\n" not in deck
    assert (again.run_dir / "job_r2.rin").read_bytes() == b"record" and "ccx -i job_r2" in script
    assert prepared.log_file == "ccx-2.log"
    assert CalculiX().latest_checkpoint(again.run_dir) == "after step 1 (job.rout)"
