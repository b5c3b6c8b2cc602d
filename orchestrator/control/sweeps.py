"""Parameter sweeps: `--sweep KEY=v1,v2` and `sweep:` blocks expanded into validated member jobs, and their status."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.engine.edits import apply_assignments, parse_assignments
from orchestrator.model.errors import NotFound, SpecError
from orchestrator.model.spec import is_secret_key, masked_values, read_spec_file, validate_spec
from orchestrator.model.untrusted import quoted
from orchestrator.store.jobs import JobStore

MAX_MEMBERS = 256
# A member is a batch job: it terminates as soon as its run ends (limits.terminate_on_end), collecting its
# results and freeing the nodes for the members queued behind it. A spec that says how it ends (its own
# terminate_on_end or idle_shutdown, e.g. to keep a member's nodes for a look or an edit and restart) wins.
# The members' identities: each is named <name>-<index>, and one sweep runs one solver.
SWEEP_FIXED = ("name", "solver.name")


@dataclass(frozen=True)
class Member:
    index: int                # 1-based; the job is named <name>-<index>
    values: dict[str, Any]    # swept key -> this member's value, as shown to users (a Secret's masked)
    spec: Any                 # the validated JobSpec


@dataclass(frozen=True)
class SweepPlan:
    name: str
    axes: dict[str, list[Any]]
    members: list[Member]


def _sweep_key(key: str, option: str) -> str:
    """The full dotted key (a solver option may leave out `solver.`), refusing the members' identities."""
    full = parse_assignments([f"{key}="], fixed=(), option=option)[0][0]
    if any(full == pinned or full.startswith(pinned + ".") for pinned in SWEEP_FIXED):
        raise SpecError([(full, "cannot be swept: every member of a sweep has its own name and the same solver")])
    return full


