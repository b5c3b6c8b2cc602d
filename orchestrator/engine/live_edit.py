"""A live edit applied to a running solver, on its head node: the plugin rewrites what the solver re-reads
(OpenFOAM: controlDict entries) and replaced input files are written into the run directory.

It runs in a worker (the `e2e.apply_live` task), never in the CLI or API process. The outcome is reported as
a control event on the job's stream, matched by the request id that control waits for:
{"action": "edit-live-applied", "request", "run", "applied": [...]} or
{"action": "edit-live-failed", "request", "run", "error": {"type", "message", "problems"}}.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from orchestrator.engine.runctl import RunFilesOnNode
from orchestrator.model.errors import E2EError, InvalidState, SpecError
from orchestrator.model.events import EventKind
from orchestrator.model.spec import validate_spec
from orchestrator.model.states import JobState, RunState

log = logging.getLogger(__name__)

APPLIED = "edit-live-applied"
FAILED = "edit-live-failed"


def apply_live_edit(lc: Any, job_id: str, run_id: str, request: str, old_spec: dict[str, Any],
                    new_spec: dict[str, Any], files: dict[str, str], by: str = "",
                    deadline: float | None = None) -> list[str] | None:
    """Apply the edit old_spec -> new_spec (and the replaced files, RELPATH -> text) to the run's solver;
    what was applied, reported on the job's stream. A request past its deadline is dropped (control has
    told the user it was not applied). `lc` is the worker's Lifecycle."""
    store = lc.store
    if deadline is not None and time.time() > deadline:
        _report(store, job_id, run_id, request, FAILED, by,
                error=_error(InvalidState("the live edit arrived after its caller gave up; nothing was applied")))
        return None
    try:
        job = store.get_job(job_id)
        run = store.get_run(job_id, run_id)
        if job.state is not JobState.UP or run.state is not RunState.RUNNING:
            raise InvalidState(f"cannot apply live: run {run_id} of job {job_id} is {run.state.value} now")
        old = validate_spec(old_spec, check_paths=False, source=f"job {job_id} spec")
        new = validate_spec(new_spec, check_paths=False, source="edit")
        backend = lc.backend_of(job)
        nodes = lc.nodes_of(job, backend)
        if not nodes:
            raise InvalidState(f"cannot apply live: job {job_id} holds no node now")
        run_files = RunFilesOnNode(backend, nodes[0], lc.paths(job_id).run(run_id).root)
        applied: list[str] = []
        if old.solver != new.solver or old.monitor == new.monitor:
            applied += lc.plugin_of(job).apply_live(old.solver, new.solver, run_files)
        if old.monitor != new.monitor:  # the worker evaluates the rules: the new revision holds from its next pass
            applied.append("monitor.rules")
        for rel, text in files.items():
            run_files.write_text(rel, text)
            applied.append(rel)
    except E2EError as exc:
        _report(store, job_id, run_id, request, FAILED, by, error=_error(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - reported to the waiting caller, then logged with its traceback
        log.exception("live edit %s of %s/%s failed", request, job_id, run_id)
        _report(store, job_id, run_id, request, FAILED, by,
                error={"type": "InfrastructureError", "message": f"the live edit failed on the node: {exc}"})
        return None
    _report(store, job_id, run_id, request, APPLIED, by, applied=applied)
    return applied


def _error(exc: E2EError) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type(exc).__name__, "message": exc.message}
    if isinstance(exc, SpecError):
        error["problems"] = [list(p) for p in exc.problems]
    return error


def _report(store: Any, job_id: str, run_id: str, request: str, action: str, by: str, **data: Any) -> None:
    store.append_event(job_id, EventKind.CONTROL, {"action": action, "request": request, "run": run_id,
                                                    "by": by, **data})
