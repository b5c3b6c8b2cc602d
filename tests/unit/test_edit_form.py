"""Edit forms from the plugins' options schemas (orchestrator/control/forms.py), and their routes: GET /solvers and
GET /jobs/{job}/form, the latter for the job's owner and its job-scoped token only."""

from __future__ import annotations

import fakeredis
import pytest
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.control.forms import form_fields, job_form
from orchestrator.model.settings import Settings
from orchestrator.store.jobs import JobStore
from solvers.base import registry


def _by_path(fields: list[dict]) -> dict[str, dict]:
    return {f["path"]: f for f in fields}


def test_an_openfoam_form_offers_its_scalar_options_and_each_parameter_marking_the_live_ones():
    solver = {"name": "openfoam", "application": "icoFoam", "case": "/up/cavity", "mesh": "auto",
              "parameters": {"endTime": 100, "writeInterval": 20}, "steps": []}
    fields = _by_path(form_fields(registry().get("openfoam"), solver))
    assert list(fields) == ["solver.application", "solver.parameters.endTime", "solver.parameters.writeInterval",
                            "solver.mesh", "solver.reconstruct"]  # the options' order; no case, lists, name
    end = fields["solver.parameters.endTime"]
    assert (end["kind"], end["value"], end["live"], end["label"]) == ("value", 100, True, "endTime")
    assert fields["solver.mesh"]["kind"] == "choice" and fields["solver.mesh"]["choices"] == ["auto", "blockMesh",
                                                                                              "none"]
    assert fields["solver.reconstruct"] == {**fields["solver.reconstruct"], "kind": "boolean", "value": True,
                                            "live": False}  # the default where the spec leaves it out


def test_secrets_and_input_files_are_never_fields_and_nullable_options_say_so():
    fields = _by_path(form_fields(registry().get("starccm"), {"name": "starccm", "sim": "/up/a.sim",
                                                              "podkey": "**********", "max_steps": 50}))
    assert "solver.podkey" not in fields and "solver.license_path" not in fields and "solver.sim" not in fields
    assert fields["solver.max_steps"]["nullable"] and fields["solver.max_steps"]["kind"] == "integer"
    assert fields["solver.server_port"]["value"] is None
    env = _by_path(form_fields(registry().get("command"), {"name": "command", "command": ["x"],
                                                           "env": {"GAIN": "4"}}))
    assert env["solver.env.GAIN"]["kind"] == "string"  # a mapping of strings: sent quoted, "4" stays text


def test_apply_live_is_offered_only_for_a_plugin_with_live_options_while_the_job_accepts_it():
    openfoam, command = registry().get("openfoam"), registry().get("command")
    assert job_form(openfoam, {}, ["pause", "edit-live"])["can_apply_live"] is True
    assert job_form(openfoam, {}, ["edit", "restart"])["can_apply_live"] is False  # paused: edit, then restart
    assert job_form(command, {}, ["pause", "edit-live"])["can_apply_live"] is False


class Sent:
    def send_task(self, *args, **kwargs) -> None:
        pass


@pytest.fixture
def api(tmp_path):
    store = JobStore(fakeredis.FakeRedis(decode_responses=True))
    app = create_app(Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0", local_nodes=2), store)
    app.state.engine.celery = Sent()
    client = TestClient(app)
    tokens = {user: store.users.create(user, os_user=user) for user in ("alice", "bob")}
    return client, tokens


def _get(client, token, path):
    return client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"})


def test_the_form_route_answers_the_owner_and_the_jobs_token_and_no_one_else(api):
    client, tokens = api
    spec = {"name": "j", "desktop": {"enabled": False},
            "solver": {"name": "command", "command": ["true"], "env": {"GAIN": "4"}}}
    job = client.post("/api/v1/jobs", json={"spec": spec}, headers={"Authorization": f"Bearer {tokens['alice']}"})
    job_id = job.json()["id"]
    form = _get(client, tokens["alice"], f"/jobs/{job_id}/form")
    assert form.status_code == 200, form.text
    assert form.json()["solver"] == "command" and [f["path"] for f in form.json()["fields"]] == ["solver.env.GAIN"]
    assert _get(client, tokens["bob"], f"/jobs/{job_id}/form").status_code == 404
    scoped = client.post(f"/api/v1/jobs/{job_id}/token",
                         headers={"Authorization": f"Bearer {tokens['alice']}"}).json()["token"]
    assert _get(client, scoped, f"/jobs/{job_id}/form").json() == form.json()
    # the job's token reads its own job only: the solvers' catalogue is the user's, not the job's
    assert _get(client, scoped, "/solvers").status_code == 403
    catalogue = _get(client, tokens["bob"], "/solvers").json()
    assert {"openfoam", "command"} <= {s["name"] for s in catalogue}
    openfoam = next(s for s in catalogue if s["name"] == "openfoam")
    assert openfoam["live"] == ["parameters"] and "endTime" in openfoam["schema"]["properties"]["parameters"][
        "description"]
