"""The embedded default backend: N virtual nodes on this machine sharing its filesystem."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.cluster.identity import as_account
from orchestrator.cluster.owned import (
    check_reachable,
    checks_owner,
    hand_over_tree,
    make_dirs_confined,
    read_confined,
    tagged_processes,
    traverse_only,
    uid_of,
    write_confined,
)
from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account
from orchestrator.model.settings import Settings


class LocalBackend(ClusterBackend):
    """Virtual nodes node-01..node-NN, each with its own directory under $E2E_HOME/nodes, all on localhost."""

    name = "local"
    watchable_here = True

    def __init__(self, settings: Settings) -> None:
        self._state = settings.root
        self._root = settings.root / "nodes"
        self._job_path = settings.job_path
        self._nodes, self._names, self._by_name = _virtual_nodes(self._root, settings.local_nodes,
                                                                 settings.local_cores_per_node)

    def inventory(self) -> list[Node]:
        return list(self._nodes)

    # (the engine looks a job's nodes up on every step: with thousands of virtual nodes, rebuilding a name map
    # per look cost more than the look; the nodes never change for a configuration, so neither do these)
    def inventory_names(self) -> tuple[str, ...]:
        return self._names

    def nodes_named(self, names: list[str]) -> list[Node]:
        return [self._by_name[name] for name in names if name in self._by_name]

    def prepare_node(self, node: Node, job_id: str, account: Account | None = None) -> None:
        jobs = node.root / "jobs"
        job_dir = jobs / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        # Every engine folder on the way lets accounts pass (0711) but not list; the job's own is theirs, 0700.
        for folder in (self._state, self._root, node.root, jobs):
            traverse_only(folder)
        os.chmod(job_dir, 0o700, follow_symlinks=False)
        check_reachable(account, job_dir)
        hand_over_tree(job_dir, account, self._state)

    def spawn_detached(self, node: Node, argv: list[str], cwd: Path, account: Account | None = None) -> None:
        # setsid --fork: the direct child exits at once (reaped here), the program runs in a new session
        # re-parented to init, so it survives this worker and leaves no zombie behind. env -i --default-signal:
        # a clean environment (no engine variable reaches a job), and the signals a Celery pool process
        # ignores (SIGTERM) back at their defaults, or the solver's shell could not even trap a stop request.
        # A root engine drops to the owner's uid, gid and groups (as_account: setpriv).
        extra = {"PATH": self._job_path} if self._job_path else None
        command = ["setsid", "--fork", *as_account(account, argv, extra, default_signals=True)]
        try:
            subprocess.run(command, cwd=cwd, check=True, timeout=30, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except (OSError, subprocess.SubprocessError) as exc:
            raise BackendError(f"could not start {argv[0]} on {node.name}: {exc}") from exc

    def group_alive(self, node: Node, pgid: int) -> bool:
        return group_alive(pgid)

    def signal_group(self, node: Node, pgid: int, signum: int, account: Account | None = None) -> bool:
        if pgid <= 1:
            raise BackendError(f"refusing to signal process group {pgid}")
        if checks_owner(account):
            return _signal_owned_group(node, pgid, signum, account.uid)  # type: ignore[union-attr]
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
        for pid in tagged_processes(tag, account.uid if checks_owner(account) else None):  # type: ignore[union-attr]
            try:
                os.kill(pid, signum)
                sent += 1
            except ProcessLookupError:
                pass
        return sent

    def hand_over(self, node: Node, path: Path, account: Account | None = None) -> None:
        hand_over_tree(path, account, self._state)

    def read_bytes(self, node: Node, path: Path, offset: int = 0, limit: int | None = None) -> bytes | None:
        return read_confined(self._state, path, offset, limit)

    def write_bytes(self, node: Node, path: Path, data: bytes) -> None:
        write_confined(self._state, path, data, 0o644)

    def make_dirs(self, node: Node, path: Path, mode: int = 0o700) -> None:
        make_dirs_confined(self._state, path, mode)

    def write_private(self, node: Node, path: Path, data: bytes) -> None:
        """A secret (the VNC password): 0600 from the start, the job's own when it lies in the job's tree."""
        write_confined(self._state, path, data, 0o600)

    def exists(self, node: Node, path: Path) -> bool:
        return path.exists()

    def collect(self, node: Node, src: Path, dest: Path) -> None:
        if src.resolve() == dest.resolve():
            return
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)


def _signal_owned_group(node: Node, pgid: int, signum: int, uid: int) -> bool:
    """Signal a job's process group only when it is the job account's: a pid file is the job's to write, so a
    forged one naming the engine's or another user's group gets nobody signalled. The whole group at once
    (killpg: a child forked meanwhile is not missed) when every member is the account's; otherwise (a group
    mixing owners cannot be one the job made) only the account's own members, one by one. A group with no
    process at all (a run that has ended, what a terminate mostly meets) is known without the scan of /proc,
    which costs ~1 ms per thousand processes on the machine."""
    if _surely_empty(pgid):
        return False
    members = group_members(pgid)
    mine = [pid for pid in members if uid_of(pid) == uid]
    if not mine:
        return False
    if len(mine) == len(members):
        try:
            os.killpg(pgid, signum)
            return True
        except ProcessLookupError:
            return False
    for pid in mine:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    return True


@lru_cache(maxsize=8)
def _virtual_nodes(root: Path, count: int, cores: int) -> tuple[tuple[Node, ...], tuple[str, ...], dict[str, Node]]:
    """The virtual nodes, their names and a name -> node map, made once per configuration: the engine builds a
    backend per job it looks at, and thousands of Path objects per pass added up (nodes are immutable)."""
    nodes = tuple(Node(f"node-{i:02d}", "localhost", cores, root / f"node-{i:02d}") for i in range(1, count + 1))
    return nodes, tuple(n.name for n in nodes), {n.name: n for n in nodes}


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


def group_alive(pgid: int) -> bool:
    """Whether a process group has a live (non-zombie) member. O(1) while its leader runs (a run's wrapper, a
    desktop session, a sync process lead their groups for their whole life): the reconcile pass asks this of
    every running job, and a scan of /proc per job made the pass grow with the square of the jobs. The scan
    is left for a group whose leader has ended while other members may still run."""
    if pgid <= 0 or _surely_empty(pgid):
        return False
    leader = _stat_fields(pgid)
    if leader and len(leader) > 2 and leader[0] != "Z" and int(leader[2]) == pgid:
        return True
    return bool(group_members(pgid))


def _surely_empty(pgid: int) -> bool:
    """The group has no process at all, zombies included (one syscall); False when it may have one (a non-root
    engine cannot tell for another user's group: the caller's scan of /proc decides)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


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
