"""A real Slurm cluster for tests: its own munged, slurmctld and slurmd(s) on free ports, torn down always.

One node (the default): slurmd on the loopback address, as fast as it gets. Several nodes (`count=3`, root):
each slurmd in its own network namespace on a bridge (the ssh test bed's, tests/integration/sshcluster.py) with
its own hostname (unshare --uts), all sharing the head's munge key and munged socket (a socket path reaches
across network namespaces) and the head's filesystem (shared storage, as the slurm backend requires);
slurmctld listens on the host side of the bridge. slurmd is entered with `nsenter --net`, not `ip netns exec`,
which remounts /sys and breaks slurmd's cgroup lookup.

Everything is private to the instance (munge socket, state and spool directories, ports, node and partition
names), so it runs next to any other Slurm or munge on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from orchestrator.worker.stack import free_port
from tests.integration.sshcluster import ClusterNode, NodeCluster, namespaces_available

MUNGE_KEY = Path("/etc/munge/munge.key")


def slurm_available() -> bool:
    return all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged", "srun")) \
        and MUNGE_KEY.exists() and os.geteuid() == 0


def multinode_available() -> bool:
    return slurm_available() and shutil.which("nsenter") is not None and namespaces_available()


@dataclass
class SlurmCluster:
    count: int = 1          # slurmd nodes; more than one: each in its own network namespace
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="e2esshslurm-", dir="/tmp")))
    procs: list[subprocess.Popen] = field(default_factory=list)
    net: NodeCluster | None = None   # the bridge and namespaces (several nodes)
    started_in: float = 0.0          # seconds start() took

    @property
    def names(self) -> list[str]:
        return [f"e2es{self.tag}n{i + 1}" for i in range(self.count)]

    @property
    def node(self) -> str:
        return self.names[0]

    @property
    def partition(self) -> str:
        return f"e2es{self.tag}"

    @property
    def conf(self) -> Path:
        return self.base / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def namespace(self, name: str) -> ClusterNode:
        """The network namespace (and veth) of a node of a several-node cluster."""
        assert self.net is not None, "a one-node cluster has no namespaces"
        return self.net.nodes[self.names.index(name)]

    def start(self) -> SlurmCluster:
        began = time.monotonic()
        self.base.chmod(0o755)  # munged (as user munge) must reach its socket directory
        munge = self.base / "munge"
        munge.mkdir(mode=0o755)
        shutil.copy(MUNGE_KEY, munge / "key")
        shutil.chown(munge, "munge", "munge")
        shutil.chown(munge / "key", "munge", "munge")
        (munge / "key").chmod(0o400)
        self._spawn(["runuser", "-u", "munge", "--", "munged", "-F", f"--socket={munge / 'sock'}",
                     f"--key-file={munge / 'key'}", f"--pid-file={munge / 'pid'}", f"--log-file={munge / 'log'}",
                     f"--seed-file={munge / 'seed'}"], "munged")
        for d in ("state", "log"):
            (self.base / d).mkdir()
        if self.count > 1:
            self._network()   # meanwhile munged starts
            head, nodes = self.net.subnet + ".1", self._node_lines()
        else:
            (self.base / "spool").mkdir()
            head = "127.0.0.1"
            nodes = [f"NodeName={self.node} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 "
                     f"CPUs={os.cpu_count() or 1} RealMemory=1000 State=UNKNOWN"]
        per_node = "-%n" if self.count > 1 else ""  # several slurmd on one filesystem: a spool, pid, log each
        self.conf.write_text("\n".join([
            f"ClusterName=e2es{self.tag}", f"SlurmctldHost={socket.gethostname()}({head})",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={munge / 'sock'}",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={self.base / 'state'}", f"SlurmdSpoolDir={self.base / ('spool' + per_node)}",
            f"SlurmctldPidFile={self.base / 'ctld.pid'}", f"SlurmdPidFile={self.base / f'slurmd{per_node}.pid'}",
            f"SlurmctldLogFile={self.base / 'log' / 'ctld.log'}",
            f"SlurmdLogFile={self.base / 'log' / f'slurmd{per_node}.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SwitchType=switch/none",
            "MpiDefault=none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "ReturnToService=2",
            # a node whose slurmd stops answering is DOWN after this long (the default is 300 s)
            "SlurmdTimeout=5", "MessageTimeout=5",
            *nodes,
            f"PartitionName={self.partition} Nodes={','.join(self.names)} Default=YES MaxTime=INFINITE State=UP",
            ""]))
        self._wait(lambda: (munge / "sock").exists(), "munged socket")
        self._spawn(["slurmctld", "-D", "-i"], "slurmctld")
        for name in self.names:
            self.start_slurmd(name)
        self._wait(self._all_idle, "the Slurm nodes to be idle", timeout=30)
        self.started_in = time.monotonic() - began
        return self

    def _network(self) -> None:
        """A bridge with the head's address, and a namespace per node on it (the ssh test bed's helpers)."""
        self.net = NodeCluster(self.base / "net", count=self.count, tag=self.tag)
        self.net._network()
        for i, name in enumerate(self.names):
            letter = chr(ord("a") + i)
            node = ClusterNode(name, f"{self.net.subnet}.{11 + i}", 0, self.base / "net" / name,
                               netns=f"e2eslurm{self.tag}{letter}", veth=f"e2esl{self.tag}{letter}")
            self.net.nodes.append(node)
            self.net._link(node)
        for name in self.names:
            (self.base / f"spool-{name}").mkdir()

    def _node_lines(self) -> list[str]:
        # One core each: the 2-core machine's cores are shared by every "node" anyway.
        return [f"NodeName={n.name} NodeHostname={n.name} NodeAddr={n.address} CPUs=1 RealMemory=1000 "
                "State=UNKNOWN" for n in self.net.nodes]

    def start_slurmd(self, name: str) -> None:
        """(Re)start a node's slurmd: in its namespace with its hostname, or on the head for one node."""
        argv = ["slurmd", "-D", "-N", name]
        if self.net is not None:
            argv = ["nsenter", f"--net=/var/run/netns/{self.namespace(name).netns}", "unshare", "--uts",
                    "sh", "-c", f'hostname {name} && exec "$@"', "sh", *argv]
        self._spawn(argv, f"slurmd-{name}")

    def slurmd(self, name: str) -> subprocess.Popen:
        return next(p for p in reversed(self.procs) if p.args[-1] == name and "slurmd" in p.args)

    def _spawn(self, argv: list[str], name: str) -> None:
        log = open(self.base / f"{name}.out", "ab")
        self.procs.append(subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))
        log.close()

    def node_states(self) -> dict[str, str]:
        done = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%N %T", f"--partition={self.partition}"],
                              env=self.env, capture_output=True, text=True, timeout=10)
        return dict(line.split() for line in done.stdout.splitlines() if len(line.split()) == 2)

    def _all_idle(self) -> bool:
        states = self.node_states()
        return all(states.get(n) == "idle" for n in self.names)

    def _wait(self, predicate, what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = [p.args for p in self.procs if p.poll() is not None and p.returncode != -signal.SIGKILL]
            if dead or time.monotonic() > deadline:
                # the daemons' own logs say why (a node not registering, a refused credential); their
                # stdout says why one could not start at all
                logs = {p.name: p.read_text(errors="replace")[-1500:]
                        for p in [*self.base.glob("*.out"), *self.base.glob("log/*.log")]}
                states = self.node_states() if self.conf.exists() else {}
                raise RuntimeError(f"{what} not ready (exited: {dead}; nodes: {states}); logs: {logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        # Jobs first (their steps' processes), then the daemons, newest first, then the nodes' namespaces
        # (whatever still runs in them is killed there).
        if self.conf.exists():
            subprocess.run(["scancel", f"--partition={self.partition}"], env=self.env, capture_output=True,
                           timeout=30, check=False)
        for proc in reversed(self.procs):
            # munged takes 2 s over a SIGTERM (it saves its seed, which goes with base anyway)
            sig = signal.SIGKILL if "munged" in proc.args else signal.SIGTERM
            try:
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, sig)
                proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.net is not None:
            self.net.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def running(cluster: SlurmCluster, monkeypatch) -> Iterator[SlurmCluster]:
    """A test's cluster: started, SLURM_CONF pointing at it for the test, stopped whatever happens."""
    try:
        cluster.start()
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster
    finally:
        cluster.stop()
