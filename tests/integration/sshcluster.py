"""A real 3-node ssh test cluster: network namespaces on a bridge, one sshd (own host key, hostname) per node.

Falls back to sshd on loopback addresses (127.0.0.2, ...) with free ports when namespaces are unavailable.
Every node trusts the engine's key and the nodes' own key (for mpirun between nodes). As root, the job
accounts (e2e-jobs, alice, bob: the same /etc/passwd on every node, like LDAP) each get a home of their own on
every node (a /home per node) holding their own node-to-node key, in their own authorized_keys: mpirun started
as a user reaches the other nodes as that user, as on a real cluster. MPI's settings are the nodes' own
openmpi-mca-params.conf (what an admin sets on each node), since job processes start with a clean environment.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import yaml

from orchestrator.cluster.hostkeys import trust
from orchestrator.worker.stack import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PREFIX = "e2essh"
ACCOUNTS = ("e2e-jobs", "alice", "bob")   # the accounts the suites run jobs as (tests/conftest.py makes them too)
MCA_PARAMS = Path("/etc/openmpi/openmpi-mca-params.conf")


def sshd_available() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh-keygen") is not None and shutil.which("ssh") is not None


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def ensure_accounts(names: tuple[str, ...] = ACCOUNTS) -> None:
    """The job accounts exist (locked, no home on this machine: each node gets its own /home)."""
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            _sh("useradd", "-M", "-s", "/bin/bash", name)


def traversable(path: Path) -> None:
    """Every directory above path lets other accounts pass (o+x, no listing): pytest's own temp root is 0700,
    and job accounts must reach their directories under it."""
    for parent in [*reversed(Path(path).parents), Path(path)]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod((mode & 0o7777) | 0o001)


def namespaces_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
        return False
    probe = f"{PREFIX}p{secrets.token_hex(2)}"
    if _sh("ip", "netns", "add", probe, check=False).returncode != 0:
        return False
    _sh("ip", "netns", "del", probe, check=False)
    return True


@dataclass
class ClusterNode:
    name: str
    address: str
    port: int
    dir: Path
    netns: str | None = None
    veth: str | None = None
    proc: subprocess.Popen | None = None

    @property
    def host_key(self) -> paramiko.PKey:
        return paramiko.PKey.from_path(self.dir / "ssh_host_ed25519_key")


@dataclass
class NodeCluster:
    base: Path
    count: int = 3
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    nodes: list[ClusterNode] = field(default_factory=list)
    bridge: str | None = None
    user: str = "root"
    network: str = "auto"   # "netns" (a bridge, one namespace per node), "loopback" (127.0.0.x), or auto
    private: list[Path] = field(default_factory=list)  # head paths each node sees as its own empty directory

    # -- paths
    @property
    def engine_key(self) -> Path:
        return self.base / "keys" / "engine"

    @property
    def stranger_key(self) -> Path:
        return self.base / "keys" / "stranger"

    @property
    def known_hosts(self) -> Path:
        return self.base / "known_hosts"

    # -- life
    def start(self) -> NodeCluster:
        (self.base / "keys").mkdir(parents=True, exist_ok=True)
        for key in ("engine", "node", "stranger"):
            _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(self.base / "keys" / key))
        self.user = "root" if os.geteuid() == 0 else os.environ.get("USER") or _sh("id", "-un").stdout.strip()
        authorized = "".join((self.base / "keys" / f"{k}.pub").read_text() for k in ("engine", "node"))
        (self.base / "keys" / self.user).write_text(authorized)
        Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None
        if os.geteuid() == 0:
            ensure_accounts()
            traversable(self.base)
            for name in ACCOUNTS:  # each account's own node-to-node key (its homes get it below)
                _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}-nodes",
                    "-f", str(self.base / "keys" / f"user-{name}"))
        use_netns = self.network == "netns" or (self.network == "auto" and namespaces_available())
        if use_netns:
            self._network()
        for i in range(self.count):
            name = f"node{chr(ord('a') + i)}"
            node_dir = self.base / name
            node_dir.mkdir(mode=0o711)
            if use_netns:
                node = ClusterNode(name, f"{self.subnet}.{11 + i}", 22, node_dir,
                                netns=f"{PREFIX}{self.tag}{chr(ord('a') + i)}",
                                veth=f"e2es{self.tag}{chr(ord('a') + i)}")
            else:
                node = ClusterNode(name, f"127.0.0.{2 + i}", free_port(), node_dir)
            self.nodes.append(node)
            _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(node_dir / "ssh_host_ed25519_key"))
            trust(self.known_hosts, node.address, node.port, node.host_key)
        self._client_config()
        for node in self.nodes:
            if node.netns:
                self._link(node)
            self.start_sshd(node)
        for node in self.nodes:
            self.wait_listening(node)
        return self

    def _network(self) -> None:
        used = _sh("ip", "-4", "-o", "addr").stdout
        while True:
            subnet = f"10.{secrets.randbelow(50) + 200}.{secrets.randbelow(250) + 1}"
            if f" {subnet}." not in used:
                break
        self.subnet = subnet
        self.bridge = f"{PREFIX}b{self.tag}"
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{subnet}.1/24", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")

    def _link(self, node: ClusterNode) -> None:
        _sh("ip", "netns", "add", node.netns)
        _sh("ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
        _sh("ip", "link", "set", node.veth, "master", self.bridge, "up")
        _sh("ip", "-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
        _sh("ip", "-n", node.netns, "link", "set", "eth0", "up")
        _sh("ip", "-n", node.netns, "link", "set", "lo", "up")

    def _client_config(self) -> None:
        """What the nodes' own ssh client uses (mpirun's rsh agent): node key, strict known_hosts."""
        client = self.base / "client"
        client.mkdir()
        shutil.copy(self.known_hosts, client / "known_hosts")
        lines = []
        for node in self.nodes:
            lines += [f"Host {node.address}", f"  Port {node.port}", ""]
        lines += ["Host *", f"  User {self.user}", f"  IdentityFile {self.base / 'keys' / 'node'}",
                  "  IdentitiesOnly yes", f"  UserKnownHostsFile {client / 'known_hosts'}",
                  "  GlobalKnownHostsFile /dev/null", "  StrictHostKeyChecking yes", "  BatchMode yes",
                  "  LogLevel ERROR", ""]
        (client / "ssh_config").write_text("\n".join(lines))

    def sshd_config(self, node: ClusterNode) -> Path:
        cfg = node.dir / "sshd_config"
        rsh_agent = f'OMPI_MCA_plm_rsh_agent="ssh -F {self.base / "client" / "ssh_config"}"'
        cfg.write_text("\n".join([
            f"Port {node.port}", f"ListenAddress {node.address}",
            f"HostKey {node.dir / 'ssh_host_ed25519_key'}", f"PidFile {node.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.base / 'keys' / '%u'} .ssh/authorized_keys",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "UsePAM yes", "StrictModes no",
            "Subsystem sftp internal-sftp", "MaxStartups 100:30:200", "LogLevel VERBOSE",
            # Login sessions see the nodes' MPI settings too; job processes start with a clean environment and
            # read them from the node's openmpi-mca-params.conf (and ~/.ssh/config) instead. Without root
            # (no per-node files) ranks start over ssh with the nodes' key, given here.
            "SetEnv OMPI_MCA_mpi_yield_when_idle=1" + ("" if os.geteuid() == 0 else f" {rsh_agent}"),
            "",
        ]))
        return cfg

    def start_sshd(self, node: ClusterNode) -> None:
        cfg = self.sshd_config(node)
        command = [SSHD, "-D", "-f", str(cfg), "-E", str(node.dir / "sshd.log")]
        if os.geteuid() == 0:
            # Own hostname and process table (sshd is its pid 1 and reaps orphans), in the node's own network
            # namespace when there is one; the filesystem stays shared like an NFS mount, except an empty
            # home, so no login script of this machine runs in the nodes' sessions.
            home = node.dir / "home"
            (home / ".ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
            # Plain `ssh` between nodes works too (a run script copying files to the other nodes uses it).
            shutil.copy(self.base / "client" / "ssh_config", home / ".ssh" / "config")
            (home / ".ssh" / "config").chmod(0o600)
            mounts = [("mount", "--bind", str(home), os.environ.get("HOME", "/root")),
                      ("mount", "--bind", str(self.user_homes(node)), "/home")]
            if MCA_PARAMS.exists():
                mounts.append(("mount", "--bind", str(self.mca_params()), str(MCA_PARAMS)))
            for i, path in enumerate(self.private):  # storage that is not shared with the head node
                own = node.dir / f"private{i}"
                own.mkdir(exist_ok=True)
                if path.exists():  # the node's own copy keeps the mode (/tmp/.X11-unix: 1777, any account's X)
                    own.chmod(path.stat().st_mode & 0o7777)
                mounts.append(("mount", "--bind", str(own), str(path)))
            script = " && ".join([f"hostname {node.name}", *(shlex.join(m) for m in mounts), 'exec "$@"'])
            command = ["unshare", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c",
                       script, "sh", *command]
            if node.netns:
                command = ["ip", "netns", "exec", node.netns, *command]
        node.proc = subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def user_homes(self, node: ClusterNode) -> Path:
        """The node's own /home: a home per job account holding its node key, authorized_keys and ssh config
        (plain `ssh <node>` between nodes works as that user, which is what mpirun's rsh agent does)."""
        homes = node.dir / "homes"
        if homes.exists():
            return homes
        homes.mkdir(mode=0o755)
        for name in ACCOUNTS:
            entry = pwd.getpwnam(name)
            if not entry.pw_dir.startswith("/home/"):
                continue  # a home elsewhere is the site's: not this test bed's to make
            ssh = homes / Path(entry.pw_dir).relative_to("/home") / ".ssh"
            ssh.mkdir(mode=0o700, parents=True)
            key = self.base / "keys" / f"user-{name}"
            shutil.copy(key, ssh / "id_ed25519")
            shutil.copy(f"{key}.pub", ssh / "authorized_keys")
            shutil.copy(self.known_hosts, ssh / "known_hosts")
            lines = [line for n in self.nodes if n.port != 22 for line in (f"Host {n.address}", f"  Port {n.port}")]
            lines += ["Host *", "  IdentitiesOnly yes", "  StrictHostKeyChecking yes", "  BatchMode yes",
                      "  LogLevel ERROR", ""]
            (ssh / "config").write_text("\n".join(lines))
            for path in (ssh.parent, ssh, *ssh.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
                path.chmod(0o700 if path.is_dir() else 0o600)
        return homes

    def mca_params(self) -> Path:
        """This machine's Open MPI settings plus the cluster's: yield, as 2 cores serve every "node"."""
        path = self.base / "openmpi-mca-params.conf"
        if not path.exists():
            path.write_text(MCA_PARAMS.read_text() + "\nmpi_yield_when_idle = 1\n")
            path.chmod(0o644)
        return path

    def wait_listening(self, node: ClusterNode, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((node.address, node.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or (node.proc and node.proc.poll() is not None):
                    log = (node.dir / "sshd.log").read_text() if (node.dir / "sshd.log").exists() else ""
                    raise RuntimeError(f"sshd of {node.name} did not start: {log[-2000:]}") from None
                time.sleep(0.02)

    def cut(self, node: ClusterNode) -> None:
        """The node stops answering: its link goes down (packets vanish, nothing is refused), or without
        namespaces every process of the node is stopped (its connections stay open and silent)."""
        if node.veth:
            _sh("ip", "link", "set", node.veth, "down")
            return
        for pid in self.node_pids(node):
            os.kill(pid, signal.SIGSTOP)

    def mend(self, node: ClusterNode) -> None:
        """Undo cut: the link comes back up, or the node's processes continue."""
        if node.veth:
            _sh("ip", "link", "set", node.veth, "up")
            return
        for pid in self.node_pids(node):
            os.kill(pid, signal.SIGCONT)

    def node_pids(self, node: ClusterNode) -> list[int]:
        """The node's processes: its pid namespace (as root), else its sshd's process group."""
        if node.proc is None:
            return []
        try:
            children = Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children").read_text().split()
            ns = os.readlink(f"/proc/{children[0]}/ns/pid") if os.geteuid() == 0 and children else None
        except OSError:
            ns = None
        if ns is None:
            return [node.proc.pid]
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if os.readlink(f"/proc/{entry.name}/ns/pid") == ns:
                        found.append(int(entry.name))
                except OSError:
                    pass
        return found

    def stop(self) -> None:
        """Everything goes, whatever state it is in: processes in each namespace, sshds, links, bridge."""
        for node in self.nodes:
            pids: list[int] = []
            if node.netns:
                pids = [int(p) for p in _sh("ip", "netns", "pids", node.netns, check=False).stdout.split()]
            pids += self.node_pids(node)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if node.proc:
                try:
                    node.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            if node.netns:
                _sh("ip", "netns", "del", node.netns, check=False)
            if node.veth:
                _sh("ip", "link", "del", node.veth, check=False)
        if self.bridge:
            _sh("ip", "link", "del", self.bridge, check=False)

    # -- what the engine is given
    def inventory(self, path: Path | None = None, nodes: list[ClusterNode] | None = None, shared_storage: bool = True,
                  **overrides) -> Path:
        path = path or self.base / "inventory.yaml"
        head = self.subnet + ".1" if self.bridge else "127.0.0.1"
        data = {
            "head": {"name": "head", "address": head},
            "known_hosts": str(self.known_hosts),
            "connect_timeout": 5, "command_timeout": 10, "keepalive": 2,
            "nodes": [{"name": n.name, "address": n.address, "port": n.port, "user": self.user,
                       "key_file": str(self.engine_key), "cores": 1, "scratch": str(n.dir / "scratch"),
                       "shared_storage": shared_storage}
                      for n in (nodes or self.nodes)],
        }
        data.update(overrides)
        path.write_text(yaml.safe_dump(data))
        return path
