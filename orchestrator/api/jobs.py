"""Job routes: the solvers to submit to, submit, list, get, history, the edit form, and the control commands
(pause ... terminate), each audited."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.api.deps import API, client_for
from orchestrator.control.service import ControlService
from orchestrator.model.errors import SpecError
from orchestrator.model.states import JobState

router = APIRouter(prefix=API, tags=["jobs"])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitBody(Body):
    spec: dict[str, Any] = Field(description="the job spec, as in a spec file; input folders are paths inside "
                                             "your uploads (POST /uploads), relative to them")
    sweep: list[str] = Field(default_factory=list, max_length=16,
                             description="KEY=v1,v2,...: one job per value (every combination)")


class PauseBody(Body):
    freeze: bool = Field(False, description="suspend every process in place instead of checkpoint-and-exit")


class EditBody(Body):
    set: list[str] = Field(default_factory=list, max_length=100, description="KEY=VALUE assignments (spec paths)")
    files: dict[str, str] = Field(default_factory=dict, max_length=50,
                                  description="RELPATH (in the case) -> new text content")
    live: bool = Field(False, description="also apply to the running solver (where the plugin can)")
    message: str = Field("", max_length=500)


def job_doc(doc: Any) -> dict[str, Any]:
    return jsonable_encoder(doc)


@router.post("/jobs", status_code=201, summary="Submit a job (or a sweep of jobs)")
def submit(body: SubmitBody, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    submitted = client.submit_document(body.spec, body.sweep, confine=True)
    if "sweep" in submitted:
        return submitted
    # A response built here skips FastAPI's validation and re-encoding of the return value (the hot path)
    return JSONResponse(submitted, status_code=201)


LISTED = ("id", "name", "owner", "state", "solver", "backend", "nodes", "created_at", "updated_at",
          "current_run", "runs", "sweep", "reason", "run")


@router.get("/jobs", summary="Your jobs, newest first (admins: everyone's, or one owner's)")
def list_jobs(client: ControlService = Depends(client_for), limit: int = Query(100, ge=1, le=1000),
              state: Optional[JobState] = None, owner: Optional[str] = Query(None, max_length=32)) -> list[dict]:
    return [jsonable_encoder({k: getattr(r, k, None) for k in LISTED})
            for r in client.overview(limit, owner) if state is None or r.state is state]


@router.get("/jobs/{job}", summary="One job with its runs, allowed commands and deadlines")
def get_job(job: str, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return job_doc(client.status(job))


@router.get("/solvers", summary="The installed solvers: summary, options schema, the options a run takes live")
def solvers(client: ControlService = Depends(client_for)) -> list[dict[str, Any]]:
    return client.solvers()


@router.get("/jobs/{job}/form", summary="The job's edit form: its solver options as fields, with current values")
def edit_form(job: str, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return jsonable_encoder(client.edit_form(job))


@router.get("/jobs/{job}/history", summary="Spec revisions (who, when, what) and runs with attempts")
def history(job: str, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return jsonable_encoder(client.history(job))


@router.post("/jobs/{job}/pause", summary="Pause: checkpoint and stop the run (freeze: suspend in place)")
def pause(job: str, body: Optional[PauseBody] = None, client: ControlService = Depends(client_for)) -> dict:
    return job_doc(client.pause(job, freeze=bool(body and body.freeze)))


# The commands that take no body: each route calls the service's method of its name and answers the job.
SIMPLE_COMMANDS = {
    "freeze": ("Suspend every process of the run in place", lambda client, job: client.pause(job, freeze=True)),
    "resume": ("Continue a frozen run", lambda client, job: client.resume(job)),
    "restart": ("Continue the run from its latest checkpoint, with the edits", lambda client, job: client.restart(job)),
    "rerun": ("A new run from the original inputs plus the edits", lambda client, job: client.rerun(job)),
    "terminate": ("Stop the solver, collect results, release the nodes", lambda client, job: client.terminate(job)),
}


def _command_route(name: str, call: Callable[[ControlService, str], Any]) -> Callable[..., dict[str, Any]]:
    def route(job: str, client: ControlService = Depends(client_for)) -> dict[str, Any]:
        return job_doc(call(client, job))

    route.__name__ = name
    return route


for _name, (_summary, _call) in SIMPLE_COMMANDS.items():
    router.add_api_route(f"/jobs/{{job}}/{_name}", _command_route(_name, _call), methods=["POST"], summary=_summary,
                         name=_name)


@router.post("/jobs/{job}/edit", summary="Record a new spec revision (and replaced input files)")
def edit(job: str, body: EditBody, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="e2e-edit-") as tmp:
        local: dict[str, str] = {}
        for index, (rel, content) in enumerate(body.files.items()):
            path = Path(tmp) / f"file-{index}"
            try:
                path.write_text(content)
            except UnicodeEncodeError:
                raise SpecError([(f"files.{rel}", "not valid text")]) from None
            local[str(path)] = rel
        return jsonable_encoder(client.edit(job, body.set, local, live=body.live, message=body.message))


@router.post("/jobs/{job}/token", status_code=201,
             summary="A token that reads and controls this job only, until it is terminated (not admin)")
def job_token(job: str, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    if client.job_scope:
        raise HTTPException(403, "a job-scoped token cannot issue tokens")
    return client.job_token(job)
