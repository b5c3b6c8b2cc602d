"""The embedded default backend: N virtual nodes on this machine sharing its filesystem."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account
from orchestrator.model.settings import Settings


class LocalBackend(ClusterBackend):
    """Virtual nodes node-01..node-NN, each with its own directory under $E2E_HOME/nodes, all on localhost."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self._root = settings.root / "nodes"
        self._nodes = [
            Node(f"node-{i:02d}", "localhost", settings.local_cores_per_node, self._root / f"node-{i:02d}")
            for i in range(1, settings.local_nodes + 1)
        ]

    def inventory(self) -> list[Node]:
        return list(self._nodes)

    def prepare_node(self, node: Node, job_id: str, account: Account | None = None) -> None:
        (node.root / "jobs" / job_id).mkdir(parents=True, exist_ok=True)

    def spawn_detached(self, node: Node, argv: list[str], cwd: Path, account: Account | None = None) -> None:
        # setsid --fork: the direct child exits at once (reaped here), the program runs in a new session
        # re-parented to init, so it survives this worker and leaves no zombie behind. env --default-signal:
        # a Celery pool process ignores SIGTERM, and an ignored signal is inherited and cannot even be
        # trapped by the solver's shell, so a stop request would go unheard.
        try:
            subprocess.run(
                ["env", "--default-signal", "setsid", "--fork", *argv], cwd=cwd, check=True, timeout=30,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise BackendError(f"could not start {argv[0]} on {node.name}: {exc}") from exc

    def group_alive(self, node: Node, pgid: int) -> bool:
        return bool(group_members(pgid))

    def signal_group(self, node: Node, pgid: int, signum: int, account: Account | None = None) -> bool:
        if pgid <= 1:
            raise BackendError(f"refusing to signal process group {pgid}")
        try:
            os.killpg(pgid, signum)
            return True
        except ProcessLookupError:
            return False
        except PermissionError as exc:
            raise BackendError(f"no permission to signal process group {pgid} on {node.name}") from exc

    def tagged_processes(self, node: Node, tag: str) -> list[int]:
        return tagged_processes(tag)

    def signal_tagged(self, node: Node, tag: str, signum: int, account: Account | None = None) -> int:
        sent = 0
        for pid in tagged_processes(tag):
            try:
                os.kill(pid, signum)
                sent += 1
            except ProcessLookupError:
                pass
        return sent

    def read_bytes(self, node: Node, path: Path, offset: int = 0, limit: int | None = None) -> bytes | None:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read(-1 if limit is None else limit)
        except FileNotFoundError:
            return None

    def write_bytes(self, node: Node, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.e2e-tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a symlink planted at the temp name (run directories are the solver's) goes, unfollowed
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def exists(self, node: Node, path: Path) -> bool:
        return path.exists()

    def collect(self, node: Node, src: Path, dest: Path) -> None:
        if src.resolve() == dest.resolve():
            return
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after "(comm)": state ppid pgrp ...; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def process_states(pids: list[int]) -> set[str]:
    """The state letters (R, S, T, Z, ...) of the processes that still exist among pids."""
    return {fields[0] for fields in map(_stat_fields, pids) if fields}


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc: a zombie answers kill(0) but runs nothing."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields and len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment holds E2E_RUN_TAG=tag (read from /proc/<pid>/environ)."""
    needle = f"E2E_RUN_TAG={tag}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if needle in env and (fields := _stat_fields(entry.name)) and fields[0] != "Z":
            found.append(int(entry.name))
    return found
