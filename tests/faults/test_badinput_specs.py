"""Bad input, part 1: hypothesis-generated job specs and edits never crash the engine and every refusal names a field.

Specs go through spec.validate_spec (what submit and the CLI call); edits through Client.edit against a job
stored in fakeredis (parse_assignments, apply_assignments, check_files, then validation and the revision
store). Accepted results must stay readable from the store, refused edits must change nothing.
A few hundred examples each in CI; E2E_LONG=1 runs 10,000 each.
"""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path

import fakeredis
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from orchestrator.control.client import Client
from orchestrator.model.errors import SpecError, UserError
from orchestrator.model.settings import Settings
from orchestrator.model.spec import spec_for_store, spec_model, validate_spec
from orchestrator.model.states import JobState
from orchestrator.store.jobs import JobStore
from tests.resilience import record

LONG = os.environ.get("E2E_LONG") == "1"
SPEC_EXAMPLES = 10_000 if LONG else 400
EDIT_EXAMPLES = 10_000 if LONG else 250
DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
HYPOTHESIS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)

# Strings an attacker or a tired user types: payloads, paths that leave a folder, names the OS refuses,
# durations and CIDRs on the edge of valid.
NASTY = ["", " ", "\x00", "a\x00b", "\n", "; touch PWNED", "$(touch PWNED)", "`id`", "../../etc/passwd", "/etc/passwd",
         "~", "~nosuchuser/x", "/" + "a" * 300, "/".join(["b" * 200] * 25), "-rf", "--help", "*", "{{ 7*7 }}",
         "1h30m", "-5s", "0s", "1e400", "nan", "inf", "2d", "90", "my-ip", "everywhere", "0.0.0.0/0", "::/0",
         "10.0.0.0/8", "300.1.1.1/33", "1280x800", "99999x1", "openfoam", "command", "fluent", "simpleFoam",
         "\u202eevil", "é" * 70, "x" * 5000]
text = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(text, inner, max_size=4)), max_leaves=8)


# -- where a field may be named: the input itself, or the spec model

def _candidates(annotation) -> list:
    """The concrete types an annotation allows (Annotated, Optional and unions unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _candidates(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [c for arg in typing.get_args(annotation) for c in _candidates(arg)]
    return [annotation]


def in_model(annotation, parts: list[str]) -> bool:
    if not parts:
        return True
    for cand in _candidates(annotation):
        origin, args = typing.get_origin(cand), typing.get_args(cand)
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            field = cand.model_fields.get(parts[0])
            if field is not None and in_model(field.annotation, parts[1:]):
                return True
        elif origin in (list, tuple) and args and parts[0].isdigit() and in_model(args[0], parts[1:]):
            return True
        elif origin is dict and args and (parts[1:] in ([], ["[key]"]) or in_model(args[1], parts[1:])):
            return True
    return False


def input_paths(data, prefix: str = "") -> set[str]:
    """Every dotted path of the input (keys as written; a blank key quoted, as the engine names it)."""
    found = set()
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        name = str(key) if str(key).strip() else repr(str(key))
        found |= {prefix + name, prefix + name + ".[key]"} | input_paths(value, f"{prefix}{name}.")
    return found


def names_a_field(field: str, data) -> bool:
    return bool(field) and (field in input_paths(data) or in_model(spec_model(), field.split(".")))


def model_paths(annotation=None, prefix: str = "", depth: int = 0) -> list[str]:
    """Every dotted field path of the spec model (all solvers' options under `solver`)."""
    found = []
    for cand in _candidates(spec_model() if annotation is None else annotation):
        if isinstance(cand, type) and issubclass(cand, BaseModel) and depth < 4:
            for name, field in cand.model_fields.items():
                found.append(prefix + name)
                found += model_paths(field.annotation, f"{prefix}{name}.", depth + 1)
    return sorted(set(found))


# -- inputs that exist, so the generated specs get past the file checks and reach the deeper validators

@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("badinput-inputs")
    case = root / "case"
    (case / "system").mkdir(parents=True)
    (case / "system" / "controlDict").write_text("endTime 1;\nwriteInterval 1;\n")
    files = {}
    for name in ("elbow.cas.h5", "beam.dat", "patch.aedt", "pipe.sim", "cantilever.inp"):
        files[name] = str(root / name)
        Path(files[name]).write_bytes((DATA / name).read_bytes())
    return {
        "openfoam": {"name": "openfoam", "application": "simpleFoam", "case": str(case),
                     "parameters": {"endTime": 1}},
        "command": {"name": "command", "command": ["echo", "ran"], "inputs": [files["beam.dat"]], "env": {"A": "1"}},
        "fluent": {"name": "fluent", "case": files["elbow.cas.h5"], "license_file": "1055@lic"},
        "mechanical": {"name": "mechanical", "input": files["beam.dat"], "jobname": "beam"},
        "electronics": {"name": "electronics", "project": files["patch.aedt"]},
        "starccm": {"name": "starccm", "sim": files["pipe.sim"], "podkey": "pk"},
        "calculix": {"name": "calculix", "input": files["cantilever.inp"]},
    }


def _set(data: dict, parts: list[str], value, delete: bool) -> None:
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if delete:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


@st.composite
def specs(draw, inputs: dict[str, dict]):
    """A valid spec of a random solver with 0-4 random changes (set, replace with junk, delete, add unknown)."""
    if draw(st.integers(0, 20)) == 0:
        return draw(values)  # not even a mapping, or a random one
    solver = draw(st.sampled_from(sorted(inputs)))
    data = {"name": "job-1", "solver": json.loads(json.dumps(inputs[solver])),
            "cluster": {"nodes": 1, "cores_per_node": 1}, "desktop": {"enabled": False}}
    paths = model_paths()
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.one_of(st.sampled_from(paths), st.builds(lambda p, k: f"{p}.{k}", st.sampled_from(paths), text)))
        _set(data, path.split("."), draw(values), delete=draw(st.integers(0, 5)) == 0)
    return data


