"""Fluent plugin: transcript parsing (columns from the header), failure lines, journal for fresh and restart runs,
licences, and the emulator honouring the check/exit files named at the top of the journal."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from orchestrator.model.errors import UserError
from solvers.base import Progress, RunMode
from solvers.contract import MemoryFiles, launch_context, prepare_and_render
from solvers.fluent import EXIT_FILE, Fluent, FluentOptions
from tests.unit.solver_cases import DATA, run_emulated

HEADER = "  iter  continuity  x-velocity  y-velocity  z-velocity      energy           k     epsilon     time/iter\n"
ROW = "     {}  1.0000e+00  7.3928e-05  7.8443e-05  3.5856e-05  2.9343e-05  1.0087e-01  1.3957e+01   0:00:14  149\n"


def options(**extra) -> FluentOptions:
    return FluentOptions.model_validate({"name": "fluent", "case": str(DATA / "elbow.cas.h5"), **extra})


def test_residual_columns_come_from_the_header_even_across_chunks():
    plugin = Fluent()
    first = plugin.parse_progress(HEADER + ROW.format(1), None)
    assert first.step == 1 and first.residuals["epsilon"] == pytest.approx(13.957)
    assert list(first.residuals) == ["continuity", "x-velocity", "y-velocity", "z-velocity", "energy", "k", "epsilon"]
    later = plugin.parse_progress(ROW.format(2), first)  # the header was in the previous chunk
    assert later.step == 2 and later.residuals["x-velocity"] == pytest.approx(7.3928e-05)


def test_a_different_model_set_changes_the_columns():
    text = ("  iter  continuity  x-velocity  y-velocity      energy     time/iter\n"
            "    10  1.0000e-02  2.0000e-03  3.0000e-03  4.0000e-04  0:00:01  90\n")
    progress = Fluent().parse_progress(text, None)
    assert set(progress.residuals) == {"continuity", "x-velocity", "y-velocity", "energy"}


def test_convergence_and_transient_lines():
    plugin = Fluent()
    progress = plugin.parse_progress("!   90 solution is converged\n", Progress(step=90))
    assert progress.converged and "90" in progress.message
    progress = plugin.parse_progress("Flow time = 1.2000e-02s, time step = 12\n", None)
    assert progress.step == 12 and progress.solver_time == pytest.approx(0.012)


@pytest.mark.parametrize("line", ["Divergence detected in AMG solver: pressure coupled",
                                  "Error at host: floating point exception",
                                  "===   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES"])
def test_failure_lines_fail_the_run_whatever_the_exit_code(line):
    outcome = Fluent().judge_exit(0, ROW.format(5) + line + "\n")
    assert not outcome.ok and line.split(":")[0].strip("= ") in outcome.reason
    assert Fluent().judge_exit(0, ROW.format(5) + "Halting, exit requested by the journal.\n").ok


def test_journal_sets_the_control_files_first_and_initialises_a_fresh_run(tmp_path):
    ctx = launch_context(tmp_path / "run", 3)
    prepared, _ = prepare_and_render(Fluent(), options(iterations=200), ctx)
    journal = (ctx.run_dir / "run-1.jou").read_text().splitlines()
    commands = [line for line in journal if not line.startswith(";")]
    assert commands[:2] == ['(set! checkpoint/check-filename "./check-fluent")',
                            '(set! checkpoint/exit-filename "./exit-fluent")']
    assert "/solve/initialize/hyb-initialization" in commands and "/solve/iterate 200" in commands
    assert commands[-1] == "exit yes"
    assert (ctx.run_dir / "fluent.hosts").read_text().splitlines() == ["node1.cluster"] * 2 + ["node2.cluster"] * 2 \
        + ["node3.cluster"] * 2
    assert prepared.progress_total == 200


def test_restart_reads_the_newest_data_and_iterates_the_rest(tmp_path):
    ctx = launch_context(tmp_path / "run", 1)
    prepare_and_render(Fluent(), options(iterations=200), ctx)
    (ctx.run_dir / "autosave" / "run-00050.dat.h5").write_text("iteration 50\n")
    (ctx.run_dir / "autosave" / "run-00120.dat.h5").write_text("iteration 120\n")
    again = launch_context(tmp_path / "run", 1, RunMode.RESTART, 2)
    prepared, script = prepare_and_render(Fluent(), options(iterations=200), again)
    journal = (again.run_dir / "run-2.jou").read_text()
    assert '/file/read-data "autosave/run-00120.dat.h5"' in journal and "/solve/iterate 80" in journal
    assert "initialize" not in journal
    assert prepared.log_file == "fluent-2.trn" and "run-2.jou" in script
    assert (again.run_dir / "run-1.jou").exists() and (again.run_dir / "autosave" / "run-00050.dat.h5").exists()
    assert Fluent().latest_checkpoint(again.run_dir) == "iteration 120: autosave/run-00120.dat.h5"


def test_restart_without_a_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="rerun"):
        Fluent().prepare(options(), launch_context(tmp_path / "run", 1, RunMode.RESTART, 2))


def test_licence_from_the_cluster_unless_the_spec_says_otherwise(tmp_path):
    site = {"ANSYSLMD_LICENSE_FILE": "1055@site", "ANSYSLI_SERVERS": "2325@site", "UNRELATED": "x"}
    prepared = Fluent().prepare(options(), launch_context(tmp_path / "a", 1, site_env=site))
    assert prepared.env == {"ANSYSLMD_LICENSE_FILE": "1055@site", "ANSYSLI_SERVERS": "2325@site"}
    prepared = Fluent().prepare(options(license_file="1055@mine"), launch_context(tmp_path / "b", 1, site_env=site))
    assert prepared.env["ANSYSLMD_LICENSE_FILE"] == "1055@mine"
    assert "1055@mine" not in options(license_file="1055@mine").model_dump_json()


def test_a_user_journal_and_transient_settings_exclude_each_other(tmp_path):
    journal = tmp_path / "mine.jou"
    journal.write_text("/solve/iterate 10\nexit yes\n")
    with pytest.raises(ValidationError, match="journal"):
        options(journal=str(journal), time_steps=10)


def test_emulator_checkpoints_on_the_check_file_and_stops_on_the_exit_file(tmp_path):
    ctx = launch_context(tmp_path / "run", 3)
    prepare_and_render(Fluent(), options(iterations=5000, autosave_every=1000), ctx)
    proc = run_emulated(ctx.run_dir, wait=False)
    log = ctx.run_dir / "fluent-1.trn"
    _wait_for(lambda: log.exists() and log.read_text().count("\n") > 30)
    (ctx.run_dir / "check-fluent").touch()
    _wait_for(lambda: "Checkpointing" in log.read_text())
    assert proc.poll() is None, "the check file must not stop the run"
    assert Fluent().request_stop(MemoryFiles(ctx.run_dir)) is True and (ctx.run_dir / EXIT_FILE).exists()
    assert proc.wait(30) == 0
    text = log.read_text()
    assert "exit requested" in text and not (ctx.run_dir / EXIT_FILE).exists()
    assert (ctx.run_dir / "#restart.inp").exists()
    assert 'Host spawning Node 5 on machine "node3.cluster"' in text and "run tag: job0001/run-001" in text
    progress = Fluent().parse_progress(text, None)
    saved = Fluent().latest_checkpoint(ctx.run_dir)
    assert saved.startswith(f"iteration {int(progress.step)}:")

    # the restart continues from the saved iteration to the end
    again = launch_context(tmp_path / "run", 3, RunMode.RESTART, 2)
    prepare_and_render(Fluent(), options(iterations=int(progress.step) + 20), again)
    assert run_emulated(again.run_dir).returncode == 0
    resumed = Fluent().parse_progress((again.run_dir / "fluent-2.trn").read_text(), None)
    assert resumed.step == progress.step + 20
    assert Fluent().judge_exit(0, (again.run_dir / "fluent-2.trn").read_text()).ok


def test_emulator_refuses_unknown_flags_and_a_missing_exit(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.sh").write_text("fluent 3ddp -g -t2 -bogus -i x.jou\n")
    result = run_emulated(run)
    assert result.returncode == 2 and "-bogus" in result.stderr
    (run / "x.jou").write_text(f'/file/read-case "{DATA / "elbow.cas.h5"}"\n/solve/initialize/initialize-flow\n'
                               "/solve/iterate 2\n")
    (run / "run.sh").write_text("fluent 3ddp -g -t2 -i x.jou > t.trn\n")
    assert run_emulated(run).returncode == 1
    assert not Fluent().judge_exit(1, (run / "t.trn").read_text()).ok


def _wait_for(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
