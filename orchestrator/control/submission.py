"""Submitting specs: one job, or a sweep's members, each checked against its backend before any job is created;
and the sweeps' listings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.control.accounts import job_account
from orchestrator.control.notify import check_spec_webhooks
from orchestrator.control.sweeps import SweepPlan, member_rows, new_sweep_id, parse_submission, resolve_sweep, summary
from orchestrator.control.uploads import check_inside_uploads, uploads_root
from orchestrator.desktop.access import resolve_for_submit
from orchestrator.model.errors import SpecError
from orchestrator.model.spec import load_spec, spec_for_store, validate_spec
from orchestrator.worker import names

if TYPE_CHECKING:
    from orchestrator.control.service import ControlService


def submit_file(service: ControlService, path: str | Path) -> str:
    return submit(service, load_spec(path))


def submit_data(service: ControlService, data: dict[str, Any], base_dir: Path | None = None) -> str:
    return submit(service, validate_spec(data, base_dir=base_dir))


def submit_document(service: ControlService, data: Any, sweep: list[str] | tuple[str, ...] = (),
                    base_dir: Path | None = None, confine: bool = False) -> dict[str, Any]:
    parsed = checked_spec(service, data, sweep, base_dir=base_dir, confine=confine)
    if isinstance(parsed, SweepPlan):
        sweep_id, job_ids = submit_sweep(service, parsed)
        return {"sweep": sweep_id, "jobs": job_ids}
    return {"id": submit(service, parsed)}


def checked_spec(service: ControlService, data: Any, sweep: list[str] | tuple[str, ...] = (), *,
                 base_dir: Path | None = None, confine: bool = False, owner: str | None = None,
                 source: str = "spec") -> Any:
    """The one check of spec data a caller sends, for submits, sweeps and edits alike: parsed once (a JobSpec,
    or a SweepPlan when it asks for a sweep). With `confine` (API callers), relative paths resolve against the
    caller's uploads and every path-valued field (case folders, solver inputs, input files) must lie inside
    them (an edit: the job owner's uploads); a path elsewhere is refused by its field with one message, before
    anything looks at the disk, so the answer never tells whether a server path exists."""
    root = uploads_root(service.settings.root, owner or service.user) if confine else None
    parsed = parse_submission(data, list(sweep), root or base_dir, source, confine=root)
    specs = [m.spec for m in parsed.members] if isinstance(parsed, SweepPlan) else [parsed]
    for spec in specs:
        if root is not None:  # the model refused every path outside already; this re-checks the validated result
            check_inside_uploads(spec, root)
        check_spec_webhooks(service, spec)
    return parsed


def submit(service: ControlService, spec: Any, extra: dict[str, Any] | None = None) -> str:
    check_spec_webhooks(service, spec)  # the engine's private-address policy (the model checked the URLs' form)
    backend = check_fits(service, spec)
    account = job_account(service)  # resolved now, kept on the job: every later step runs as it
    spec = resolve_for_submit(spec, service.store, service.user, service.address)  # desktop.access: default, my-ip
    job_id, heads_queue = service.store.create_queued(name=spec.name, owner=service.user, spec=spec_for_store(spec),
                                                      backend=backend, solver=spec.solver.name,
                                                      extra={**(extra or {}), "account": account})
    if spec.desktop.enabled:
        desktop_token(service, job_id)
    # Only a job at the head of the queue asks for its provision: one behind others is kicked by the job before
    # it as that one leases (or frees nodes), a burst then costs one provision task per job, not two (a lost
    # kick costs a beat tick: the head is due at every tick). No gap: a lease takes its job off the queue before
    # it reads the next head, so a job queued meanwhile is seen as the head by its own create or by that kick.
    if heads_queue:
        service.send(names.PROVISION, job_id)
    return job_id


def desktop_token(service: ControlService, job_id: str) -> None:
    """The desktop session's job-scoped token (its E2E_TOKEN), minted here, where the API's Redis role may
    write tokens (a worker's may not: it could mint anyone's), and kept beside the VNC password until the
    desktop writes it into the session's 0600 env file. Jobs of the engine machine's own user (no API
    account) get none: their desktop's CLI talks to the engine directly."""
    from orchestrator.model.errors import NotFound

    try:
        token = service.store.users.issue_for_job(service.user, job_id)
    except NotFound:
        return
    service.store.secrets.set_api_token(job_id, token)


def submit_sweep(service: ControlService, plan: SweepPlan) -> tuple[str, list[str]]:
    # Every member is checked first: a sweep is queued whole or not at all.
    job_account(service)
    for member in plan.members:
        check_spec_webhooks(service, member.spec)
        check_fits(service, member.spec)
        resolve_for_submit(member.spec, service.store, service.user, service.address)  # raises before any job
    sweep_id = new_sweep_id()
    job_ids = [submit(service, member.spec, extra={"sweep": sweep_id, "sweep_index": member.index,
                                                   "sweep_values": member.values})
               for member in plan.members]
    return sweep_id, job_ids


def check_fits(service: ControlService, spec: Any) -> str:
    """The backend's name, once the spec's node and core counts fit it; SpecError otherwise."""
    from orchestrator.cluster import get_backend

    backend = get_backend(spec.cluster.backend, service.settings)
    nodes = backend.inventory()
    problems = []
    if spec.cluster.nodes > len(nodes):
        problems.append(("cluster.nodes", f"{spec.cluster.nodes} requested, but the {backend.name} "
                                          f"backend has {len(nodes)} nodes"))
    max_cores = min((n.cores for n in nodes), default=0)
    if spec.cluster.cores_per_node > max_cores:
        problems.append(("cluster.cores_per_node", f"{spec.cluster.cores_per_node} requested, but "
                                                   f"{backend.name} nodes have {max_cores} cores"))
    if problems:
        raise SpecError(problems)
    return backend.name


def sweeps(service: ControlService, limit: int = 50) -> list[dict[str, Any]]:
    store = service.store
    found = []
    for sweep_id in store.sweeps(limit):
        rows = member_rows(store, sweep_id)
        first = store.get_job(rows[0]["id"]) if rows else None
        found.append({"sweep": sweep_id, "name": first.name.rsplit("-", 1)[0] if first else "",
                      "members": len(rows), "summary": summary(rows),
                      "created_at": first.created_at if first else None})
    return found


def sweep_status(service: ControlService, sweep: str) -> tuple[str, list[dict[str, Any]]]:
    sweep_id = resolve_sweep(service.store, sweep)
    return sweep_id, member_rows(service.store, sweep_id)
