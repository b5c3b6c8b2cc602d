"""The red team's findings 2, 3, 5, 9 and the path-existence oracle (issue 15), replayed through the API's own
routes (FastAPI's TestClient over a fakeredis store; Celery tasks recorded, not run):
- an edit names paths outside the caller's uploads (another user's upload, the engine's stack.json);
- a job swaps its log (or a folder above it) for a symlink, or its log for a FIFO;
- a few hundred bytes of YAML aliases posted to the monitor's submit form;
- a sweep over a licence secret;
- spec validation asked whether server paths exist."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import fakeredis
import pytest
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.control.service import ControlService
from orchestrator.engine.edits import parse_assignments
from orchestrator.model.errors import SpecError
from orchestrator.model.settings import Settings
from orchestrator.model.spec import OUTSIDE_UPLOADS, read_spec_file, validate_spec
from orchestrator.model.states import JobState
from orchestrator.model.untrusted import MAX_QUOTED
from orchestrator.store.jobs import JobStore
from solvers.base import registry
from solvers.contract import launch_context
from solvers.vendor import ansys_licence_env

SECRET = "1055@licence-server-of-alice"


class Sent:
    """Stands in for the Celery app: records the tasks sent."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, list]] = []

    def send_task(self, name: str, args: list | None = None, **options) -> None:
        self.tasks.append((name, list(args or [])))


