"""The user's contract: the job spec (YAML/JSON), validated at the edge with one message per problem."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import ErrorDetails

from orchestrator.model.access import normalise_rules
from orchestrator.model.errors import SpecError
from orchestrator.model.monitor import MonitorSpec
from orchestrator.model.notify import NotifySpec
from orchestrator.model.spec_types import NAME_PATTERN, Duration
from orchestrator.model.spec_types import parse_duration as parse_duration  # re-exported: callers found it here
from orchestrator.model.untrusted import MAX_QUOTED, load_yaml, quoted, yaml_error_text
from solvers.base import Registry, SolverOptions, registry

MAX_PROBLEMS = 50  # problems one error lists; a spec with more (a huge generated list) gets a count of the rest
# The one answer for any path outside an API caller's uploads: the same words whether it exists or not.
OUTSIDE_UPLOADS = "must be inside your uploads (POST /uploads), named relative to them"


def resolve_input_path(value: Any, info: ValidationInfo) -> Any:
    """Resolve a relative path against the spec file's folder (validation context `base_dir`). With `confine`
    in the context (an API caller's uploads), the path must lie inside that folder; see confined_path."""
    if isinstance(value, str) and value.strip():
        confine = (info.context or {}).get("confine")
        if confine is not None:
            return confined_path(value, Path(confine))
        try:
            path = Path(value).expanduser()
            base = (info.context or {}).get("base_dir")
            if not path.is_absolute() and base is not None:
                path = Path(base) / path
            path = path.resolve()
            path.exists()  # a name too long for the OS raises here, not in the checks that follow
        except RuntimeError:  # ~user of an unknown user
            raise ValueError(f"{quoted(value)}: no such user's home folder") from None
        except OSError as exc:
            raise ValueError(f"{quoted(value)} is not a usable path: {exc.strerror or exc}") from None
        return path
    return value


def confined_path(value: str, root: Path) -> Path:
    """`value` resolved against `root` (an API caller's uploads), refused with OUTSIDE_UPLOADS when it leaves
    root. Decided on the name first (no look at the disk; `~`, `~bob` name home folders, never expanded and
    never inside root), so the answer for a path elsewhere never depends on whether it exists; then the
    symlinks inside root are followed and the result checked again."""
    real_root = root.resolve()
    named = "\0" not in value and not value.startswith("~")
    lexical = Path(os.path.normpath(os.path.join(root, value))) if named else None
    if lexical is None or not (lexical.is_relative_to(root) or lexical.is_relative_to(real_root)):
        raise ValueError(OUTSIDE_UPLOADS)
    try:
        path = lexical.resolve()
        path.exists()  # a name too long for the OS raises here, not in the checks that follow
    except RuntimeError:  # a symlink loop
        raise ValueError(OUTSIDE_UPLOADS) from None
    except OSError as exc:
        raise ValueError(f"{quoted(value)} is not a usable path: {exc.strerror or exc}") from None
    if not path.is_relative_to(real_root):
        raise ValueError(OUTSIDE_UPLOADS)
    return path


def check_input_dir(path: Path, info: ValidationInfo) -> Path:
    """An input folder must exist when the spec comes from a user (skipped when re-reading stored specs)."""
    if (info.context or {}).get("check_paths", True) and not path.is_dir():
        raise ValueError(f"folder {quoted(str(path))} does not exist")
    return path


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSpec(StrictModel):
    """How many nodes, of how many cores, from which backend."""

    backend: Literal["local", "ssh", "slurm"] = "local"
    nodes: int = Field(1, ge=1, le=1024)
    cores_per_node: int = Field(1, ge=1, le=1024)
    restart_on_node_failure: bool = Field(False, description="when a node stops answering, restart the run from "
                                                             "its latest checkpoint on a replacement node")

    @property
    def total_cores(self) -> int:
        return self.nodes * self.cores_per_node


class DesktopSpec(StrictModel):
    """The remote desktop on the head node, and who may reach it."""

    enabled: bool = True
    geometry: str = Field("1280x800", pattern=r"^\d{3,5}x\d{3,5}$")
    depth: Literal[16, 24, 32] = 24
    access: list[str] | None = Field(
        None, description="everywhere, my-ip, or IPv4/IPv6 CIDRs; unset: the user's default (e2e access)")

    @field_validator("access", mode="before")
    @classmethod
    def _access_rules(cls, value: Any) -> Any:
        return None if value is None else normalise_rules(value)


class Limits(StrictModel):
    """Guards that end a job without a user's terminate."""

    walltime: Duration | None = None
    idle_shutdown: Duration | None = None
    terminate_on_end: bool = Field(False, description="a batch job: terminate (results stored, nodes freed) as "
                                                      "soon as its run completes, fails or is stopped")


class JobSpecBase(StrictModel):
    """Fields shared by every job spec; `solver` is added per installed plugin set."""

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, . _ -; at most 64")
    description: str = Field("", max_length=2000)
    cluster: ClusterSpec = ClusterSpec()
    desktop: DesktopSpec = DesktopSpec()
    limits: Limits = Limits()
    notify: NotifySpec | None = Field(None, description="events of this job to send, and where (email, webhooks)")
    monitor: MonitorSpec = MonitorSpec()


def build_spec_model(reg: Registry) -> type[JobSpecBase]:
    """JobSpec with `solver` as a union of the installed plugins' options, discriminated on `solver.name`."""
    models = [plugin.Options for plugin in reg]
    if not models:
        solver_type: Any = SolverOptions
    elif len(models) == 1:
        solver_type = models[0]
    else:
        solver_type = Annotated[Union[tuple(models)], Field(discriminator="name")]
    return create_model("JobSpec", __base__=JobSpecBase, solver=(solver_type, ...))


@lru_cache(maxsize=1)
def spec_model() -> type[JobSpecBase]:
    return build_spec_model(registry())


def validate_spec(data: Any, *, base_dir: Path | None = None, source: str = "spec", check_paths: bool = True,
                  confine: Path | None = None):
    """Validate a spec mapping; raise SpecError listing every problem with its field (at most MAX_PROBLEMS).
    `confine`: every path-valued field must lie inside this folder (an API caller's uploads)."""
    model = spec_model()
    if not isinstance(data, dict):
        raise SpecError([("", f"must be a mapping of fields, got {type(data).__name__}")], source)
    context = {"base_dir": base_dir, "check_paths": check_paths, "confine": confine}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        problems = [_describe(err, model, data) for err in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:  # said on the last one listed, so every problem still names its field
            field, msg = problems[-1]
            problems[-1] = (field, f"{msg} (and {len(errors) - MAX_PROBLEMS} more problems, not listed)")
        raise SpecError(problems, source) from None


def spec_for_store(spec: JobSpecBase) -> dict[str, Any]:
    """The spec as stored in Redis: JSON, with secrets (licence keys) revealed, since runs need them."""
    return spec.model_dump(mode="json", context={"reveal_secrets": True})


def masked_values(spec: JobSpecBase, values: dict[str, Any]) -> dict[str, Any]:
    """Values given for dotted spec keys (a sweep member's), as users may see them: where the key holds a
    Secret (a licence key, or a section with one), the spec's masked dump of it, never the value itself."""
    shown, real = spec.model_dump(mode="json"), spec_for_store(spec)
    return {key: _at(shown, key) if _at(shown, key) != _at(real, key) else value for key, value in values.items()}


def is_secret_key(data: Any, key: str) -> bool:
    """Whether a dotted key of a spec like `data` (its solver.name picks the options) names a Secret field or
    a section holding one; for messages about values that never passed validation."""
    solver = data.get("solver") if isinstance(data, dict) else None
    options = _solver_options(solver.get("name") if isinstance(solver, dict) else None)
    current: Any = spec_model()
    annotation: Any = None
    for part in key.split("."):
        if current is None:
            return False
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return False
        annotation = options if part == "solver" and current is spec_model() else fields[part].annotation
        subs = _submodels(annotation)
        current = subs[0] if subs else None
    return _holds_secret(annotation)


def _holds_secret(annotation: Any, depth: int = 4) -> bool:
    from typing import get_args

    from pydantic import SecretStr

    if depth == 0 or annotation is None:
        return False
    if isinstance(annotation, type) and issubclass(annotation, SecretStr):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(_holds_secret(f.annotation, depth - 1) for f in annotation.model_fields.values())
    return any(_holds_secret(arg, depth - 1) for arg in get_args(annotation))


def _at(doc: Any, key: str) -> Any:
    for part in key.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def load_spec(path: str | Path):
    """Read and validate a YAML or JSON spec file; relative paths inside resolve against its folder."""
    data, base_dir = read_spec_file(path)
    return validate_spec(data, base_dir=base_dir, source=str(path))


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong with a YAML text, and where (line and column, when the parser knows)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"not valid YAML{where}"


def read_spec_file(path: str | Path) -> tuple[Any, Path]:
    """The parsed (not yet validated) content of a YAML or JSON spec file, and the folder it is in."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([("", f"cannot read {str(path)!r}: {exc.strerror or exc}")], str(path)) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError([("", yaml_error_text(exc))], str(path)) from None
    return data, path.resolve().parent


def _describe(err: ErrorDetails, model: type[BaseModel], data: Any = None) -> tuple[str, str]:
    """One (field, message) pair for a pydantic error, with the allowed names where that helps."""
    # A blank key is still named, quoted, so the line never reads as if no field were meant.
    loc = [str(part) if str(part).strip() else repr(str(part)) for part in err.get("loc", ())]
    kind = err.get("type", "")
    msg = err.get("msg", "invalid")
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        field = [part for i, part in enumerate(loc)
                 if not (i > 0 and loc[i - 1] == "solver" and part in registry().names())]
        hint = _suggest(field, allowed, model, data)
        listed = f"llowed fields: {', '.join(allowed)}" if allowed else ""
        msg = f"unknown field; {hint}" + (f" A{listed}" if listed else "") if hint else \
            "unknown field" + (f"; a{listed}" if listed else "")
    elif kind == "union_tag_invalid":
        tags = err.get("ctx", {}).get("expected_tags", "")
        msg = f"unknown solver {quoted(err.get('ctx', {}).get('tag'))}; known solvers: {tags.replace(chr(39), '')}"
        loc = loc + ["name"]
    elif kind == "union_tag_not_found":
        msg = f"missing; choose one of: {', '.join(registry().names())}"
        loc = loc + ["name"]
    elif kind == "invalid_key":   # a key that is not text (YAML `? ` or `null:`): the mapping holding it is meant
        msg = f"has a key that is not text ({loc[-1]}); field names are text"
        loc = loc[:-1]
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "string_pattern_mismatch" and loc[-1:] == ["name"]:
        msg = "must start with a letter or digit and use only letters, digits, '.', '_' or '-' (at most 64)"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    # Drop pydantic's union branch labels (a plugin's name) that follow the discriminated field.
    if len(loc) > 1 and loc[0] == "solver" and loc[1] in registry().names():
        loc = [loc[0]] + loc[2:]
    return ".".join(loc), msg if len(msg) <= 4 * MAX_QUOTED else msg[:4 * MAX_QUOTED - 1] + "…"




def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the (sub)model at `loc`, walking through the discriminated solver union."""
    current: Any = model
    for i, part in enumerate(loc):
        if part in registry().names() and i > 0 and loc[i - 1] == "solver":
            current = registry().get(part).Options
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if part == "solver" and current is None:
            continue
    return sorted(getattr(current, "model_fields", {}))


def _suggest(path: list[str], allowed: list[str], model: type[BaseModel], data: Any) -> str:
    """'did you mean X?' for an unknown field: a field of that very name elsewhere in the spec (or its
    model), else a close spelling at that level (or at the top), else an entry of a free-form map there;
    "" when nothing is close."""
    import difflib

    name, parent = path[-1], path[:-1]
    solver = data.get("solver") if isinstance(data, dict) else None
    options = _solver_options(solver.get("name") if isinstance(solver, dict) else None)
    known = set(_model_paths(model, options)) | set(_data_paths(data))
    same = sorted((p for p in known if p[-1].lower() == name.lower() and p != tuple(path)),
                  key=lambda p: (p[:len(parent)] != tuple(parent), len(p), p))
    if same:
        return _did_you_mean([".".join(p) for p in same[:3]])
    close = [".".join([*parent, m]) for m in difflib.get_close_matches(name, allowed, n=3, cutoff=0.6)]
    if not close and len(parent) == 1:  # `--set clustr.nodes=2` arrives as solver.clustr
        close = difflib.get_close_matches(name, sorted(model.model_fields), n=3, cutoff=0.6)
    if close:
        return _did_you_mean(close)
    level = options if parent == ["solver"] and options is not None else _model_at(model, parent)
    maps = [(field, info) for field, info in getattr(level, "model_fields", {}).items()
            if getattr(info.annotation, "__origin__", None) is dict]
    if len(maps) == 1:  # e.g. a solver's free-form parameters map
        field, info = maps[0]
        what = f" ({field}: {info.description})" if info.description else ""
        return f"did you mean {'.'.join([*parent, field, name])}{what}?"
    return ""


def _did_you_mean(paths: list[str]) -> str:
    return "did you mean " + " or ".join(paths) + "?"


def _solver_options(name: Any) -> type[BaseModel] | None:
    try:
        return registry().get(name).Options if isinstance(name, str) else None
    except Exception:  # an unknown solver is reported on its own
        return None


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds directly (X, X | None)."""
    from typing import get_args

    candidates = [annotation, *get_args(annotation)]
    return [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]


def _model_paths(model: type[BaseModel], options: type[BaseModel] | None, prefix: tuple[str, ...] = (),
                 depth: int = 4):
    """Every field path of the spec model, the job's solver options in place of the solver union."""
    if depth == 0:
        return
    for field, info in model.model_fields.items():
        path = (*prefix, field)
        yield path
        subs = [options] if path == ("solver",) and options is not None else _submodels(info.annotation)
        for sub in subs[:1]:
            yield from _model_paths(sub, None, path, depth - 1)


def _data_paths(data: Any, prefix: tuple[str, ...] = (), depth: int = 6):
    """Every key path of the (unvalidated) spec mapping."""
    if depth == 0 or not isinstance(data, dict):
        return
    for key, value in data.items():
        path = (*prefix, str(key))
        yield path
        yield from _data_paths(value, path, depth - 1)


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return None
        subs = _submodels(fields[part].annotation)
        current = subs[0] if subs else None
    return current