def parse_sweep_options(items: list[str]) -> dict[str, list[Any]]:
    """['parameters.endTime=0.1,0.2', ...] -> {'solver.parameters.endTime': [0.1, 0.2], ...}; each value is
    read like an `e2e edit --set` value (YAML scalar), so 0.1 is a number and "0.1" a string."""
    axes: dict[str, list[Any]] = {}
    problems: list[tuple[str, str]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not raw.strip():
            problems.append(("--sweep", f"{quoted(item)} is not KEY=v1,v2,... (e.g. parameters.endTime=0.1,0.2)"))
            continue
        try:
            full = _sweep_key(key.strip(), "--sweep")
            values = [value for _, value in parse_assignments([f"{full}={v}" for v in raw.split(",")], fixed=(),
                                                              option="--sweep")]
        except SpecError as exc:
            problems += exc.problems
            continue
        if full in axes:
            problems.append((full, "swept twice; give all its values in one --sweep KEY=v1,v2,..."))
        axes[full] = values
    if problems:
        raise SpecError(problems, "--sweep")
    return axes


def sweep_block(block: Any) -> dict[str, list[Any]]:
    """A spec's `sweep:` block ({key: [values]}) with full keys; values stay as YAML typed them."""
    if not isinstance(block, dict) or not block:
        raise SpecError([("sweep", "must be a mapping of KEY: [values], e.g. parameters.endTime: [0.1, 0.2]")])
    axes, problems = {}, []
    for key, values in block.items():
        try:
            full = _sweep_key(str(key), "sweep")
        except SpecError as exc:
            problems += exc.problems
            continue
        if not isinstance(values, list) or not values:
            problems.append((f"sweep.{key}", "must be a non-empty list of values"))
            continue
        axes[full] = values
    if problems:
        raise SpecError(problems)
    return axes


def expand(data: Any, axes: dict[str, list[Any]], base_dir: Path | None = None,
           source: str = "spec", confine: Path | None = None) -> SweepPlan:
    """Every combination (the cartesian product of the axes, in order) as a validated member spec.
    All are checked before any is returned: one bad value raises SpecError naming the key and the value
    (masked when the key is a secret). `confine`: as validate_spec's."""
    if not isinstance(data, dict):
        raise SpecError([("", f"must be a mapping of fields, got {type(data).__name__}")], source)
    data = {k: v for k, v in data.items() if k != "sweep"}
    keys = list(axes)
    combos = list(itertools.product(*(axes[k] for k in keys)))
    if len(combos) > MAX_MEMBERS:
        raise SpecError([("sweep", f"{len(combos)} combinations; at most {MAX_MEMBERS} members per sweep")], source)
    name = data.get("name") if isinstance(data.get("name"), str) else "sweep"
    members: list[Member] = []
    problems: list[tuple[str, str]] = []
    for index, combo in enumerate(combos, 1):
        values = dict(zip(keys, combo, strict=True))
        try:
            member = apply_assignments(data, list(values.items()))
            member["name"] = f"{name}-{index}"
            limits = member.get("limits")
            if limits is None or isinstance(limits, dict) and limits.get("idle_shutdown") is None \
                    and limits.get("terminate_on_end") is None:
                member["limits"] = {**(limits or {}), "terminate_on_end": True}
            spec = validate_spec(member, base_dir=base_dir, source=source, confine=confine)
            members.append(Member(index, masked_values(spec, values), spec))  # the spec keeps the real value
        except SpecError as exc:
            for field, msg in exc.problems:  # a problem of the base spec is the same in every member: once
                swept = next((k for k in keys if field == k or field.startswith(k + ".")), None)
                if swept is None:
                    problem = (field, msg)
                else:
                    shown = "**********" if is_secret_key(data, swept) else quoted(values[swept])
                    problem = (field, f"{msg} (value {shown})")
                if problem not in problems:
                    problems.append(problem)
    if problems:
        raise SpecError(problems, source)
    return SweepPlan(name, {k: list(axes[k]) for k in keys}, members)


def parse_submission(data: Any, options: list[str], base_dir: Path | None = None, source: str = "spec",
                     confine: Path | None = None) -> Any:
    """A submitted spec parsed once: a validated JobSpec, or the SweepPlan its `sweep:` block and --sweep
    options (which win on the same key) ask for, every member validated. `confine`: as validate_spec's."""
    axes = sweep_block(data["sweep"]) if isinstance(data, dict) and "sweep" in data else {}
    axes.update(parse_sweep_options(options))
    if axes:
        return expand(data, axes, base_dir, source, confine)
    return validate_spec(data, base_dir=base_dir, source=source, confine=confine)


def read_submission(path: str | Path, options: list[str]) -> Any:
    """A spec file read and parsed once (parse_submission): a JobSpec or a SweepPlan."""
    data, base_dir = read_spec_file(path)
    return parse_submission(data, options, base_dir, str(path))


def plan_from_file(path: str | Path, options: list[str]) -> SweepPlan | None:
    """The sweep a spec file asks for, fully validated; None when it is a plain spec with no sweep at all."""
    parsed = read_submission(path, options)
    return parsed if isinstance(parsed, SweepPlan) else None


def new_sweep_id() -> str:
    return "sw-" + secrets.token_hex(4)


def resolve_sweep(store: JobStore, prefix: str) -> str:
    """The full id of the one sweep whose id starts with `prefix`."""
    ids = store.sweeps(limit=10_000)
    matches = [s for s in ids if s == prefix] or [s for s in ids if prefix and s.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFound(f"no sweep {prefix!r}; `e2e sweep ls` lists them")
    raise NotFound(f"{prefix!r} matches {len(matches)} sweeps: {', '.join(matches[:5])}; give more of the id")


def member_rows(store: JobStore, sweep_id: str) -> list[dict[str, Any]]:
    """One row per member job: index, id, name, swept values, job and run state, progress, nodes."""
    rows = []
    for job_id in store.sweep_members(sweep_id):
        job = store.get_job(job_id)
        run = store.get_run(job_id, job.current_run)
        rows.append({"index": job.sweep_index, "id": job_id, "name": job.name,
                     "values": job.sweep_values or {}, "state": job.state.value,
                     "run": run.id, "run_state": run.state.value,
                     "progress": run.progress.fraction if run.progress else None, "nodes": job.nodes,
                     "results": job.results})
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    """'2 COMPLETED, 1 RUNNING, 1 QUEUED' over the members' current runs; for a member past UP, its job state
    with its run's outcome, e.g. 'TERMINATED (COMPLETED)'."""
    counts: dict[str, int] = {}
    for row in rows:
        if row["state"] == "UP":
            shown = row["run_state"]
        elif row["state"] in ("QUEUED", "PROVISIONING"):
            shown = row["state"]
        else:
            shown = f"{row['state']} ({row['run_state']})"
        counts[shown] = counts.get(shown, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: -kv[1]))