def check_spec(data) -> str:
    """'accepted' or 'refused'; fails on a crash, an unnamed field or an accepted spec the store cannot re-read."""
    try:
        spec = validate_spec(data)
    except SpecError as exc:
        assert exc.problems, f"a SpecError without problems for {data!r}"
        for field, _ in exc.problems:
            if not isinstance(data, dict):
                continue  # 'must be a mapping': the whole spec is the field
            assert names_a_field(field, data), f"refusal names {field!r}, which is neither in the input nor the " \
                                               f"spec model: {exc.message}\ninput: {data!r}"
        return "refused"
    stored = spec_for_store(spec)
    again = validate_spec(json.loads(json.dumps(stored)), check_paths=False)
    assert spec_for_store(again) == stored, f"an accepted spec changes when re-read from the store: {data!r}"
    return "accepted"


def test_generated_specs_never_crash_and_refusals_name_the_field(inputs):
    counts = {"accepted": 0, "refused": 0, "failed": 0}

    @settings(max_examples=SPEC_EXAMPLES, **HYPOTHESIS)
    @given(specs(inputs))
    @example({"name": "a", "solver": {"name": "openfoam", "application": "simpleFoam", "case": "/t/" + "a" * 300}})
    @example({"name": "a", "solver": {"name": "fluent", "case": "~nosuchuser/x.cas.h5"}})
    def run(data):
        tally(counts, lambda: check_spec(data))

    run_and_record(run, counts, "bad input: generated specs", "specs")


def tally(counts: dict[str, int], check) -> None:
    """Count the outcome check() names, or a failure (then re-raise it, so hypothesis shrinks it)."""
    try:
        counts[check()] += 1
    except BaseException:
        counts["failed"] += 1
        raise


def run_and_record(run, counts: dict[str, int], suite: str, noun: str) -> None:
    try:
        run()
    finally:
        cases = sum(counts.values())
        outcomes = ", ".join(f"{n} {k}" for k, n in counts.items() if k != "failed")
        record(suite, cases, cases - counts["failed"],
               f"{counts['failed']} crashes or unnamed fields in {cases} {noun} ({outcomes})", **counts)


# -- edits against a stored job

@pytest.fixture(scope="module")
def edit_env(inputs, tmp_path_factory):
    home = tmp_path_factory.mktemp("badinput-home")
    store = JobStore(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))
    client = Client(Settings(home=home, redis_url="redis://unused:1/0"), store=store, user="tester")
    jobs = {}
    for solver in ("openfoam", "command", "fluent"):
        spec = validate_spec({"name": f"edit-{solver}", "solver": inputs[solver], "desktop": {"enabled": False}})
        job_id = store.create_job(name=spec.name, owner="tester", spec=spec_for_store(spec), backend="local",
                                  solver=solver)
        assert store.transition_job(job_id, JobState.PROVISIONING) and store.transition_job(job_id, JobState.UP)
        jobs[solver] = job_id
    upload = home / "upload.txt"
    upload.write_text("endTime 2;\n")
    return client, jobs, upload, home