class Api:
    """The API app over a fakeredis store, with two plain users (alice, bob) and their uploads."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.store = JobStore(fakeredis.FakeRedis(decode_responses=True))
        self.settings = Settings(home=home, redis_url="redis://127.0.0.1:1/0", local_nodes=2)
        app = create_app(self.settings, self.store)
        app.state.engine.celery = Sent()
        self.client = TestClient(app)
        self.tokens = {user: self.store.users.create(user, os_user=user) for user in ("alice", "bob")}
        for user in self.tokens:
            (home / "uploads" / user / "up-1" / "case").mkdir(parents=True)
        (home / "uploads" / "alice" / "up-1" / "case.cas").write_text("case\n")
        (home / "uploads" / "bob" / "up-1" / "secret.txt").write_text("bob's data\n")
        (home / "stack.json").write_text('{"redis_password": "ENGINE-SECRET"}')

    def call(self, user: str, method: str, path: str, **kw):
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        return self.client.request(method, path if path.startswith("/ui/") else f"/api/v1{path}", headers=headers,
                                   **kw)

    def stream(self, user: str, path: str):
        return self.client.stream("GET", f"/api/v1{path}", headers={"Authorization": f"Bearer {self.tokens[user]}"})

    def submit(self, user: str, inputs: list[str]) -> str:
        reply = self.call(user, "POST", "/jobs", json={"spec": spec(inputs)})
        assert reply.status_code == 201, reply.text
        return reply.json()["id"]

    def make_up(self, job_id: str) -> None:
        """The job provisioned and waiting (its run PENDING): an edit is allowed now."""
        for state in (JobState.PROVISIONING, JobState.UP):
            assert self.store.transition_job(job_id, state)


def spec(inputs: list[str]) -> dict:
    return {"name": "j", "desktop": {"enabled": False},
            "solver": {"name": "command", "command": ["true"], "inputs": inputs}}


@pytest.fixture
def api(tmp_path) -> Api:
    return Api(tmp_path)


# -- finding 2: an edit's paths are checked exactly like a submit's

def test_an_edit_may_not_name_paths_outside_the_callers_uploads(api):
    job_id = api.submit("alice", ["up-1/case"])
    api.make_up(job_id)
    before = api.store.get_job(job_id)
    theirs, engine = api.home / "uploads" / "bob" / "up-1" / "secret.txt", api.home / "stack.json"
    for sneaky in [f"[up-1/case, {theirs}, {engine}]", "[../bob/up-1/secret.txt]", "[up-1/../../bob/up-1]"]:
        reply = api.call("alice", "POST", f"/jobs/{job_id}/edit", json={"set": [f"solver.inputs={sneaky}"]})
        assert reply.status_code == 422, reply.text
        problems = reply.json()["problems"]
        assert problems and all(p["message"] == OUTSIDE_UPLOADS for p in problems)
        assert {p["field"] for p in problems} <= {"solver.inputs.0", "solver.inputs.1", "solver.inputs.2"}
    assert [p["field"] for p in problems] == ["solver.inputs.0"]
    after = api.store.get_job(job_id)
    assert after.revision == before.revision == 1 and after.spec == before.spec  # nothing changed
    assert api.call("alice", "GET", f"/jobs/{job_id}/history").json()["revision"] == 1
    # a path inside the uploads is fine, and resolves against them as at submit (not the API's folder)
    (api.home / "uploads" / "alice" / "up-2").mkdir()
    ok = api.call("alice", "POST", f"/jobs/{job_id}/edit", json={"set": ["solver.inputs=[up-1/case, up-2]"]})
    assert ok.status_code == 200, ok.text
    stored = api.store.get_job(job_id).spec["solver"]["inputs"]
    assert stored == [str((api.home / "uploads" / "alice" / name).resolve()) for name in ("up-1/case", "up-2")]


def test_an_admins_edit_is_checked_against_the_owners_uploads(api):
    job_id = api.submit("alice", ["up-1/case"])
    api.make_up(job_id)
    root = ControlService(api.settings, api.store, "root", admin=True, celery=Sent())
    assert root.edit(job_id, ["description=checked"])["revision"] == 2  # the owner's stored paths pass
    with pytest.raises(SpecError) as refused:
        root.edit(job_id, [f"solver.inputs=[{api.home / 'uploads' / 'bob' / 'up-1'}]"])
    assert refused.value.problems == [("solver.inputs.0", OUTSIDE_UPLOADS)]


# -- finding 10 (part): the answer for a path outside the uploads never tells whether it exists

@pytest.mark.parametrize("existing, missing", [("/etc/passwd", "/etc/no-such-file-e2e"),
                                               ("/etc", "/no/such/folder/e2e"),
                                               ("~root", "~no-such-user-e2e"),
                                               ("~root/.bashrc", "~no-such-user-e2e/.bashrc"),
                                               ("../bob/up-1/secret.txt", "../bob/up-1/none.txt")])
def test_paths_outside_the_uploads_get_one_answer_whether_they_exist_or_not(api, existing, missing):
    replies = [api.call("alice", "POST", "/jobs", json={"spec": spec(["up-1/case", path])})
               for path in (existing, missing)]
    assert [r.status_code for r in replies] == [422, 422]
    assert replies[0].content == replies[1].content
    assert replies[0].json()["problems"] == [{"field": "solver.inputs.1", "message": OUTSIDE_UPLOADS}]
    job_id = api.submit("alice", ["up-1/case"])  # the same through an edit
    api.make_up(job_id)
    edits = [api.call("alice", "POST", f"/jobs/{job_id}/edit", json={"set": [f"solver.inputs=[{path}]"]})
             for path in (existing, missing)]
    assert edits[0].status_code == 422 and edits[0].content == edits[1].content


def test_the_engine_machines_own_user_still_names_any_path(api, tmp_path):
    """Only API callers are confined: the local CLI (the engine's own account) keeps naming server paths."""
    local = ControlService(api.settings, api.store, "someone", celery=Sent())
    job_id = local.submit_document(spec([str(tmp_path / "stack.json")]))["id"]
    assert api.store.get_job(job_id).spec["solver"]["inputs"] == [str((tmp_path / "stack.json").resolve())]


# -- finding 3: job-written files are opened confined

def run_dir_with_log(api: Api, job_id: str) -> Path:
    api.store.update_run(job_id, "run-001", log_file="output.log")
    run_dir = api.home / "jobs" / job_id / "runs" / "run-001"
    run_dir.mkdir(parents=True)
    return run_dir


def test_a_log_swapped_for_a_symlink_is_refused_not_followed(api):
    job_id = api.submit("alice", ["up-1/case"])
    run_dir = run_dir_with_log(api, job_id)
    (run_dir / "output.log").write_text("step 1\nstep 2\n")
    page = api.call("alice", "GET", f"/jobs/{job_id}/logs")
    assert page.status_code == 200 and page.json()["text"] == "step 1\nstep 2\n"
    (run_dir / "output.log").unlink()
    cmdline = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    for target in ("/proc/self/cmdline", str(api.home / "stack.json")):
        (run_dir / "output.log").unlink(missing_ok=True)
        (run_dir / "output.log").symlink_to(target)
        page = api.call("alice", "GET", f"/jobs/{job_id}/logs")
        assert page.status_code == 400 and "symlink" in page.json()["error"], page.text
        assert "ENGINE-SECRET" not in page.text and cmdline not in page.text
        with api.stream("alice", f"/jobs/{job_id}/logs/stream") as stream:  # the SSE stream too
            body = stream.read().decode()
        assert "event: error" in body and "symlink" in body and "ENGINE-SECRET" not in body, body


def test_a_symlinked_folder_above_the_log_is_refused(api):
    job_id = api.submit("alice", ["up-1/case"])
    run_dir = run_dir_with_log(api, job_id)
    elsewhere = api.home / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "output.log").write_text("ENGINE-SECRET\n")
    run_dir.rmdir()
    run_dir.symlink_to(elsewhere)  # the run directory itself
    page = api.call("alice", "GET", f"/jobs/{job_id}/logs")
    assert page.status_code == 400 and "symlink" in page.json()["error"] and "ENGINE-SECRET" not in page.text
    run_dir.unlink()
    runs = run_dir.parent
    os.rename(runs, api.home / "jobs" / job_id / "runs-real")
    runs.symlink_to(elsewhere.parent)  # a folder further up
    page = api.call("alice", "GET", f"/jobs/{job_id}/logs")
    assert page.status_code == 400 and "ENGINE-SECRET" not in page.text


