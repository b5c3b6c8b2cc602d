"""A real one-node Slurm cluster for tests: its own munged, slurmctld and slurmd on free ports, torn down always.

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
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.worker.stack import free_port

MUNGE_KEY = Path("/etc/munge/munge.key")


def slurm_available() -> bool:
    return all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged", "srun")) \
        and MUNGE_KEY.exists() and os.geteuid() == 0


@dataclass
class SlurmCluster:
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="e2esshslurm-", dir="/tmp")))
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def node(self) -> str:
        return f"e2es{self.tag}n1"

    @property
    def partition(self) -> str:
        return f"e2es{self.tag}"

    @property
    def conf(self) -> Path:
        return self.base / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> SlurmCluster:
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
        self._wait(lambda: (munge / "sock").exists(), "munged socket")
        for d in ("state", "spool", "log"):
            (self.base / d).mkdir()
        self.conf.write_text("\n".join([
            f"ClusterName=e2es{self.tag}", f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={munge / 'sock'}",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={self.base / 'state'}", f"SlurmdSpoolDir={self.base / 'spool'}",
            f"SlurmctldPidFile={self.base / 'ctld.pid'}", f"SlurmdPidFile={self.base / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.base / 'log' / 'ctld.log'}", f"SlurmdLogFile={self.base / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SwitchType=switch/none",
            "MpiDefault=none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "ReturnToService=2",
            f"NodeName={self.node} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 "
            f"CPUs={os.cpu_count() or 1} RealMemory=1000 State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP", ""]))
        self._spawn(["slurmctld", "-D", "-i"], "slurmctld")
        self._spawn(["slurmd", "-D", "-N", self.node], "slurmd")
        self._wait(self._node_idle, "the Slurm node to be idle", timeout=30)
        return self

    def _spawn(self, argv: list[str], name: str) -> None:
        log = open(self.base / f"{name}.out", "wb")
        self.procs.append(subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def _node_idle(self) -> bool:
        done = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%T", f"--nodes={self.node}"],
                              env=self.env, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() == "idle"

    def _wait(self, predicate, what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = {p.name: p.read_text()[-1500:] for p in self.base.glob("*.out")}
                raise RuntimeError(f"{what} not ready (exited: {dead}); logs: {logs}")
            time.sleep(0.1)

    def stop(self) -> None:
        # Jobs first (their steps' processes), then the daemons, newest first.
        if self.conf.exists():
            subprocess.run(["scancel", f"--partition={self.partition}"], env=self.env, capture_output=True,
                           timeout=30, check=False)
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)
