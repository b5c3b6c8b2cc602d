"""The slurm backend: each job's nodes come from a Slurm allocation; its runs are job steps inside it.

The allocation is a holder batch job (`sbatch -N <nodes> --ntasks-per-node <cores>` running a sleep) named
e2e-<job id>; runs start in it as steps (`srun --jobid --overlap`), so `scontrol suspend/resume` freezes and
thaws everything of the job, `scancel` ends it, and squeue/scontrol report its state. Process queries and
signals on a node are short steps in the allocation too. Files are read on the head node: a Slurm cluster's
nodes share the engine's state directory (shared storage is required).

Jobs run as their owner: the engine (root) submits the holder with `sbatch --uid --gid`, so the allocation is
the owner's (squeue shows them, `scancel --user` scopes to them). Slurm 22.05's srun has no --uid and refuses
root a step in another user's job, so every step (the run, and the short steps behind process lookups and
signals) is started by srun running as the allocation's owner (the same setpriv drop and clean environment as
cluster/identity.as_account): its processes, and every signal they send, are the owner's. The record of which
Slurm job holds an engine job's allocation lives in the engine's own directory, never in the job's (a job could
otherwise point root's scontrol/scancel at another user's allocation).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from orchestrator.cluster.base import AllocationPending, ClusterBackend, Node
from orchestrator.cluster.identity import as_account, lookup
from orchestrator.cluster.local import LocalBackend
from orchestrator.cluster.owned import hand_over_tree
from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account
from orchestrator.model.settings import Settings

SLURM_TIMEOUT = 30.0        # seconds any Slurm client command may take
HOLD = "exec sleep 2147483647"
_JOB_ID = re.compile(r"^\d+(?:_\d+)?$")


class NoAllocation(BackendError):
    """The job (or node) has no Slurm allocation: never made, or already ended."""


def parse_start(text: str) -> float | None:
    """squeue's %S (2026-12-07T05:00:00, local time) as epoch seconds; None for N/A, Unknown or nothing."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def job_name(job_id: str) -> str:
    return f"e2e-{job_id}"