def edit_items():
    paths = [p for p in model_paths() if not p.startswith("solver.")] + \
        [p[len("solver."):] for p in model_paths() if p.startswith("solver.")]
    structured = st.builds(lambda k, v, style: f"{k}={json.dumps(v) if style else yaml.safe_dump(v).strip()}",
                           st.sampled_from(paths), values, st.booleans())
    plausible = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
        ["parameters.endTime", "description", "limits.walltime", "limits.idle_shutdown", "desktop.geometry",
         "desktop.access", "command", "env.A", "iterations", "application", "mesh"]),
        st.one_of(st.integers(-5, 500).map(str), st.sampled_from(NASTY), st.just("[bash, -c, 'echo hi']")))
    return st.one_of(st.lists(plausible, min_size=1, max_size=2), st.lists(st.one_of(
        plausible, structured, text, st.builds(lambda k, v: f"{k}={v}", st.sampled_from(paths), text)), max_size=4))


REL_PATHS = ["system/controlDict", "../escape", "/etc/passwd", ".e2e/pid", "a/../../b", "dir/", "", "a\nb", "ok.txt",
             "./x", "a//b", "\x00"]


def _edited_view(stored: dict, items: list[str]) -> dict:
    """The stored spec with the raw assignments laid over it, for checking which field a refusal names."""
    view = json.loads(json.dumps(stored))
    for item in items:
        key, _, raw = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        parts = key.split(".") if key else []
        if parts and parts[0] not in ("name", "description", "cluster", "desktop", "limits", "solver"):
            parts = ["solver"] + parts
        if parts and all(parts):
            try:
                _set(view, parts, value, delete=False)
            except (TypeError, AttributeError):
                pass
    return view


def test_generated_edits_never_crash_and_refusals_change_nothing(edit_env):
    client, jobs, upload, home = edit_env
    counts = {"accepted": 0, "refused": 0, "no-op": 0, "failed": 0}

    @settings(max_examples=EDIT_EXAMPLES, **HYPOTHESIS)
    @given(st.sampled_from(sorted(jobs)), edit_items(),
           st.one_of(st.just({}), st.dictionaries(st.sampled_from([str(upload), str(home / "missing"), str(home)]),
                                                  st.one_of(st.sampled_from(REL_PATHS), text), max_size=2)))
    @example("openfoam", ["parameters.endTime=2"], {str(upload): "../../outside.txt"})
    @example("command", ["inputs=['/" + "a" * 300 + "']"], {})
    def run(solver, items, files):
        tally(counts, lambda: check_edit(client, jobs[solver], items, files))

    run_and_record(run, counts, "bad input: generated edits", "edits")


def check_edit(client: Client, job_id: str, items: list[str], files: dict[str, str]) -> str:
    before = client.store.get_job(job_id)
    edits_dir = Path(client.settings.home) / "jobs" / job_id / "edits"
    before_files = sorted(edits_dir.rglob("*")) if edits_dir.exists() else []
    try:
        entry = client.edit(job_id, sets=items, files=files)
    except UserError as exc:
        after = client.store.get_job(job_id)
        assert after.spec == before.spec and after.revision == before.revision, \
            f"a refused edit changed the job: {items!r} {files!r}"
        assert (sorted(edits_dir.rglob("*")) if edits_dir.exists() else []) == before_files, \
            f"a refused edit left files behind: {items!r} {files!r}"
        if not isinstance(exc, SpecError):
            assert "nothing" in exc.message, f"a refusal that names no field: {exc.message}"
            return "no-op"
        view = _edited_view(before.spec, items)
        for field, _ in exc.problems:
            assert field in ("--set", "--file") or names_a_field(field, view), \
                f"edit refusal names {field!r}: {exc.message}\nitems: {items!r}"
        return "refused"
    after = client.store.get_job(job_id)
    assert after.revision == entry["revision"] == before.revision + 1
    validate_spec(after.spec, check_paths=False)  # the stored revision stays readable
    for rel in entry["files"]:
        saved = edits_dir / f"rev-{entry['revision']:03d}" / rel
        assert saved.is_file() and edits_dir in saved.resolve().parents, f"an uploaded file landed outside: {rel}"
    return "accepted"
