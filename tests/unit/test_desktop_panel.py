"""The job panel's parts that need no display: what it shows, the edit form's request body, the plot's log
scale, its API client (a real HTTP server), and skipping itself where tkinter is missing."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from orchestrator.desktop import panel_app
from orchestrator.desktop.panel_app import (
    Api,
    ApiError,
    duration,
    fraction,
    plot_bounds,
    plot_points,
    progress_line,
    state_line,
    time_left,
)
from orchestrator.desktop.panel_form import edit_body, parameter_fields
from orchestrator.desktop.service import PANEL_FORM_SOURCE, PANEL_SOURCE


def _doc(run_state="RUNNING", attempt=2, progress=None, reason=None, started_at=1000.0) -> dict:
    return {"state": "UP", "current_run": "run-002", "allowed": ["pause"],
            "runs_detail": [{"id": "run-001", "state": "COMPLETED", "attempt": 1},
                            {"id": "run-002", "state": run_state, "attempt": attempt, "progress": progress,
                             "reason": reason, "started_at": started_at}]}


def test_the_state_line_names_the_job_the_current_run_its_attempt_and_why_it_stopped():
    assert state_line(_doc()) == "UP · run-002 RUNNING, attempt 2"
    assert state_line(_doc("PAUSED", reason="paused on request")) == "UP · run-002 PAUSED, attempt 2\npaused on request"
    assert state_line({"state": "QUEUED", "current_run": "run-001", "runs_detail": []}) == "QUEUED · run-001"


def test_progress_and_time_left_come_from_the_runs_progress_at_its_pace_so_far():
    run = _doc(progress={"step": 25, "total": 100})["runs_detail"][1]
    assert fraction(run["progress"]) == 0.25 and progress_line(run) == "25 %  (25 of 100)"
    assert time_left(run, now=1100.0) == pytest.approx(300.0)  # 100 s for a quarter: 300 s for the rest
    assert duration(300.0) == "time left: 5m 00s" and duration(42) == "time left: 42s"
    assert duration(3 * 3600 + 120) == "time left: 3h 02m" and duration(None) == "time left: unknown"
    assert fraction({"step": 3, "total": 10, "converged": True}) == 1.0
    assert fraction({"residuals": {"p": 0.1}}) is None and progress_line({}) == "progress: not reported"
    paused = _doc("PAUSED", progress={"step": 25, "total": 100})["runs_detail"][1]
    assert time_left(paused, now=1100.0) is None  # a stopped run has no pace


FIELDS = [{"path": "solver.parameters.endTime", "label": "endTime", "kind": "value", "value": 0.5, "live": True},
          {"path": "solver.parameters.writeInterval", "label": "writeInterval", "kind": "value", "value": 20,
           "live": True},
          {"path": "solver.mesh", "label": "mesh", "kind": "choice", "value": "auto", "choices": ["auto", "none"]},
          {"path": "solver.application", "label": "application", "kind": "string", "value": "icoFoam"},
          {"path": "solver.threads", "label": "threads", "kind": "integer", "value": None, "nullable": True},
          {"path": "solver.reconstruct", "label": "reconstruct", "kind": "boolean", "value": True}]


def test_the_edit_form_sends_the_changed_fields_typed_and_the_free_assignments():
    typed = {"solver.parameters.endTime": "0.7", "solver.parameters.writeInterval": " 20 ", "solver.mesh": "none",
             "solver.application": "yes", "solver.threads": "4", "solver.reconstruct": "false"}
    body = edit_body(FIELDS, typed, "description=longer; solver.env.GAIN = 4\n", live=False)
    # a mapping's entry as typed (0.7 stays a number); strings and choices quoted ("yes" stays a string)
    assert body == {"set": ["solver.parameters.endTime=0.7", 'solver.mesh="none"', 'solver.application="yes"',
                            "solver.threads=4", "solver.reconstruct=false", "description=longer",
                            "solver.env.GAIN=4"], "live": False, "message": "edited in the desktop panel"}
    # emptied, a nullable option goes back to null; unchanged fields send nothing
    threads = [{**FIELDS[4], "value": 2}]
    assert edit_body(threads, {"solver.threads": ""}, "", live=False)["set"] == ["solver.threads=null"]
    unchanged = {"solver.threads": "", "solver.reconstruct": "true", "solver.parameters.endTime": "0.5"}
    with pytest.raises(ValueError, match="nothing to edit"):
        edit_body(FIELDS, unchanged, "", live=False)
    unset = [{"path": "solver.power", "label": "power", "kind": "boolean", "value": None, "nullable": True}]
    with pytest.raises(ValueError, match="nothing to edit"):  # its box shows false: not a change
        edit_body(unset, {"solver.power": "false"}, "", live=False)


def test_apply_live_takes_only_what_the_running_solver_can_take_naming_the_rest():
    live = edit_body(FIELDS, {"solver.parameters.endTime": "0.9"}, "", live=True)
    assert live["set"] == ["solver.parameters.endTime=0.9"] and live["live"] is True
    with pytest.raises(ValueError, match=r"^mesh, application: the running solver cannot take this"):
        edit_body(FIELDS, {"solver.mesh": "none", "solver.application": "simpleFoam",
                           "solver.parameters.endTime": "0.9"}, "", live=True)


@pytest.mark.parametrize("typed, free, said", [
    ({}, "endTime 0.7", "'endTime 0.7' is not key=value"),
    ({}, "=3", "'=3' is not key=value"),
    ({}, "", "nothing to edit"),
    ({"solver.threads": "four"}, "", "threads: 'four' is not a whole number"),
    ({"solver.mesh": "snappy"}, "", "mesh: choose one of auto, none"),
    ({"solver.parameters.endTime": " "}, "", "endTime: empty; give a value")])
def test_the_edit_form_refuses_what_is_no_value_of_its_field_naming_it(typed, free, said):
    with pytest.raises(ValueError, match=said):
        edit_body(FIELDS, typed, free, live=False)


def test_without_the_engines_form_the_fields_are_the_jobs_parameters():
    doc = {"spec": {"solver": {"name": "openfoam", "parameters": {"endTime": 0.5, "deltaT": 0.005}}}}
    assert [(f["path"], f["value"], f["kind"]) for f in parameter_fields(doc)] == [
        ("solver.parameters.deltaT", 0.005, "value"), ("solver.parameters.endTime", 0.5, "value")]
    assert parameter_fields({}) == []


def test_the_residual_plot_is_log_scaled_and_leaves_out_what_a_log_cannot_show():
    coords = plot_points([[0, 1.0], [1, None], [2, 0.01], [3, 0.0], [4, 0.1]], width=108, height=108, pad=4)
    # x 0..4 over 4..104; log10(y) 0..-2 from top (4) to bottom (104): 0.1 is halfway
    assert coords == [4.0, 4.0, 54.0, 104.0, 104.0, 54.0]
    assert plot_points([[0, 1.0]], 100, 100) == [] and plot_points([[0, -1.0], [1, 0.0]], 100, 100) == []
    # two series on one pair of axes: U's 1e-1..1e-2 sits in the lower half of p's and U's 1..1e-2
    p, u = [[0, 1.0], [4, 0.1]], [[2, 0.1], [4, 0.01]]
    bounds = plot_bounds([p, u])
    assert bounds == (0.0, 4.0, -2.0, 0.0)
    assert plot_points(u, 108, 108, pad=4, bounds=bounds) == [54.0, 54.0, 104.0, 104.0]


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str | None, bytes]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        status, reply = (409, {"error": "run-001 is PAUSED: resume is for FROZEN runs"}) \
            if self.path.endswith("/resume") else (200, {"id": "j1", "state": "UP"})
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


def test_the_api_client_sends_the_token_as_bearer_and_says_an_error_in_one_line():
    _Recorder.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = Api(f"http://127.0.0.1:{server.server_port}/", "e2e_secret", "j1")
        assert api.job_doc() == {"id": "j1", "state": "UP"}
        api.command("pause", {"freeze": False})
        with pytest.raises(ApiError, match=r"^POST /resume: 409 run-001 is PAUSED: resume is for FROZEN runs$"):
            api.command("resume")
    finally:
        server.shutdown()
        server.server_close()
    assert [s[:3] for s in _Recorder.seen] == [("GET", "/api/v1/jobs/j1", "Bearer e2e_secret"),
                                               ("POST", "/api/v1/jobs/j1/pause", "Bearer e2e_secret"),
                                               ("POST", "/api/v1/jobs/j1/resume", "Bearer e2e_secret")]
    assert json.loads(_Recorder.seen[1][3]) == {"freeze": False}
    with pytest.raises(ApiError, match="GET /: "):  # nothing listening: an error line, not a traceback
        Api(f"http://127.0.0.1:{server.server_port}", "t", "j1").job_doc()


def test_the_shipped_panel_is_standalone_and_skips_itself_with_a_note_where_tkinter_is_missing(tmp_path):
    source = PANEL_SOURCE.read_text()
    code = source.split('"""', 2)[2].replace("from orchestrator.desktop import panel_form", "")  # the repo's fallback
    assert "orchestrator" not in code  # no engine import
    fake = tmp_path / "fake" / "tkinter"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no _tkinter')\n")
    shipped = tmp_path / "panel.py"
    shipped.write_text(source)
    (tmp_path / "panel_form.py").write_text(PANEL_FORM_SOURCE.read_text())  # shipped beside it
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path / "fake"), "E2E_JOB": "j1"}
    done = subprocess.run([sys.executable, "-s", str(shipped)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "Job panel skipped: tkinter is not installed" in done.stdout, done.stderr
    assert "python3-tk" in done.stdout
    del env["E2E_JOB"]
    done = subprocess.run([sys.executable, "-s", str(shipped)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "E2E_JOB is not set" in done.stdout


def test_without_a_token_the_panel_uses_e2e_on_path_and_says_it_cannot_without_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    cli = panel_app.Cli("j1")
    with pytest.raises(ApiError, match="no E2E_TOKEN and no `e2e` on PATH"):
        cli.job_doc()
    fake = tmp_path / "e2e"
    fake.write_text("#!/bin/sh\necho \"$@\" > " + str(tmp_path / "args") + "\necho '{\"state\": \"UP\"}'\n")
    fake.chmod(0o755)
    cli = panel_app.Cli("j1")
    assert cli.job_doc() == {"state": "UP"}
    assert (tmp_path / "args").read_text().split() == ["status", "j1", "--json"]
    cli.command("edit", {"set": ["solver.parameters.endTime=1"], "live": True})
    assert (tmp_path / "args").read_text().split() == ["edit", "j1", "--set", "solver.parameters.endTime=1", "--live"]


def test_the_poller_sends_a_buttons_command_before_its_next_look_and_says_what_it_found():
    _Recorder.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out: queue.Queue = queue.Queue()
    poller = panel_app.Poller(Api(f"http://127.0.0.1:{server.server_port}", "t", "j1"), out)
    poller.actions.put(("pause", None))
    poller.start()
    try:
        kinds = [out.get(timeout=10)[0] for _ in range(4)]
    finally:
        server.shutdown()
        server.server_close()
    assert kinds[0] == "done" and kinds[1:] == ["job", "form", "series"]  # the form: on the first look
    assert [s[:2] for s in _Recorder.seen[:4]] == [("POST", "/api/v1/jobs/j1/pause"), ("GET", "/api/v1/jobs/j1"),
                                                   ("GET", "/api/v1/jobs/j1/form"),
                                                   ("GET", "/api/v1/jobs/j1/series?last=500")]


def test_a_panel_without_the_api_looks_less_often_and_says_when_e2e_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no e2e at all
    out: queue.Queue = queue.Queue()
    poller = panel_app.Poller(panel_app.Cli("j1"), out)
    assert poller.look() is False
    kind, text = out.get_nowait()
    assert kind == "error" and "no E2E_TOKEN and no `e2e` on PATH" in text
    assert panel_app.CLI_POLL > panel_app.POLL and panel_app.CLI_RETRY > panel_app.CLI_POLL
