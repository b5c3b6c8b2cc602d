"""The ssh backend: real nodes from a static inventory, driven over kept paramiko connections.

Who runs what on a node. The engine keeps ONE privileged login per node (the inventory's user, root) and drops
to the job owner's account on the node for everything of the job: `setpriv --reuid/--regid/--groups` plus a
clean environment, the very prefix the engine host uses (cluster/identity.as_account). Chosen over a login per
user because it needs no key material of any user on the engine (an engine holding every user's private key is
a master key all the same, and sites with LDAP/SSSD accounts have nowhere to put keys the engine made); one kept
connection per node serves every user; and an account only has to exist on the node, not to accept logins.
What needs root stays in the engine's session (the job's directory made and given to the account, reading
process tables); what touches the job's processes and files runs as the account: its start, its signals and
the lookups behind them (so the kernel refuses a pid of another uid, whatever the job wrote in its pid file),
staging into its directories (rsync's node side), and its own ~/.ssh.
"""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import stat
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import paramiko

from orchestrator.cluster.base import ClusterBackend, Node, NodeUnreachable
from orchestrator.cluster.identity import as_account, job_env
from orchestrator.cluster.inventory import ComputeNode, Inventory, load_inventory
from orchestrator.cluster.owned import hand_over_tree
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

    def run(self, node: Node | str, argv: Sequence[str | Path | int], timeout: float | None = None,
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
        job_dir = node.root / "jobs" / job_id
        if account is None:
            self.run(node, ["mkdir", "-p", "--", job_dir])
            return
        # jobs/ is the engine's and 0711: an account reaches its own job directory but lists no other, and
        # cannot swap its directory for a link (it cannot write jobs/), so chown/chmod here never follow one.
        script = ('mkdir -p -- "$1" && chmod 0711 -- "$1" && mkdir -p -- "$2" && chown -h -- "$3" "$2" '
                  '&& chmod 0700 -- "$2"')
        self.run(node, ["sh", "-c", script, "sh", job_dir.parent, job_dir, f"{account.uid}:{account.gid}"])

    def hand_over(self, node: Node, path: Path, account: Account | None = None) -> None:
        if account is None or not self.needs_drop(node, account):
            return
        # chown -R -h -P: links are changed themselves, never followed, nor descended into when they name a
        # directory; a missing tree (not staged to this node yet) is nothing to give.
        owner = f"{account.uid}:{account.gid}"
        self.run(node, ["sh", "-c", '[ ! -e "$2" ] && [ ! -L "$2" ] || chown -R -h -P -- "$1" "$2"', "sh", owner, path])
        if not self.shares_storage(node):
            hand_over_tree(Path(path), account)  # the head's copy (the engine host's own disk) is the account's too

    def needs_drop(self, node: Node, account: Account) -> bool:
        """Whether the node's login is another account than the job's (so its commands drop to the job's)."""
        return account.name != self.spec(node).user

    def as_job(self, node: Node, account: Account | None, argv: list[str]) -> list[str]:
        """argv run as the job's account on the node with a clean environment (None: as the node login, as is)."""
        if account is None:
            return list(argv)
        if not self.needs_drop(node, account):  # the engine logs in as the job's account (single-user sites)
            return ["env", "-i", *(f"{k}={v}" for k, v in job_env(account).items()), *argv]
        login = self.spec(node).user
        if login != "root":
            raise BackendError(f"node {node.name}: running jobs as {account.name} needs the engine to log in as "
                               f"root (the inventory's user for the node is {login})")
        dropped = as_account(account, list(argv))
        if dropped[0] != "setpriv":  # a single-user engine: it cannot vouch for other accounts
            raise BackendError(f"running jobs as {account.name} needs an engine running as root")
        return dropped

    # -- processes
    def spawn_detached(self, node: Node, argv: list[str], cwd: Path, account: Account | None = None) -> None:
        # setsid --fork puts the program in its own session (its pid is the process group) re-parented to
        # init, so it outlives this ssh channel; with its output detached the channel closes at once. The
        # drop to the account comes after setsid, so the session leader is already the account's process.
        command = f"cd {q(cwd)} && exec setsid --fork {q(*self.as_job(node, account, argv))} </dev/null >/dev/null 2>&1"
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
        # As the account: a group of another uid (a forged pid file) is refused by the kernel (EPERM).
        kill = ["kill", f"-{int(signum)}", "--", f"-{int(pgid)}"]
        done = self.conn(node).run(q(*self.as_job(node, account, kill)))
        if done.returncode == 0:
            return True
        message = done.stderr.decode(errors="replace").strip()
        if "No such process" in message or not message:
            return False
        raise BackendError(f"cannot signal process group {pgid} on node {node.name}: {message}")

    def tagged_processes(self, node: Node, tag: str, account: Account | None = None) -> list[int]:
        done = self.conn(node).run(self._tagged(node, tag, account, 'echo "$p"'))
        return [int(line) for line in done.stdout.split() if line.isdigit()]

    def signal_tagged(self, node: Node, tag: str, signum: int, account: Account | None = None) -> int:
        kill = f'kill -{int(signum)} "$p" 2>/dev/null && echo "$p"'
        done = self.conn(node).run(self._tagged(node, tag, account, kill))
        return len([line for line in done.stdout.split() if line.isdigit()])

    def _tagged(self, node: Node, tag: str, account: Account | None, action: str) -> str:
        """A command running action for each process of the run; with an account the whole loop runs as it, so
        it sees only that uid's processes (another uid's environ is unreadable) and signals nothing else."""
        loop = _find_tagged(tag, None if account is None else account.uid) + f" {action}; done"
        return loop if account is None else q(*self.as_job(node, account, ["sh", "-c", loop]))

    # -- files (SFTP on the kept connection)
    def _sftp(self, node: Node):
        return self.conn(node).sftp()

    def _file_error(self, node: Node, path: Path, exc: Exception) -> BackendError:
        if not isinstance(exc, OSError) or isinstance(exc, TimeoutError) or exc.errno is None:
            self.conn(node).sftp_failed()
            return NodeUnreachable(f"node {node.name}: file access to {path} failed: {exc or type(exc).__name__}")
        return BackendError(f"node {node.name}: {path}: {exc.strerror or exc}")

    def list_files(self, node: Node, root: Path, patterns: tuple[str, ...], limit: int = 200) -> list[str]:
        """The node's regular files under root matching the patterns, walked one glob segment at a time
        over SFTP (lstat: a symlink is neither listed nor entered)."""
        sftp = self._sftp(node)
        found: set[str] = set()
        try:
            for pattern in patterns:
                level = [""]
                segments = PurePosixPath(pattern).parts
                for depth, segment in enumerate(segments):
                    last, nxt = depth == len(segments) - 1, []
                    for rel in level:
                        try:
                            entries = sftp.listdir_attr(str(root / rel) if rel else str(root))
                        except FileNotFoundError:
                            continue
                        for entry in entries:
                            if not fnmatch.fnmatchcase(entry.filename, segment):
                                continue
                            kind = stat.S_IFMT(entry.st_mode or 0)
                            path = f"{rel}/{entry.filename}" if rel else entry.filename
                            if last and kind == stat.S_IFREG:
                                found.add(path)
                            elif not last and kind == stat.S_IFDIR:
                                nxt.append(path)
                    level = nxt[:limit]
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._file_error(node, root, exc) from None
        return sorted(found)[:limit]

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
            folder = sftp.stat(str(PurePosixPath(path).parent))
            with sftp.open(tmp, "wb") as fh:
                if private:
                    fh.chmod(0o600)
                if folder.st_uid:  # a job's tree: the file is its account's, as everything in it (a control file
                    fh.chown(folder.st_uid, folder.st_gid)  # the solver rewrites later, e.g. controlDict)
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

    def write_private(self, node: Node, path: Path, data: bytes, account: Account | None = None) -> None:
        """write_bytes for secrets: the file is mode 0600 before a byte of data is in it. With an account the
        account writes it (its own ~/.ssh: root writing there would follow any link the account put in place)."""
        if account is None or not self.needs_drop(node, account):
            self._write(node, path, data, private=True)
            return
        script = 'umask 077 && t="$1.$$.e2e-tmp" && cat > "$t" && mv -f -- "$t" "$1"'
        done = self.conn(node).run(q(*self.as_job(node, account, ["sh", "-c", script, "sh", str(path)])), stdin=data)
        if done.returncode != 0:
            raise BackendError(f"node {node.name}: writing {path} as {account.name} failed: "
                               f"{done.stderr.decode(errors='replace').strip()[-500:]}")

    # -- what a desktop needs on a real head node (orchestrator/desktop/nodes.py names these hooks)
    def make_dirs(self, node: Node, path: Path, mode: int = 0o700, account: Account | None = None) -> None:
        """mkdir -p (as the account, if given); the mode applies to the last directory when it is created."""
        self.run(node, self.as_job(node, account, ["mkdir", "-p", "-m", f"{mode:o}", "--", str(path)]))

    def home_dir(self, node: Node, account: Account | None = None) -> Path:
        """The home on the node of the account (as the node's account database says), else of the login user:
        where sshd looks for that user's authorized_keys."""
        if account is not None:
            entry = self.run(node, ["getent", "passwd", account.name], check=False).stdout.decode().strip()
            home = entry.split(":")[5] if entry.count(":") >= 6 else ""
        else:
            home = self.run(node, ["sh", "-c", 'printf %s "$HOME"']).stdout.decode().strip()
        if not home.startswith("/"):
            user = account.name if account is not None else self.spec(node).user
            raise BackendError(f"node {node.name}: user {user} has no home directory ({home!r})")
        return Path(home)

    def open_tcp(self, node: Node, port: int, timeout: float = 5.0):
        """A stream to 127.0.0.1:port on the node through the kept ssh connection (a direct-tcpip channel)."""
        return self.conn(node).open_tcp(port, timeout)

    def ssh_endpoint(self, node: Node, account: Account | None = None) -> tuple[str, str, int]:
        """Where a person's ssh client logs in: as the job's account when jobs run as their owners."""
        spec = self.spec(node)
        return (account.name if account is not None else spec.user), spec.address, spec.port

    def read_as(self, node: Node, path: Path, account: Account) -> bytes | None:
        """A file read as the account (None if missing): a link in the account's own files leads only where
        the account may read itself."""
        script = 'if [ -e "$1" ]; then printf +; exec cat -- "$1"; fi'  # "+": it exists (and may be empty)
        done = self.conn(node).run(q(*self.as_job(node, account, ["sh", "-c", script, "sh", str(path)])))
        if done.returncode != 0:
            raise BackendError(f"node {node.name}: reading {path} as {account.name} failed: "
                               f"{done.stderr.decode(errors='replace').strip()[-500:]}")
        return done.stdout[1:] if done.stdout.startswith(b"+") else None

    def apply_firewall(self, node: Node, path: Path) -> None:
        """Load an nftables file on the node (as root, or through passwordless sudo for another login user)."""
        self.run(node, ["nft", "-f", path] if self.spec(node).user == "root" else ["sudo", "-n", "nft", "-f", path])

    # -- moving directories between the head node and nodes
    def collect(self, node: Node, src: Path, dest: Path, account: Account | None = None) -> None:
        if self.spec(node).shared_storage:
            if Path(src).resolve() != Path(dest).resolve():
                shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
            return
        pull_tree(self, node, src, dest, account)

    def shares_storage(self, node: Node) -> bool:
        return self.spec(node).shared_storage

    def stage_in(self, nodes: list[Node], path: Path, account: Account | None = None) -> None:
        for node in nodes:
            if not self.shares_storage(node):
                push_tree(self, node, path, path, account)

    def stage_out(self, nodes: list[Node], path: Path, account: Account | None = None) -> None:
        for node in nodes:
            if not self.shares_storage(node):
                pull_tree(self, node, path, path, account)


def _find_tagged(tag: str, uid: int | None = None) -> str:
    """Shell loop header over the pids whose environment holds exactly E2E_RUN_TAG=tag (zombies have none);
    with a uid, only processes whose real uid it is."""
    needle = q(f"E2E_RUN_TAG={tag}")
    real_uid = """$(awk '/^Uid:/{print $2}' /proc/$p/status 2>/dev/null)"""
    own = "" if uid is None else f' [ "{real_uid}" = {int(uid)} ] || continue;'
    return (f"for f in $(grep -lzxF -e {needle} /proc/[0-9]*/environ 2>/dev/null); do "
            'p=${f#/proc/}; p=${p%/environ};' + own)


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
