"""CalculiX plugin: the deck as given plus a restart record per step (or unchanged, saying why), *INCLUDE
trees copied into the run, completed steps from .sta, judgement by ' Job finished' (the exit code lies), the
restart deck and first-node-only placement."""

from __future__ import annotations

import pytest

from orchestrator.model.errors import UserError
from solvers.base import RunMode
from solvers.calculix import NO_RESTART, CalculiX, CalculiXOptions, completed_steps
from solvers.calculix_deck import RESTART_WRITE
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


def deck_options(tmp_path, text: str | bytes, **extra) -> CalculiXOptions:
    deck = tmp_path / "in" / "model.inp"
    deck.parent.mkdir(parents=True, exist_ok=True)
    deck.write_bytes(text if isinstance(text, bytes) else text.encode())
    return CalculiXOptions.model_validate({"name": "calculix", "input": str(deck), **extra})


def test_the_deck_is_kept_as_given_plus_a_restart_record_per_step(tmp_path):
    ctx = launch_context(tmp_path / "run", 1)
    prepared, _ = prepare_and_render(CalculiX(), deck_options(tmp_path, DECK), ctx)
    written = (ctx.run_dir / "job.inp").read_text()
    assert written.replace(RESTART_WRITE + "\n", "") == DECK  # the user's own *RESTART,WRITE stays too
    assert written.count(RESTART_WRITE + "\n*END STEP") == 2
    assert prepared.progress_total == pytest.approx(2.5) and "restart" not in prepared.info
    assert not (ctx.run_dir / NO_RESTART).exists()


def test_lower_case_steps_and_cards_between_steps_stay_where_ccx_reads_them(tmp_path):
    deck = "*node\n1,0,0,0\n*step\n*static\n0.5,1.\n*endstep\n*boundary\n1,1,3\n*Step, nlgeom\n*Static\n*End Step\n"
    ctx = launch_context(tmp_path / "run", 1)
    prepare_and_render(CalculiX(), deck_options(tmp_path, deck), ctx)
    written = (ctx.run_dir / "job.inp").read_text()
    assert written == deck.replace("*endstep", RESTART_WRITE + "\n*endstep").replace(
        "*End Step", RESTART_WRITE + "\n*End Step")


def test_a_deck_that_cannot_take_restart_records_runs_unchanged_and_says_so(tmp_path):
    deck = b"*HEADING\nd\xe9formation\n*STEP\n*STATIC\n0.1,1.\n"  # no *END STEP; a latin-1 byte
    ctx = launch_context(tmp_path / "run", 1)
    prepared, _ = prepare_and_render(CalculiX(), deck_options(tmp_path, deck), ctx)
    assert (ctx.run_dir / "job.inp").read_bytes() == deck
    assert prepared.info["restart"].startswith("pause/restart unavailable") and "no *END STEP" in prepared.info[
        "restart"]
    files = MemoryFiles(ctx.run_dir)
    assert CalculiX().request_stop(files) is False and files.written == []  # the engine stops it by signal
    (ctx.run_dir / "job.rout").write_bytes(b"x")
    assert CalculiX().latest_checkpoint(ctx.run_dir) is None
    with pytest.raises(UserError, match="unavailable for this deck.*no \\*END STEP"):
        CalculiX().prepare(deck_options(tmp_path, deck), launch_context(tmp_path / "run", 1, RunMode.RESTART, 2))


def test_include_tree_is_copied_into_the_run_at_its_relative_paths(tmp_path):
    main = "*INCLUDE, INPUT=mesh/Part.inp\n*include,input=steps.inp\n"
    opts = deck_options(tmp_path, main)
    (tmp_path / "in" / "mesh").mkdir()
    (tmp_path / "in" / "mesh" / "Part.inp").write_text("*NODE\n1,0,0,0\n*INCLUDE,INPUT=mesh/more.inp\n")
    (tmp_path / "in" / "mesh" / "more.inp").write_text("2,1,0,0\n")
    (tmp_path / "in" / "steps.inp").write_text("*STEP\n*STATIC\n0.1,3.\n*END STEP\n")
    ctx = launch_context(tmp_path / "run", 1)
    prepared, _ = prepare_and_render(CalculiX(), opts, ctx)
    written = (ctx.run_dir / "job.inp").read_text()
    assert written.startswith("*INCLUDE, INPUT=mesh/Part.inp\n")  # no step in it: ccx opens it in the run
    assert (ctx.run_dir / "mesh" / "Part.inp").is_file() and (ctx.run_dir / "mesh" / "more.inp").is_file()
    assert RESTART_WRITE + "\n*END STEP\n" in written and prepared.progress_total == pytest.approx(3.0)


def test_a_missing_include_is_refused_naming_it_and_one_outside_the_folder_runs_unchanged(tmp_path):
    ctx = launch_context(tmp_path / "run", 1)
    with pytest.raises(UserError, match="INPUT=nothere.inp: no such file"):
        CalculiX().prepare(deck_options(tmp_path, "*INCLUDE,INPUT=nothere.inp\n"), ctx)
    (tmp_path / "secret.inp").write_text("*STEP\n*STATIC\n*END STEP\n")
    deck = "*INCLUDE,INPUT=../secret.inp\n"
    prepared = CalculiX().prepare(deck_options(tmp_path, deck), ctx)
    assert (ctx.run_dir / "job.inp").read_text() == deck and not (ctx.run_dir / "secret.inp").exists()
    assert "../secret.inp: outside the deck's folder" in prepared.info["restart"]


def test_render_output_says_pause_restart_is_unavailable(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from orchestrator.cli.main import app

    monkeypatch.setenv("E2E_HOME", str(tmp_path / "home"))
    opts = deck_options(tmp_path, "*STEP\n*STATIC\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: c\nsolver: {{name: calculix, input: {opts.input}}}\ndesktop: {{enabled: false}}\n"
                    "cluster: {backend: local, nodes: 1}\n")
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(tmp_path / "out"), "--hosts", "n1"])
    assert result.exit_code == 0, result.output
    assert "note (restart): pause/restart unavailable" in result.output.replace("\n", " ")


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
