"""Spec edits: `key=value` assignments and replaced input files, checked into a new spec revision."""

from __future__ import annotations

import copy
import os
import pwd
import re
import shutil
import stat
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from orchestrator.cluster.identity import acting_as, lookup
from orchestrator.model.errors import SpecError, UserError
from orchestrator.model.identity import Account
from orchestrator.model.paths import JobPaths
from orchestrator.model.untrusted import AliasError, load_yaml, quoted
from orchestrator.sync.confine import write_confined

KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
TOP_LEVEL = ("name", "description", "cluster", "desktop", "limits", "monitor", "solver")
# Fixed once the cluster exists: the allocation, the plugin, and the job's identity.
IMMUTABLE = ("name", "cluster", "solver.name")
MAX_FILE_BYTES = 64 << 20


def parse_assignments(items: list[str], fixed: tuple[str, ...] = IMMUTABLE,
                      option: str = "--set") -> list[tuple[str, Any]]:
    """'solver.parameters.endTime=0.5' -> ('solver.parameters.endTime', 0.5). A key that does not start
    with a top-level spec field is taken as a solver option ('parameters.endTime' = 'solver.parameters...').
    Values are YAML scalars/lists/maps, so 0.5 is a number and "0.5" a string. Keys under `fixed` are
    refused (an edit cannot change the allocation; a sweep may)."""
    problems, parsed = [], []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not KEY.match(key):
            problems.append((option, f"{quoted(item)} is not key=value with a dotted key "
                                     "(e.g. parameters.endTime=0.5)"))
            continue
        if key.split(".")[0] not in TOP_LEVEL:
            key = f"solver.{key}"
        if any(key == pinned or key.startswith(pinned + ".") for pinned in fixed):
            problems.append((key, "cannot change once the job exists; submit a new job instead"))
            continue
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except AliasError as exc:
            problems.append((key, str(exc)))
            continue
        except yaml.YAMLError:
            value = raw
        parsed.append((key, value))
    if problems:
        raise SpecError(problems)
    return parsed


def apply_assignments(spec: dict[str, Any], assignments: list[tuple[str, Any]]) -> dict[str, Any]:
    """A copy of the stored spec with the assignments made (intermediate maps created as needed)."""
    new = copy.deepcopy(spec)
    for key, value in assignments:
        node = new
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SpecError([(key, f"{part!r} is a value, not a section")])
            node = child
        node[parts[-1]] = value
    return new


def diff(old: Any, new: Any, prefix: str = "") -> list[dict[str, Any]]:
    """Every leaf that differs between two dumped specs, as {field, old, new} (secrets already masked)."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(set(old) | set(new)):
            changes += diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return changes
    if old != new:
        return [{"field": prefix.rstrip("."), "old": old, "new": new}]
    return []


# What Linux file systems take (NAME_MAX), and a whole path well inside PATH_MAX once under the run folder
MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 1024


def check_relpath(rel: str) -> PurePosixPath:
    """A destination inside the run directory: relative, no '..', not the engine's .e2e folder."""
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or rel.endswith("/"):
        raise SpecError([("--file", f"{quoted(rel)} must be a relative file path inside the case, without '..'")])
    if pure.parts[0] == ".e2e" or "\n" in rel or "\0" in rel:
        raise SpecError([("--file", f"{quoted(rel)} is not a path the solver's inputs may use")])
    if len(rel.encode()) > MAX_PATH_BYTES or any(len(part.encode()) > MAX_NAME_BYTES for part in pure.parts):
        shown = rel if len(rel) <= 60 else rel[:60] + "..."
        raise SpecError([("--file", f"{quoted(shown)} is too long: at most {MAX_NAME_BYTES} bytes a name and "
                                    f"{MAX_PATH_BYTES} in all")])
    return pure


def check_files(files: dict[str, str]) -> dict[PurePosixPath, Path]:
    """Validate `LOCAL=RELPATH` file edits: the local file exists, is regular and not too large."""
    checked, problems = {}, []
    for local, rel in files.items():
        try:
            dest = check_relpath(rel)
        except SpecError as exc:
            problems += exc.problems
            continue
        src = Path(local).expanduser()
        if not src.is_file():
            problems.append(("--file", f"{quoted(local)} is not a readable file"))
        elif src.stat().st_size > MAX_FILE_BYTES:
            problems.append(("--file", f"{quoted(local)} is larger than {MAX_FILE_BYTES >> 20} MiB"))
        else:
            checked[dest] = src
    if problems:
        raise SpecError(problems)
    return checked


def save_files(paths: JobPaths, revision: int, files: dict[PurePosixPath, Path], own_copies: bool = False) -> None:
    """Keep the edited files of a revision under edits/rev-NNN/ (written whole, then renamed into place).
    own_copies: the sources are the engine's own temporary copies (an API edit's bodies), read as the engine;
    otherwise they are paths someone named on the engine host, read as the job's account."""
    final = paths.edits / f"rev-{revision:03d}"
    staging = paths.edits / f".rev-{revision:03d}.tmp"
    owner = tree_owner(paths)
    contents = {rel: src.read_bytes() for rel, src in files.items()} if own_copies else None
    # edits/ is inside the job's tree, which the job may have rearranged (edits -> /etc): written as its
    # account, and named local files read as it too (it may not copy what it could not read itself)
    with acting_as(owner):
        shutil.rmtree(staging, ignore_errors=True)
        for rel, src in files.items():
            target = staging / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if contents is not None:
                    target.write_bytes(contents[rel])
                else:
                    shutil.copyfile(src, target)
            except PermissionError as exc:
                who = owner.name if owner is not None else "the engine"
                raise SpecError([("--file", f"{src} -> {rel}: {exc.strerror} for OS account {who}: "
                                            f"{exc.filename}")]) from None
            except OSError as exc:   # a name longer than the file system takes, a folder where a file is...
                shutil.rmtree(staging, ignore_errors=True)
                raise SpecError([("--file", f"{str(rel)[:80]}{'...' if len(str(rel)) > 80 else ''}: "
                                            f"{exc.strerror}")]) from None
        if files:
            os.replace(staging, final)


def tree_owner(paths: JobPaths) -> Account | None:
    """The account that owns a job's folder (handed over at provision; the job cannot give it away, its
    parent jobs/ is the engine's), None while the engine's own (not provisioned yet, single-user mode)."""
    try:
        st = os.lstat(paths.root)
    except FileNotFoundError:
        return None
    if st.st_uid == 0 or not stat.S_ISDIR(st.st_mode):
        return None
    try:
        return lookup(pwd.getpwuid(st.st_uid).pw_name)
    except (KeyError, UserError):
        raise UserError(f"job folder {paths.root} belongs to uid {st.st_uid}, which has no account") from None


def overlay(paths: JobPaths, up_to: int) -> dict[str, Path]:
    """The newest edited version of every file, over revisions 2..up_to (later revisions win)."""
    found: dict[str, Path] = {}
    for revision in range(2, up_to + 1):
        folder = paths.edits / f"rev-{revision:03d}"
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    found[str(path.relative_to(folder))] = path
    return found


def apply_overlay(files: dict[str, Path], run_dir: Path) -> list[str]:
    """Copy edited files into a run directory (replacing what is there); the relative paths written."""
    written = []
    for rel, src in files.items():
        # the solver may have left symlinks in its run directory: never write through one
        write_confined(run_dir, str(check_relpath(rel)), src.read_bytes())
        written.append(rel)
    return written
