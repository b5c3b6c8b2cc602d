"""The ssh backend: real nodes from a static inventory, driven over kept paramiko connections."""

from __future__ import annotations

import shlex
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import paramiko

from orchestrator.cluster.base import ClusterBackend, Node, NodeUnreachable
from orchestrator.cluster.inventory import ComputeNode, Inventory, load_inventory
from orchestrator.cluster.sshconn import Completed, Connection, connection
from orchestrator.cluster.transfer import pull_tree, push_tree
from orchestrator.model.errors import BackendError, InfrastructureError
from orchestrator.model.identity import Account
from orchestrator.model.settings import Settings

PROBE_TIMEOUT = 5.0


def q(*argv: str | Path | int) -> str:
    """One shell-quoted command line from an argument list (the only way commands are built here)."""
    return shlex.join(str(a) for a in argv)


class SSHBackend(ClusterBackend):
    """Compute nodes listed in the inventory ($E2E_INVENTORY); each process keeps one connection per node."""

    name = "ssh"

    def __init__(self, settings: Settings) -> None:
        if settings.inventory is None:
            raise InfrastructureError("the ssh backend needs an inventory file: set E2E_INVENTORY to its path")
        self.config: Inventory = load_inventory(settings.inventory)

    # -- nodes
    def inventory(self) -> list[Node]:
        return [Node(n.name, n.address, n.cores, n.scratch) for n in self.config.nodes]

    def spec(self, node: Node | str) -> ComputeNode:
        name = node if isinstance(node, str) else node.name
        try:
            return self.config.node(name)
        except KeyError:
            raise BackendError(f"node {name} is not in the inventory") from None

    def conn(self, node: Node | str) -> Connection:
        return connection(self.spec(node), self.config)

    def run(self, node: Node | str, argv: list[str | Path | int], timeout: float | None = None,
            check: bool = True) -> Completed:
        """Run argv on the node (quoted); with check, a non-zero exit raises BackendError with its stderr."""
        done = self.conn(node).run(q(*argv), timeout)
        if check and done.returncode != 0:
            raise BackendError(f"{argv[0]} failed on node {self.spec(node).name} (exit {done.returncode}): "
                               f"{done.stderr.decode(errors='replace').strip()[-500:]}")
        return done

    def probe(self, node: Node | str, timeout: float = PROBE_TIMEOUT) -> str | None:
        """None when the node answers a command within timeout, else why not (for node-fault detection)."""
        try:
            self.conn(node).run("cat /proc/loadavg", timeout)
            return None
        except BackendError as exc:
            return exc.message

    def load(self, node: Node | str, timeout: float = PROBE_TIMEOUT) -> tuple[float, float, float]:
        """The node's 1, 5 and 15 minute load averages from /proc/loadavg."""
        text = self.conn(node).run("cat /proc/loadavg", timeout).stdout.decode()
        one, five, fifteen = (float(x) for x in text.split()[:3])
        return one, five, fifteen

    def prepare_node(self, node: Node, job_id: str, account: Account | None = None) -> None:
        self.run(node, ["mkdir", "-p", "--", node.root / "jobs" / job_id])

    # -- processes
    def spawn_detached(self, node: Node, argv: list[str], cwd: Path, account: Account | None = None) -> None:
        # setsid --fork puts the program in its own session (its pid is the process group) re-parented to
        # init, so it outlives this ssh channel; with its output detached the channel closes at once.
        command = f"cd {q(cwd)} && exec setsid --fork {q(*argv)} </dev/null >/dev/null 2>&1"
        done = self.conn(node).run(command)
        if done.returncode != 0:
            raise BackendError(f"could not start {argv[0]} on node {node.name} (exit {done.returncode}): "
                               f"{done.stderr.decode(errors='replace').strip()[-500:]}")

    def group_alive(self, node: Node, pgid: int) -> bool:
        return bool(self.group_members(node, pgid))

    def group_members(self, node: Node, pgid: int) -> list[int]:
        """Live (non-zombie) members of a process group on the node, from its /proc/<pid>/stat files."""
        done = self.conn(node).run("cat /proc/[0-9]*/stat 2>/dev/null; true")
        return [pid for pid, state, group in parse_stat(done.stdout) if group == pgid and state != "Z"]

    def signal_group(self, node: Node, pgid: int, signum: int, account: Account | None = None) -> bool:
        if int(pgid) <= 1:
            raise BackendError(f"refusing to signal process group {pgid}")
        done = self.conn(node).run(f"kill -{int(signum)} -- -{int(pgid)}")
        if done.returncode == 0:
            return True
        message = done.stderr.decode(errors="replace").strip()
        if "No such process" in message or not message:
            return False
        raise BackendError(f"cannot signal process group {pgid} on node {node.name}: {message}")

    def tagged_processes(self, node: Node, tag: str) -> list[int]:
        done = self.conn(node).run(_find_tagged(tag) + ' echo "$p"; done')
        return [int(line) for line in done.stdout.split() if line.isdigit()]

    def signal_tagged(self, node: Node, tag: str, signum: int, account: Account | None = None) -> int:
        done = self.conn(node).run(_find_tagged(tag) + f' kill -{int(signum)} "$p" 2>/dev/null && echo "$p"; done')
        return len([line for line in done.stdout.split() if line.isdigit()])

    # -- files (SFTP on the kept connection)
    def _sftp(self, node: Node):
        return self.conn(node).sftp()

    def _file_error(self, node: Node, path: Path, exc: Exception) -> BackendError:
        if not isinstance(exc, OSError) or isinstance(exc, TimeoutError) or exc.errno is None:
            self.conn(node).sftp_failed()
            return NodeUnreachable(f"node {node.name}: file access to {path} failed: {exc or type(exc).__name__}")
        return BackendError(f"node {node.name}: {path}: {exc.strerror or exc}")

    def read_bytes(self, node: Node, path: Path, offset: int = 0, limit: int | None = None) -> bytes | None:
        try:
            with self._sftp(node).open(str(path), "rb") as fh:
                if offset:
                    fh.seek(offset)
                if limit is None:
                    fh.prefetch()
                return fh.read(limit)
        except FileNotFoundError:
            return None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._file_error(node, path, exc) from None

    def write_bytes(self, node: Node, path: Path, data: bytes) -> None:
        self._write(node, path, data)

    def _write(self, node: Node, path: Path, data: bytes, private: bool = False) -> None:
        tmp = str(PurePosixPath(path).with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.e2e-tmp"))
        try:
            sftp = self._sftp(node)
            with sftp.open(tmp, "wb") as fh:
                if private:
                    fh.chmod(0o600)
                fh.set_pipelined(True)
                fh.write(data)
            sftp.posix_rename(tmp, str(path))  # atomic on the node: readers see the old or the new file
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._file_error(node, path, exc) from None

    def exists(self, node: Node, path: Path) -> bool:
        try:
            self._sftp(node).stat(str(path))
            return True
        except FileNotFoundError:
            return False
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._file_error(node, path, exc) from None

    def write_private(self, node: Node, path: Path, data: bytes) -> None:
        """write_bytes for secrets: the file is mode 0600 before a byte of data is in it."""
        self._write(node, path, data, private=True)

    # -- what a desktop needs on a real head node (orchestrator/desktop/nodes.py names these hooks)
    def make_dirs(self, node: Node, path: Path, mode: int = 0o700) -> None:
        """mkdir -p; the mode applies to the last directory when it is created (an existing one keeps its own)."""
        self.run(node, ["mkdir", "-p", "-m", f"{mode:o}", "--", path])

    def home_dir(self, node: Node) -> Path:
        """The login user's home on the node (where sshd looks for authorized_keys)."""
        home = self.run(node, ["sh", "-c", 'printf %s "$HOME"']).stdout.decode().strip()
        if not home.startswith("/"):
            raise BackendError(f"node {node.name}: user {self.spec(node).user} has no home directory ({home!r})")
        return Path(home)

    def open_tcp(self, node: Node, port: int, timeout: float = 5.0):
        """A stream to 127.0.0.1:port on the node through the kept ssh connection (a direct-tcpip channel)."""
        return self.conn(node).open_tcp(port, timeout)

    def ssh_endpoint(self, node: Node) -> tuple[str, str, int]:
        spec = self.spec(node)
        return spec.user, spec.address, spec.port

    def apply_firewall(self, node: Node, path: Path) -> None:
        """Load an nftables file on the node (as root, or through passwordless sudo for another login user)."""
        self.run(node, ["nft", "-f", path] if self.spec(node).user == "root" else ["sudo", "-n", "nft", "-f", path])

    # -- moving directories between the head node and nodes
    def collect(self, node: Node, src: Path, dest: Path) -> None:
        if self.spec(node).shared_storage:
            if Path(src).resolve() != Path(dest).resolve():
                shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
            return
        pull_tree(self, node, src, dest)

    def shares_storage(self, node: Node) -> bool:
        return self.spec(node).shared_storage

    def stage_in(self, nodes: list[Node], path: Path) -> None:
        for node in nodes:
            if not self.shares_storage(node):
                push_tree(self, node, path, path)

    def stage_out(self, nodes: list[Node], path: Path) -> None:
        for node in nodes:
            if not self.shares_storage(node):
                pull_tree(self, node, path, path)


def _find_tagged(tag: str) -> str:
    """Shell loop header over the pids whose environment holds exactly E2E_RUN_TAG=tag (zombies have none)."""
    needle = q(f"E2E_RUN_TAG={tag}")
    return (f"for f in $(grep -lzxF -e {needle} /proc/[0-9]*/environ 2>/dev/null); do "
            'p=${f#/proc/}; p=${p%/environ};')


def parse_stat(data: bytes) -> list[tuple[int, str, int]]:
    """(pid, state, process group) of each /proc/<pid>/stat line; comm may hold spaces and parentheses."""
    found = []
    for line in data.decode(errors="replace").splitlines():
        close = line.rfind(")")
        fields = line[close + 2:].split()
        try:
            found.append((int(line.split(" ", 1)[0]), fields[0], int(fields[2])))
        except (ValueError, IndexError):
            continue
    return found


def node_faults(backend: ClusterBackend, nodes: list[Node], timeout: float = PROBE_TIMEOUT) -> dict[str, str]:
    """Which of the nodes do not answer, and why (empty for backends without remote nodes)."""
    probe = getattr(backend, "probe", None)
    if probe is None or not nodes:
        return {}
    # In parallel: a dead node costs one timeout, not one per node.
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        reasons = list(pool.map(lambda n: probe(n, timeout), nodes))
    return {node.name: reason for node, reason in zip(nodes, reasons, strict=False) if reason}
