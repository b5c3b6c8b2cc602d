"""STAR-CCM+ plugin: residual table, stopping criteria, PoD licensing through the environment, the published
server address, and the emulator's ABORT/CHECKPOINT files and `name@iteration.sim` restarts."""

from __future__ import annotations

import socket
import time

import pytest

from orchestrator.model.errors import UserError
from orchestrator.worker.stack import free_port
from solvers.base import RunMode
from solvers.contract import MemoryFiles, launch_context, prepare_and_render
from solvers.starccm import StarCCM, StarCCMOptions
from tests.unit.solver_cases import DATA, run_emulated

TABLE = ("  Iteration    Continuity    X-momentum    Y-momentum    Z-momentum           Tke           Tdr\n"
         "          2  4.636743e-01  1.000000e+00  1.000000e+00  1.000000e+00  9.804553e-01  9.938452e-01\n")


def options(**extra) -> StarCCMOptions:
    return StarCCMOptions.model_validate({"name": "starccm", "sim": str(DATA / "pipe.sim"), **extra})


def test_residual_table_and_stopping_criteria():
    progress = StarCCM().parse_progress(TABLE, None)
    assert progress.step == 2 and progress.residuals["Continuity"] == pytest.approx(0.4636743)
    assert set(progress.residuals) == {"Continuity", "X-momentum", "Y-momentum", "Z-momentum", "Tke", "Tdr"}
    done = StarCCM().parse_progress("Stopping criterion Maximum Steps satisfied.\n", progress)
    assert "Maximum Steps" in done.message and not done.converged
    assert StarCCM().parse_progress("Stopping criterion Continuity Criterion satisfied.\n", progress).converged


def test_judgement_needs_the_saved_simulation():
    assert StarCCM().judge_exit(0, "Simulation saved to /r/pipe@00100.sim\nServer process exited with code 0\n").ok
    assert not StarCCM().judge_exit(0, "Server process exited with code 0\n").ok
    assert not StarCCM().judge_exit(1, "error: Floating point exception\n").ok


def test_podkey_only_in_the_environment_and_power_needs_one(tmp_path):
    prepared, script = prepare_and_render(StarCCM(), options(power=True, podkey="KEY-123"),
                                          launch_context(tmp_path / "a", 1))
    assert prepared.env["LM_PROJECT"] == "KEY-123" and "KEY-123" not in script and "-power" in script
    with pytest.raises(UserError, match="podkey"):
        StarCCM().prepare(options(power=True), launch_context(tmp_path / "b", 1))
    prepared = StarCCM().prepare(options(power=True), launch_context(tmp_path / "c", 1, site_env={"LM_PROJECT": "S"}))
    assert prepared.env["LM_PROJECT"] == "S"


def test_emulator_stop_checkpoint_restart_and_the_published_server(tmp_path):
    port = free_port()
    ctx = launch_context(tmp_path / "run", 3)
    prepared, script = prepare_and_render(StarCCM(), options(max_steps=2000, server_port=port), ctx)
    assert prepared.info["server"] == f"node1.cluster:{port}" and f"-port {port}" in script
    proc = run_emulated(ctx.run_dir, wait=False, E2E_EMULATOR_DELAY="0.02")
    log = ctx.run_dir / "starccm-1.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and "Server::start" in log.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:  # a desktop client can attach
        assert client.recv(64).startswith(b"STAR-CCM+ server")
    (ctx.run_dir / "CHECKPOINT").touch()
    while not (ctx.run_dir / "CHECKPOINT~").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert proc.poll() is None and StarCCM().latest_checkpoint(ctx.run_dir)
    assert StarCCM().request_stop(MemoryFiles(ctx.run_dir)) and (ctx.run_dir / "ABORT").exists()
    assert proc.wait(30) == 0
    text = log.read_text()
    assert "Stopping criterion Stop File satisfied." in text and StarCCM().judge_exit(0, text).ok
    stopped = StarCCM().parse_progress(text, None).step
    assert StarCCM().latest_checkpoint(ctx.run_dir) == f"pipe@{int(stopped):05d}.sim"

    for pattern in StarCCM.cleanup_patterns:  # what the engine does before a restart
        for path in ctx.run_dir.glob(pattern):
            path.unlink()
    again = launch_context(tmp_path / "run", 3, RunMode.RESTART, 2)
    _, script = prepare_and_render(StarCCM(), options(max_steps=int(stopped) + 15), again)
    assert f"pipe@{int(stopped):05d}.sim" in script
    assert run_emulated(again.run_dir).returncode == 0
    resumed = StarCCM().parse_progress((again.run_dir / "starccm-2.log").read_text(), None)
    assert resumed.step == stopped + 15


def test_emulator_refuses_unknown_flags(tmp_path):
    (tmp_path / "run.sh").write_text(f"starccm+ -batch run -np 2 -nosuchflag {DATA / 'pipe.sim'}\n")
    result = run_emulated(tmp_path)
    assert result.returncode == 2 and "-nosuchflag" in result.stderr