class SlurmBackend(ClusterBackend):
    """Nodes of a Slurm partition; allocation, steps, suspend/resume and cancel through the Slurm CLI."""

    name = "slurm"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.partition = settings.slurm_partition
        self._files = LocalBackend(settings)  # shared storage: files are the head node's own
        self._owners: dict[str, int] = {}      # Slurm job id -> the uid it runs as (never changes)

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
        # A node's address is its NodeName: inside an allocation that is how Slurm, srun and MPI (whose
        # hostfile may only name nodes of the allocation) know it; its NodeAddr is slurmd's business.
        argv = ["sinfo", "--noheader", "--Node", "--format=%N|%c"]
        if self.partition:
            argv.append(f"--partition={self.partition}")
        nodes: dict[str, Node] = {}
        for line in self.slurm(*argv).stdout.splitlines():
            name, cores = (line.split("|") + [""])[:2]
            if name and name not in nodes and cores.strip().isdigit():
                nodes[name] = Node(name, name, int(cores), self.settings.root / "nodes" / name)
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
        job_dir = node.root / "jobs" / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        if account is not None and account.uid != os.geteuid():
            # jobs/ stays the engine's (0711: reach your own directory, list no other), so the job directory
            # cannot be swapped for a link before these calls.
            job_dir.parent.chmod(0o711)
            os.chown(job_dir, account.uid, account.gid, follow_symlinks=False)
            job_dir.chmod(0o700)

    def hand_over(self, node: Node, path: Path, account: Account | None = None) -> None:
        if account is not None and account.uid != os.geteuid():
            hand_over_tree(Path(path), account)  # shared storage: the nodes' copy is this one

    # -- the job's allocation
    def _record(self, job_id: str) -> Path:
        # The engine's directory, not the job's own (which the job's account owns and could rewrite).
        return self.settings.root / "slurm" / job_id

    def _recorded(self, job_id: str) -> tuple[str, int | None] | None:
        """(Slurm job id, owner uid) from the engine's record."""
        try:
            words = self._record(job_id).read_text().split()
        except OSError:
            return None
        if not words or not _JOB_ID.match(words[0]):
            return None
        return words[0], (int(words[1]) if len(words) > 1 and words[1].isdigit() else None)

    def allocation_id(self, job_id: str) -> str | None:
        """The Slurm job holding the allocation of an engine job (from its record, else by name)."""
        recorded = self._recorded(job_id)
        if recorded is not None:
            return recorded[0]
        found = self.slurm("squeue", "--noheader", f"--name={job_name(job_id)}", "--format=%i").stdout.split()
        return found[0] if found else None

    def allocate(self, job_id: str, nodes: list[Node], cores_per_node: int, account: Account | None = None,
                 timeout: float | None = None) -> str:
        """Ask Slurm for exactly these nodes (idempotent) and wait until the allocation runs; its job id.
        With an account the allocation is the account's (sbatch --uid/--gid, as root)."""
        slurm_id = self.allocation_id(job_id)
        fresh = slurm_id is None
        if slurm_id is None:
            record = self._record(job_id)
            record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            argv = ["sbatch", "--parsable", f"--job-name={job_name(job_id)}", f"--nodes={len(nodes)}",
                    f"--nodelist={','.join(n.name for n in nodes)}", f"--ntasks-per-node={cores_per_node}",
                    f"--wrap={HOLD}"]
            owner = os.geteuid()
            if account is not None and account.uid != owner:
                # the holder writes nothing; its output file would be opened as the account
                argv += [f"--uid={account.uid}", f"--gid={account.gid}", "--chdir=/", "--output=/dev/null"]
                owner = account.uid
            else:
                argv.append(f"--output={record.parent / (job_name(job_id) + '-%j.out')}")
            if self.partition:
                argv.append(f"--partition={self.partition}")
            slurm_id = self.slurm(*argv).stdout.strip().split(";")[0]
            if not _JOB_ID.match(slurm_id):
                raise BackendError(f"sbatch answered {slurm_id!r} instead of a job id")
            record.write_text(f"{slurm_id} {owner}\n")
            self._owners[slurm_id] = owner
        # A fresh allocation gets the launch timeout to start; one Slurm has pending already is asked once (a
        # worker never sits out a busy cluster: the engine asks again on its next pass).
        deadline = time.monotonic() + ((timeout or self.settings.launch_timeout) if fresh else 0.0)
        while (state := self.allocation_state(job_id)) != "RUNNING":
            if state not in ("PENDING", "CONFIGURING", None) or state is None and not fresh:
                raise BackendError(f"Slurm allocation {slurm_id} of job {job_id} is {state or 'unknown to Slurm'}, "
                                   "not RUNNING")
            if time.monotonic() > deadline:   # Slurm queued it (or boots its nodes): later, not never
                expected = self.expected_start(job_id) if state == "PENDING" else None
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(expected)) if expected else "not estimated yet"
                raise AllocationPending(f"Slurm allocation {slurm_id} of job {job_id} is {state or 'not shown yet'} "
                                        f"(expected start: {when})", expected)
            time.sleep(0.1)
        return slurm_id

    def expected_start(self, job_id: str) -> float | None:
        """When Slurm expects a pending allocation to start (`squeue --start`); None when it gives no time."""
        slurm_id = self.allocation_id(job_id)
        if slurm_id is None:
            return None
        shown = self.slurm("squeue", "--noheader", "--start", f"--jobs={slurm_id}", "--format=%S",
                           check=False).stdout.strip()
        return parse_start(shown)

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
        """End the allocation and everything in it (terminate); a no-op once it is gone. Scoped to the owner
        the allocation was made for, so nothing but that user's job can be cancelled by it."""
        slurm_id = self.allocation_id(job_id)
        if slurm_id is None:
            return
        recorded = self._recorded(job_id)
        owner = recorded[1] if recorded is not None else None
        self.slurm("scancel", *([f"--user={_user_name(owner)}"] if owner is not None else []), slurm_id, check=False)

    def owner(self, slurm_id: str) -> int | None:
        """The uid the Slurm job runs as (squeue %U); None once Slurm no longer lists it."""
        if slurm_id not in self._owners:
            shown = self.slurm("squeue", "--noheader", f"--jobs={slurm_id}", "--format=%U", check=False).stdout
            if not shown.strip().isdigit():
                return None
            self._owners[slurm_id] = int(shown.strip())
        return self._owners[slurm_id]

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

    def _whole_allocation(self, slurm_id: str) -> list[str]:
        """`env` settings that show the run (a one-task step on the first node) the whole allocation, as a
        batch script sees it: mpirun inside it then places ranks on every node of the job and starts its
        daemons there with srun (which would otherwise see only the step's one node)."""
        shown = self.slurm("squeue", "--noheader", f"--jobs={slurm_id}", "--format=%N|%D|%C").stdout.strip()
        nodelist, count, cpus = (shown.split("|") + ["", ""])[:3]
        if not (nodelist and count.isdigit() and cpus.isdigit()):
            raise NoAllocation(f"Slurm job {slurm_id} shows no nodes ({shown!r})")
        per_node = max(1, int(cpus) // max(1, int(count)))
        return ["env", f"SLURM_JOB_NODELIST={nodelist}", f"SLURM_NODELIST={nodelist}", f"SLURM_NNODES={count}",
                f"SLURM_JOB_NUM_NODES={count}", f"SLURM_TASKS_PER_NODE={per_node}(x{count})"]

    def as_owner(self, slurm_id: str, argv: list[str], account: Account | None = None) -> list[str]:
        """An srun command line run as the allocation's owner (root may not step into another user's job);
        with an account, refused unless the allocation is that account's."""
        owner = self.owner(slurm_id)
        if account is not None and owner is not None and owner != account.uid:
            raise BackendError(f"Slurm job {slurm_id} belongs to uid {owner}, not to {account.name}: refused")
        if owner is None or owner == os.geteuid():
            return argv
        passed = {k: os.environ[k] for k in ("SLURM_CONF",) if k in os.environ}  # which cluster, nothing else
        return as_account(lookup(_user_name(owner)), argv, passed)

    def on_node(self, node: Node, script: str, account: Account | None = None) -> subprocess.CompletedProcess:
        """Run a shell snippet on the node as a short step of its allocation, as the allocation's owner."""
        slurm_id = self._allocation_on(node)
        step = self.as_owner(slurm_id, [*self._step(node, slurm_id), "sh", "-c", script], account)
        return self.slurm(*step, check=False)

    # -- processes
    def spawn_detached(self, node: Node, argv: list[str], cwd: Path, account: Account | None = None) -> None:
        # The srun client on the head node keeps the step alive: it gets its own session so it outlives
        # the worker; the task itself is a process-group leader on the node (slurmstepd makes it one).
        slurm_id = self._allocation_on(node, cwd)
        step = [*self._step(node, slurm_id), f"--chdir={cwd}", "--output=/dev/null", "--error=/dev/null",
                *self._whole_allocation(slurm_id), *argv]
        step = self.as_owner(slurm_id, step, account)
        try:  # srun's own messages (it lives on after this call) go to a file, never to a pipe we would wait on
            # The directory is the job's: never follow a link it put there.
            fd = os.open(Path(cwd) / ".srun.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "ab") as log:
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

        stat = ["sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null; true"]  # world-readable: any owner sees all
        done = self.slurm(*self.as_owner(slurm_id, [*self._step(node, slurm_id), *stat]))
        return any(group == pgid and st != "Z" for _, st, group in parse_stat(done.stdout.encode()))

    def signal_group(self, node: Node, pgid: int, signum: int, account: Account | None = None) -> bool:
        if int(pgid) <= 1:
            raise BackendError(f"refusing to signal process group {pgid}")
        # the step runs as the allocation's owner: the kernel refuses a group of another uid (EPERM)
        done = self.on_node(node, f"env kill -{int(signum)} -- -{int(pgid)}", account)
        if done.returncode == 0:
            return True
        if "not permitted" in done.stderr:
            raise BackendError(f"cannot signal process group {pgid} on node {node.name}: {done.stderr.strip()[-300:]}")
        return False

    def tagged_processes(self, node: Node, tag: str, account: Account | None = None) -> list[int]:
        from orchestrator.cluster.ssh import _find_tagged

        uid = None if account is None else account.uid
        done = self.on_node(node, _find_tagged(tag, uid) + ' echo "$p"; done', account)
        return [int(x) for x in done.stdout.split() if x.isdigit()]

    def signal_tagged(self, node: Node, tag: str, signum: int, account: Account | None = None) -> int:
        from orchestrator.cluster.ssh import _find_tagged

        uid = None if account is None else account.uid
        done = self.on_node(node, _find_tagged(tag, uid) + f' kill -{int(signum)} "$p" 2>/dev/null && echo "$p"; done',
                            account)
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


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
