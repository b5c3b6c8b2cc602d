"""A terminated job's results: every file of the work folder and of each run directory, with a sha256 manifest.

`ResultsStore` is the interface (an object store fits behind it later); `LocalResultsStore` keeps results
under $E2E_HOME/results/<job>/ with manifest.json beside the files. A store is written into a staging folder
and renamed into place, so a results folder with a manifest is always complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.model.errors import InfrastructureError, NotFound
from orchestrator.model.paths import JobPaths, results_dir
from orchestrator.model.records import Job
from orchestrator.model.services import ServiceContext
from orchestrator.model.states import JobState
from orchestrator.sync.confine import check_rel, confined, link_stays_inside, open_confined
from orchestrator.sync.tree import scratch_name, temp_name

MANIFEST = "manifest.json"
SECRET_BEARING = frozenset({"wrapper.sh"})  # the engine's run wrapper exports licence settings
CHUNK = 1 << 20


class ResultsStore(ABC):
    """Where terminated jobs' files are kept, addressed by job id and relative path."""

    @abstractmethod
    def put(self, job_id: str, sources: dict[str, Path]) -> dict[str, Any]:
        """Store every file under each source folder as <prefix>/<relative path>; the manifest."""

    @abstractmethod
    def manifest(self, job_id: str) -> dict[str, Any] | None:
        """The job's manifest, or None when nothing (complete) is stored."""

    @abstractmethod
    def open(self, job_id: str, rel: str) -> BinaryIO:
        """A stored file for reading."""

    @abstractmethod
    def location(self, job_id: str) -> str:
        """Where a person finds the results (a folder, a URL)."""


class LocalResultsStore(ResultsStore):
    """Results in a folder per job on the engine's machine."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    def folder(self, job_id: str) -> Path:
        return results_dir(self.home, check_rel(job_id))

    def location(self, job_id: str) -> str:
        return str(self.folder(job_id))

    def manifest(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder(job_id) / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise InfrastructureError(f"results manifest of job {job_id} is unreadable: {exc}") from exc

    def open(self, job_id: str, rel: str) -> BinaryIO:
        return open_confined(self.folder(job_id), rel)

    def put(self, job_id: str, sources: dict[str, Path]) -> dict[str, Any]:
        final = self.folder(job_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.with_name(temp_name(final.name))
        files: list[dict[str, Any]] = []
        links: list[dict[str, str]] = []
        by_hash: dict[str, Path] = {}   # the same content stored twice (work/ mirrors runs/) is hard-linked
        try:
            staging.mkdir()  # here, not with the first file: a job terminated before writing any has results too
            for prefix, root in sources.items():
                for rel, kind, target in _walk(root):
                    name = f"{prefix}/{rel}"
                    if kind == "l":
                        links.append({"path": name, "target": target})
                        continue
                    dest = confined(staging, name)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    digest, size = _copy_hashing(root / rel, dest, by_hash)
                    files.append({"path": name, "size": size, "sha256": digest})
            manifest = {"job": job_id, "created_at": time.time(), "algorithm": "sha256",
                        "files": files, "links": links, "bytes": sum(f["size"] for f in files)}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=True))
            if final.exists():  # an earlier, interrupted attempt (or the old whole-folder collect)
                shutil.rmtree(final)
            os.replace(staging, final)
            return manifest
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _walk(root: Path) -> Iterator[tuple[str, str, str]]:
    """(relative path, "f" or "l", link target) of every file and inner symlink under root, sorted.
    Left out: the run wrapper (top level or under .e2e/; it may export licence settings), temp, lock, core and
    scratch files, and symlinks that lead outside the folder."""
    stack = [("", root)]
    while stack:
        rel_dir, folder = stack.pop()
        if os.path.islink(folder):  # the job swapped its own folder for a link: never list (or collect) elsewhere
            continue
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        for de in entries:
            rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
            if _left_out(rel):
                continue
            if de.is_symlink():
                target = os.readlink(de.path)
                if link_stays_inside(root, rel, target):
                    yield rel, "l", target
            elif de.is_dir(follow_symlinks=False):
                stack.append((rel, Path(de.path)))
            elif de.is_file(follow_symlinks=False):
                yield rel, "f", ""


def _left_out(rel: str) -> bool:
    """The run wrapper (top level or under .e2e/: it may export licence settings), temp, lock, core and scratch
    files."""
    folder, _, name = rel.rpartition("/")
    return (name in SECRET_BEARING and (not folder or folder.startswith(".e2e"))) or scratch_name(name)


def _copy_hashing(src: Path, dest: Path, by_hash: dict[str, Path]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    # O_NOFOLLOW: the job may swap a listed file for a link to a file only root reads, before this opens it
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as fin, open(dest, "wb") as fout:
        while block := fin.read(CHUNK):
            digest.update(block)
            fout.write(block)
            size += len(block)
        mode = os.fstat(fin.fileno())
    hexdigest = digest.hexdigest()
    os.utime(dest, ns=(mode.st_atime_ns, mode.st_mtime_ns))
    first = by_hash.setdefault(hexdigest, dest)
    if first != dest and size >= CHUNK:
        os.unlink(dest)
        os.link(first, dest)
    return hexdigest, size


class LiveFiles(ResultsStore):
    """A running job's files seen as a (read-only) store, under the names its results will have: the work
    folder (`work/`) and each run directory (`runs/<run>/`), listed and downloaded like results, without
    checksums (files still change). A run directory is the engine's copy: the live one on shared storage, the
    live sync's mirror from a node with its own disk (staged back at the run's end at the latest)."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = {prefix: Path(root) for prefix, root in sources.items()}

    def location(self, job_id: str) -> str:
        return str(self.sources["work"])

    def manifest(self, job_id: str) -> dict[str, Any] | None:
        files = []
        for prefix, root in self.sources.items():
            for rel, kind, _ in _walk(root):
                if kind == "f":
                    try:
                        st = os.stat(root / rel)
                    except FileNotFoundError:
                        continue  # deleted while listed
                    files.append({"path": f"{prefix}/{rel}", "size": st.st_size, "mtime": st.st_mtime,
                                  "sha256": None})
        return {"job": job_id, "live": True, "files": files, "links": [], "bytes": sum(f["size"] for f in files)}

    def open(self, job_id: str, rel: str) -> BinaryIO:
        for prefix, root in self.sources.items():
            if rel.startswith(prefix + "/"):
                inner = rel[len(prefix) + 1:]
                if prefix != "work" and _left_out(inner):  # what results never hold, the live view does not serve
                    break
                return open_confined(root, inner)
        raise NotFound(f"{rel!r} is not in the job's work folder or run directories")

    def put(self, job_id: str, sources: dict[str, Path]) -> dict[str, Any]:
        raise InfrastructureError("the live work folder is read-only here")


