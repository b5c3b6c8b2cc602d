"""The series surface: ControlService.series (the API route's answer) and `e2e watch JOB --series [NAME]`."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator.cli.watch import watch_series
from orchestrator.control.service import ControlService
from orchestrator.model.errors import NotFound
from orchestrator.model.settings import Settings
from orchestrator.model.states import RunState

SPEC = {"name": "s", "desktop": {"enabled": False}, "solver": {"name": "command", "command": ["sleep", "1"]}}


@pytest.fixture
def running(store):
    job_id = store.create_job(name="s", owner="alice", spec=SPEC, backend="local", solver="command")
    for state in (RunState.LAUNCHING, RunState.RUNNING):
        assert store.transition_run(job_id, "run-001", state)
    store.record_series(job_id, "run-001", {"fc/Cd": [[1.0, 0.5], [2.0, 0.45]], "fc/Cl": [[1.0, float("nan")]]},
                        {"postProcessing/fc/0/coefficient.dat": {"offset": 10}})
    return job_id


def _client(store, tmp_path) -> ControlService:
    return ControlService(Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0"), store, "alice")


def test_series_lists_every_name_and_the_points_of_the_named_ones(store, tmp_path, running):
    client = _client(store, tmp_path)
    everything = client.series(running)
    assert everything == {"run": "run-001", "names": ["fc/Cd", "fc/Cl"],
                          "series": {"fc/Cd": [[1.0, 0.5], [2.0, 0.45]], "fc/Cl": [[1.0, None]]}}  # NaN: null
    assert client.series(running, names=["fc/Cd"], last=1)["series"] == {"fc/Cd": [[2.0, 0.45]]}
    with pytest.raises(NotFound, match="no series 'fc/Cx'; it has: fc/Cd, fc/Cl"):
        client.series(running, names=["fc/Cx"])


class Snapshot:
    """The client as `watch` sees it, its series listing taken before the solver wrote more."""

    def __init__(self, client: ControlService, listing: dict) -> None:
        self.client, self.listing = client, listing

    def series(self, *args, **kwargs) -> dict:
        return self.listing

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_watch_series_prints_the_latest_points_then_new_ones_until_the_run_ends(store, tmp_path, running):
    client = _client(store, tmp_path)
    snapshot = Snapshot(client, client.series(running, "run-001", ["fc/Cd"], last=10))
    store.record_series(running, "run-001", {"fc/Cd": [[3.0, 0.44], [4.0, 0.4399]]}, {})  # arrives while watching
    store.transition_run(running, "run-001", RunState.COMPLETED, data={"reason": "exit code 0"})
    out = io.StringIO()
    watch_series(snapshot, running, "fc/Cd", Console(file=out, width=120), timeout=10)  # type: ignore[arg-type]
    assert out.getvalue().splitlines() == ["fc/Cd x=1  0.5", "fc/Cd x=2  0.45", "fc/Cd x=3  0.44",
                                           "fc/Cd x=4  0.4399", "run-001: COMPLETED (exit code 0)"]


def test_watch_series_without_a_name_lists_them(store, tmp_path, running):
    out = io.StringIO()
    watch_series(_client(store, tmp_path), running, None, Console(file=out, width=120))
    assert [line.split() for line in out.getvalue().splitlines()] == [["fc/Cd", "x=2", "0.45"],
                                                                      ["fc/Cl", "x=1", "nan"]]


def test_the_cli_asks_for_series_before_a_name():
    from orchestrator.cli.main import app

    result = CliRunner().invoke(app, ["watch", "abc", "fc/Cd"])
    assert result.exit_code != 0 and "--series fc/Cd" in str(result.exception or result.output)