def test_a_log_swapped_for_a_fifo_is_refused_at_once(api):
    job_id = api.submit("alice", ["up-1/case"])
    run_dir = run_dir_with_log(api, job_id)
    fifo = run_dir / "output.log"
    os.mkfifo(fifo)
    replies: list = []
    reader = threading.Thread(target=lambda: replies.append(api.call("alice", "GET", f"/jobs/{job_id}/logs")),
                              daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # the API blocked opening the FIFO: give it a writer so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail("reading a log swapped for a FIFO blocked the API")
    assert replies[0].status_code == 400 and "not a regular file" in replies[0].json()["error"]


def test_the_live_work_folder_swapped_for_a_symlink_is_refused(api):
    job_id = api.submit("alice", ["up-1/case"])
    elsewhere = api.home / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keys.txt").write_text("ENGINE-SECRET\n")
    (api.home / "jobs" / job_id).mkdir(parents=True)
    (api.home / "jobs" / job_id / "work").symlink_to(elsewhere)
    reply = api.call("alice", "GET", f"/jobs/{job_id}/files/work/keys.txt")
    assert reply.status_code in (400, 404) and "ENGINE-SECRET" not in reply.text
    listing = api.call("alice", "GET", f"/jobs/{job_id}/files")  # nor are the names of what is there listed
    assert listing.status_code == 200 and listing.json()["files"] == [], listing.text


# -- finding 5: user YAML refuses anchors and aliases; quoted values are cut

def alias_bomb(levels: int = 6) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijk"[:levels + 1]
    for prev, name in zip(names, names[1:], strict=False):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    last = names[-1]
    # a sweep member's bad value was quoted whole in its error: 6 levels made a 69 MB reply in 9.5 s
    tail = ["name: bomb", "solver: {name: command, command: [x]}", f"sweep: {{description: [*{last}]}}"]
    return "\n".join(lines + tail)


def test_a_yaml_alias_bomb_gets_a_short_refusal_fast(api):
    bomb = alias_bomb()
    assert len(bomb) < 600
    assert api.call("alice", "GET", "/me").status_code == 200  # the client's first request pays its start-up
    started = time.monotonic()
    reply = api.call("alice", "POST", "/ui/submit", json={"text": bomb})
    elapsed = time.monotonic() - started
    assert reply.status_code == 422 and len(reply.content) < 2048, (reply.status_code, len(reply.content))
    assert "aliases" in reply.json()["problems"][0]["message"] and elapsed < 2.0  # ~20 ms unloaded


def test_aliases_are_refused_in_spec_files_and_edit_values(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(alias_bomb(3))
    with pytest.raises(SpecError, match="aliases"):
        read_spec_file(path)
    with pytest.raises(SpecError) as refused:
        parse_assignments(["parameters.x=[&a [1, 2], *a]"])
    assert refused.value.problems[0][0] == "solver.parameters.x" and "aliases" in refused.value.problems[0][1]


def test_a_long_value_in_an_error_message_is_cut():
    base = {"name": "j", "solver": {"name": "command", "command": ["true"]}}
    with pytest.raises(SpecError) as refused:
        validate_spec({**base, "limits": {"walltime": "x" * 100_000}})
    [(field, message)] = refused.value.problems
    assert field == "limits.walltime" and "x" * MAX_QUOTED not in message and len(message) < MAX_QUOTED + 100
    with pytest.raises(SpecError) as many:  # and a huge list of bad items is counted, not listed
        validate_spec({**base, "solver": {"name": "command", "command": [[1]] * 10_000}})
    assert len(many.value.message) < 10_000 and "more problems" in many.value.message


# -- finding 9: a swept secret is masked wherever its value is shown

def test_a_swept_licence_secret_is_masked_everywhere_but_the_run(api):
    fluent = {"name": "lic", "desktop": {"enabled": False},
              "solver": {"name": "fluent", "case": "up-1/case.cas", "iterations": 5}}
    reply = api.call("alice", "POST", "/jobs", json={"spec": fluent,
                                                     "sweep": [f"solver.license_file={SECRET},2325@b"]})
    assert reply.status_code == 201, reply.text
    sweep_id, job_ids = reply.json()["sweep"], reply.json()["jobs"]
    shown = [api.call("alice", "GET", "/jobs").text]
    for job_id in job_ids:
        doc = api.call("alice", "GET", f"/jobs/{job_id}")
        assert doc.json()["sweep_values"] == {"solver.license_file": "**********"}
        shown += [doc.text, api.call("alice", "GET", f"/jobs/{job_id}/events.json").text,
                  api.call("alice", "GET", f"/jobs/{job_id}/history").text]
    alice = ControlService(api.settings, api.store, "alice", admin=False)
    _, rows = alice.sweep_status(sweep_id)
    assert [row["values"] for row in rows] == [{"solver.license_file": "**********"}] * 2
    shown += [json.dumps(rows, default=str), json.dumps(alice.sweeps(), default=str)]
    assert not any(SECRET in text or "2325@b" in text for text in shown)
    # the run still gets the real value: the stored spec, as the engine validates it for the launch
    stored = validate_spec(api.store.get_job(job_ids[0]).spec, check_paths=False)
    ctx = launch_context(api.home / "run", 1)
    assert ansys_licence_env(ctx, stored.solver)["ANSYSLMD_LICENSE_FILE"] == SECRET
    assert "fluent" in registry().names()


def test_a_swept_secret_that_fails_validation_is_not_quoted(api):
    fluent = {"name": "lic", "desktop": {"enabled": False},
              "solver": {"name": "fluent", "case": "up-1/case.cas"}}
    reply = api.call("alice", "POST", "/jobs", json={"spec": fluent, "sweep": ["solver.license_file=[1055@x]"]})
    assert reply.status_code == 422 and "1055@x" not in reply.text, reply.text