def results_store(home: Path) -> ResultsStore:
    """The configured results store (the local folder, until an object store is configured)."""
    return LocalResultsStore(home)


def files_of(home: Path, job: Job) -> ResultsStore:
    """Where a job's files are read from: its stored results once it has them, the live folders before."""
    store = results_store(home)
    if job.state is JobState.TERMINATED or store.manifest(job.id) is not None:
        return store
    return LiveFiles(result_sources(JobPaths.for_job(home, job.id)))


def result_sources(paths: JobPaths) -> dict[str, Path]:
    """What a job's results hold, by name: the work folder and every run directory."""
    sources: dict[str, Path] = {"work": paths.work}
    if paths.runs.is_dir():
        for run in sorted(d.name for d in os.scandir(paths.runs) if d.is_dir(follow_symlinks=False)):
            sources[f"runs/{run}"] = paths.run(run).root
    return sources


def store_results(ctx: ServiceContext) -> dict[str, Any]:
    """After the final sync: store the work folder and every run directory; a summary for the job record."""
    store = results_store(ctx.settings.root)
    manifest = store.put(ctx.job_id, result_sources(ctx.paths))
    return {"location": store.location(ctx.job_id), "files": len(manifest["files"]), "bytes": manifest["bytes"]}


def download(store: ResultsStore, job_id: str, path: str | None, to: Path) -> list[str]:
    """Copy stored files under `path` (a file or folder; all when None) into `to`, the way `cp -r` names them,
    checking each file's sha256 against the manifest. The files written (relative to `to`)."""
    manifest = store.manifest(job_id)
    if manifest is None:
        raise NotFound(f"job {job_id} has no stored results yet (they are stored when it terminates)")
    prefix = check_rel(path.strip("/")) if path and path.strip("/") else ""
    base = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    chosen = [f for f in manifest["files"] if not prefix or f["path"] == prefix or f["path"].startswith(prefix + "/")]
    if not chosen:
        raise NotFound(f"no stored file or folder {path!r} in the results of job {job_id}")
    written = []
    for entry in chosen:
        rel = check_rel(entry["path"][len(base):])
        dest = confined(to, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(temp_name(dest.name))
        digest = hashlib.sha256()
        try:
            with store.open(job_id, check_rel(entry["path"])) as fin, open(tmp, "wb") as fout:
                while block := fin.read(CHUNK):
                    digest.update(block)
                    fout.write(block)
            if entry.get("sha256") and digest.hexdigest() != entry["sha256"]:
                raise InfrastructureError(f"stored file {entry['path']!r} of job {job_id} does not match its "
                                          "checksum: the results store is damaged")
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        written.append(rel)
    return written
