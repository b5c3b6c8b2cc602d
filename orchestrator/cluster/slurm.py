"""The slurm backend: each job's nodes come from a Slurm allocation; its runs are job steps inside it.

The allocation is a holder batch job (`sbatch -N <nodes> --ntasks-per-node <cores>` running a sleep) named
e2e-<job id>; runs start in it as steps (`srun --jobid --overlap`), so `scontrol suspend/resume` freezes and
thaws everything of the job, `scancel` ends it, and squeue/scontrol report its state. Process queries and
signals on a node are short steps in the allocation too. Files are read on the head node: a Slurm cluster's
nodes share the engine's state directory (shared storage is required).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.cluster.local import LocalBackend
from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account
from orchestrator.model.paths import JobPaths
from orchestrator.model.settings import Settings

SLURM_TIMEOUT = 30.0        # seconds any Slurm client command may take
HOLD = "exec sleep 2147483647"
_JOB_ID = re.compile(r"^\d+(?:_\d+)?$")


class NoAllocation(BackendError):
    """The job (or node) has no Slurm allocation: never made, or already ended."""


def job_name(job_id: str) -> str:
    return f"e2e-{job_id}"


class SlurmBackend(ClusterBackend):
    """Nodes of a Slurm partition; allocation, steps, suspend/resume and cancel through the Slurm CLI."""

    name = "slurm"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.partition = settings.slurm_partition
        self._files = LocalBackend(settings)  # shared storage: files are the head node's own

    # -- the Slurm CLI, always with a deadline
    def slurm(self, *argv: str, timeout: float = SLURM_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise BackendError(f"{argv[0]} not found: install the Slurm client (slurm-client)") from None
        except subprocess.TimeoutExpired:
            raise BackendError(f"{argv[0]} did not answer within {timeout:g}s (is slurmctld up?)") from None
        if check and done.returncode != 0:
            raise BackendError(f"{shlex.join(argv[:2])} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        return done

    # -- nodes
    def inventory(self) -> list[Node]:
        argv = ["sinfo", "--noheader", "--Node", "--format=%N|%o|%c"]
        if self.partition:
            argv.append(f"--partition={self.partition}")
        nodes: dict[str, Node] = {}
        for line in self.slurm(*argv).stdout.splitlines():
            name, address, cores = (line.split("|") + ["", ""])[:3]
            if name and name not in nodes and cores.strip().isdigit():
                nodes[name] = Node(name, address or name, int(cores), self.settings.root / "nodes" / name)
        return list(nodes.values())

    def _node_info(self, node: Node | str, fmt: str, timeout: float) -> str:
        name = node if isinstance(node, str) else node.name
        lines = self.slurm("sinfo", "--noheader", "--Node", f"--nodes={name}", f"--format={fmt}",
                           timeout=timeout).stdout.strip().splitlines()
        if not lines:
            raise BackendError(f"Slurm does not know node {name}")
        return lines[0].strip()

    def load(self, node: Node | str, timeout: float = SLURM_TIMEOUT) -> tuple[float, float, float]:
        """The node's CPU load as slurmd reports it (one figure; Slurm keeps no 5/15 minute averages)."""
        value = self._node_info(node, "%O", timeout)
        one = float(value) if value.replace(".", "", 1).isdigit() else 0.0
        return one, one, one

    def probe(self, node: Node | str, timeout: float = SLURM_TIMEOUT) -> str | None:
        """None while Slurm considers the node usable; else its state and reason (down, drained, not responding)."""
        try:
            state, _, reason = self._node_info(node, "%T|%E", timeout).partition("|")
        except (BackendError, IndexError):
            return f"node {getattr(node, 'name', node)} is not known to Slurm"
        if state.endswith("*") or any(word in state for word in ("down", "drain", "fail", "unknown")):
            return f"node {getattr(node, 'name', node)} is {state} in Slurm" + (f": {reason}" if reason else "")
        return None

    def prepare_node(self, node: Node, job_id: str, account: Account | None = None) -> None:
        (node.root / "jobs" / job_id).mkdir(parents=True, exist_ok=True)

    # -- the job's allocation
    def _record(self, job_id: str) -> Path:
        return JobPaths.for_job(self.settings.root, job_id).root / ".slurm-job"

    def allocation_id(self, job_id: str) -> str | None:
        """The Slurm job holding the allocation of an engine job (from its record, else by name)."""
        try:
            recorded = self._record(job_id).read_text().strip()
            if _JOB_ID.match(recorded):
                return recorded
        except OSError:
            pass
        found = self.slurm("squeue", "--noheader", f"--name={job_name(job_id)}", "--format=%i").stdout.split()
        return found[0] if found else None

    def allocate(self, job_id: str, nodes: list[Node], cores_per_node: int, timeout: float | None = None) -> str:
        """Ask Slurm for exactly these nodes (idempotent) and wait until the allocation runs; its job id."""
        slurm_id = self.allocation_id(job_id)
        if slurm_id is None:
            record = self._record(job_id)
            record.parent.mkdir(parents=True, exist_ok=True)
            argv = ["sbatch", "--parsable", f"--job-name={job_name(job_id)}", f"--nodes={len(nodes)}",
                    f"--nodelist={','.join(n.name for n in nodes)}", f"--ntasks-per-node={cores_per_node}",
                    f"--output={record.parent / 'slurm-%j.out'}", f"--wrap={HOLD}"]
            if self.partition:
                argv.append(f"--partition={self.partition}")
            slurm_id = self.slurm(*argv).stdout.strip().split(";")[0]
            if not _JOB_ID.match(slurm_id):
                raise BackendError(f"sbatch answered {slurm_id!r} instead of a job id")
            record.write_text(slurm_id)
        deadline = time.monotonic() + (timeout or self.settings.launch_timeout)
        while (state := self.allocation_state(job_id)) != "RUNNING":
            if state not in ("PENDING", "CONFIGURING", None) or time.monotonic() > deadline:
                raise BackendError(f"Slurm allocation {slurm_id} of job {job_id} is {state or 'unknown'}, not RUNNING")
            time.sleep(0.1)
        return slurm_id

    def allocation_state(self, job_id: str) -> str | None:
        """RUNNING, PENDING, SUSPENDED, CANCELLED, ... from squeue, then scontrol, then sacct; None if unknown."""
        slurm_id = self.allocation_id(job_id)
        if slurm_id is None:
            return None
        state = self.slurm("squeue", "--noheader", f"--jobs={slurm_id}", "--format=%T", check=False).stdout.strip()
        if state:
            return state
        shown = self.slurm("scontrol", "show", "job", slurm_id, check=False).stdout
        if (m := re.search(r"\bJobState=(\w+)", shown)):
            return m.group(1)
        acct = self.slurm("sacct", "--noheader", "-X", f"--jobs={slurm_id}", "--format=State", check=False)
        words = acct.stdout.split() if acct.returncode == 0 else []
        return words[0] if words else None

    def suspend(self, job_id: str) -> bool:
        """Freeze every process of the job on every node (pause --freeze) with `scontrol suspend`."""
        self._control("suspend", job_id)
        return True

    def resume(self, job_id: str) -> bool:
        self._control("resume", job_id)
        return True

    def _control(self, verb: str, job_id: str) -> None:
        slurm_id = self._require(job_id)
        done = self.slurm("scontrol", verb, slurm_id, check=False)
        if done.returncode != 0 and "already" not in done.stderr.lower():
            raise BackendError(f"scontrol {verb} {slurm_id} failed: {done.stderr.strip()[-500:]}")

    def release(self, job_id: str) -> None:
        """End the allocation and everything in it (terminate); a no-op once it is gone."""
        slurm_id = self.allocation_id(job_id)
        if slurm_id is not None:
            self.slurm("scancel", slurm_id, check=False)

    def _require(self, job_id: str) -> str:
        slurm_id = self.allocation_id(job_id)
        if slurm_id is None:
            raise NoAllocation(f"job {job_id} has no Slurm allocation")
        return slurm_id

    def _allocation_on(self, node: Node, cwd: Path | None = None) -> str:
        """The allocation a command on this node belongs to: from the run directory, else the e2e job on it."""
        jobs = self.settings.root / "jobs"
        if cwd is not None and Path(cwd).is_relative_to(jobs):
            return self._require(Path(cwd).relative_to(jobs).parts[0])
        listed = self.slurm("squeue", "--noheader", f"--nodelist={node.name}", "--format=%i|%j").stdout
        for line in listed.splitlines():
            slurm_id, _, name = line.partition("|")
            if name.startswith("e2e-"):
                return slurm_id
        raise NoAllocation(f"node {node.name} holds no e2e Slurm allocation")

    def _step(self, node: Node, slurm_id: str) -> list[str]:
        return ["srun", f"--jobid={slurm_id}", "--overlap", "--nodes=1", "--ntasks=1", f"--nodelist={node.name}",
                "--quiet"]

    def on_node(self, node: Node, script: str) -> subprocess.CompletedProcess:
        """Run a shell snippet on the node as a short step of its allocation."""
        return self.slurm(*self._step(node, self._allocation_on(node)), "sh", "-c", script, check=False)

    # -- processes
    def spawn_detached(self, node: Node, argv: list[str], cwd: Path, account: Account | None = None) -> None:
        # The srun client on the head node keeps the step alive: it gets its own session so it outlives
        # the worker; the task itself is a process-group leader on the node (slurmstepd makes it one).
        slurm_id = self._allocation_on(node, cwd)
        step = [*self._step(node, slurm_id), f"--chdir={cwd}", "--output=/dev/null", "--error=/dev/null", *argv]
        try:  # srun's own messages (it lives on after this call) go to a file, never to a pipe we would wait on
            with open(Path(cwd) / ".srun.log", "ab") as log:
                subprocess.run(["setsid", "--fork", *step], check=True, timeout=SLURM_TIMEOUT,
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        except (OSError, subprocess.SubprocessError) as exc:
            raise BackendError(f"could not start {argv[0]} in Slurm job {slurm_id} on {node.name}: {exc}") from exc

    def group_alive(self, node: Node, pgid: int) -> bool:
        try:
            slurm_id = self._allocation_on(node)
        except NoAllocation:
            return False  # the allocation ended, and with it every process it held
        state = self.slurm("squeue", "--noheader", f"--jobs={slurm_id}", "--format=%T", check=False).stdout.strip()
        if state == "SUSPENDED":
            return True  # frozen: its processes exist (stopped), and no step can start to look at them
        if state != "RUNNING":
            return False
        from orchestrator.cluster.ssh import parse_stat

        done = self.slurm(*self._step(node, slurm_id), "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null; true")
        return any(group == pgid and st != "Z" for _, st, group in parse_stat(done.stdout.encode()))

    def signal_group(self, node: Node, pgid: int, signum: int, account: Account | None = None) -> bool:
        if int(pgid) <= 1:
            raise BackendError(f"refusing to signal process group {pgid}")
        return self.on_node(node, f"kill -{int(signum)} -- -{int(pgid)}").returncode == 0

    def tagged_processes(self, node: Node, tag: str) -> list[int]:
        from orchestrator.cluster.ssh import _find_tagged

        done = self.on_node(node, _find_tagged(tag) + ' echo "$p"; done')
        return [int(x) for x in done.stdout.split() if x.isdigit()]

    def signal_tagged(self, node: Node, tag: str, signum: int, account: Account | None = None) -> int:
        from orchestrator.cluster.ssh import _find_tagged

        done = self.on_node(node, _find_tagged(tag) + f' kill -{int(signum)} "$p" 2>/dev/null && echo "$p"; done')
        return len([x for x in done.stdout.split() if x.isdigit()])

    # -- files: shared storage
    def read_bytes(self, node: Node, path: Path, offset: int = 0, limit: int | None = None) -> bytes | None:
        return self._files.read_bytes(node, path, offset, limit)

    def write_bytes(self, node: Node, path: Path, data: bytes) -> None:
        self._files.write_bytes(node, path, data)

    def exists(self, node: Node, path: Path) -> bool:
        return path.exists()

    def collect(self, node: Node, src: Path, dest: Path) -> None:
        if Path(src).resolve() != Path(dest).resolve():
            shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
