"""Real components for integration tests: a redis-server, Celery worker and beat processes, OpenFOAM."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from orchestrator.cluster.local import tagged_processes
from orchestrator.control.client import Client
from orchestrator.control.protocol import JobStatus
from orchestrator.model.settings import Settings
from orchestrator.model.states import JOB_TERMINAL, RUN_ENDED
from orchestrator.sync.tree import TEMP_MARK
from orchestrator.worker.stack import Stack, free_port, wait_for_redis
from tests.conftest import grant_traverse, require

TUTORIALS = Path("/usr/share/doc/openfoam-examples/examples/incompressible")
CAVITY = TUTORIALS / "icoFoam" / "cavity" / "cavity"
PITZ = TUTORIALS / "simpleFoam" / "pitzDaily"


# E2E_TEST_REDIS_ACL=1: the session's Redis has the engine's ACL users; the tests' own URL is the admin's, and
# every engine made by make_settings logs in by role (the CLI and API as `api`, workers and beat as theirs)
REDIS_ACL = os.environ.get("E2E_TEST_REDIS_ACL") == "1"
_role_passwords: dict[str, str] = {}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port, for the whole session."""
    binary = shutil.which("redis-server")
    require(binary is not None, "redis-server (apt-get install redis-server)")
    data = tmp_path_factory.mktemp("redis")
    port = free_port()
    users = []
    if REDIS_ACL:
        from orchestrator.store import acl
        from orchestrator.worker.stack import acl_grants

        _role_passwords.update(acl.new_passwords())
        (data / "users.acl").write_text(acl.acl_file(acl_grants(), _role_passwords))
        users = ["--aclfile", str(data / "users.acl")]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(data), *users],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}"
    if REDIS_ACL:
        url = f"redis://default:{_role_passwords['default']}@127.0.0.1:{port}"
        _role_passwords["port"] = str(port)
    wait_for_redis(url + "/0")
    yield url
    proc.terminate()
    proc.wait(10)


def port_free(port: int) -> bool:
    """Whether a loopback listener could take this port now."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def quiet_port() -> int:
    """A free port below the kernel's ephemeral range: no connection or port-0 listener takes it meanwhile, so
    the API suite, starting later in the session, can still listen there."""
    for _ in range(200):
        port = random.randint(20000, 30999)
        if port_free(port):
            return port
    return free_port()


def make_settings(home: Path, url: str, **overrides) -> Settings:
    """Test settings; as root, the job accounts may pass through the folders above E2E_HOME (pytest makes
    its temp folders 0700), like an admin's deployment lets them."""
    if os.geteuid() == 0:
        home.mkdir(parents=True, exist_ok=True)
        grant_traverse([home])
    # api_port: a port of this session's own, where the API suite serves the API (the desktop's E2E_SERVER)
    values = dict(home=home, redis_url=url, local_nodes=8, local_cores_per_node=2, reconcile_interval=0.3,
                  launch_timeout=3, stop_grace=15, kill_grace=3, api_port=quiet_port())
    from urllib.parse import urlsplit

    where = urlsplit(url)
    if REDIS_ACL and _role_passwords and str(where.port) == _role_passwords["port"]:  # (not a test's own Redis)
        from orchestrator.store import acl

        passwords = {name: _role_passwords[name] for name in acl.new_passwords()}
        urls = acl.role_urls(passwords, where.hostname or "127.0.0.1", where.port or 6379,
                             int(where.path.strip("/") or 0))
        urls_file = home.parent / f"{home.name}-redis-urls.json"
        urls_file.write_text(json.dumps({"redis_urls": urls}))
        values.update(redis_url=urls["api"], redis_urls_file=urls_file)
    values.update(overrides)
    return Settings(**values)


class Engine:
    """A running engine (worker + beat on a real Redis) and a client for it."""

    def __init__(self, settings: Settings, worker_env: dict[str, str] | None = None):
        self.settings = settings
        self.stack = Stack(settings, worker_env=worker_env or {})
        self.stack.start()
        self.client = Client(settings, user="tester")

    def wait_run(self, job_id: str, timeout: float = 120) -> JobStatus:
        """Wait until the job's current run has ended; the job document."""
        def ended(doc):
            run = next(r for r in doc.runs_detail if r.id == doc.current_run)
            return run.state in RUN_ENDED
        return self.client.wait(job_id, ended, timeout=timeout)

    def wait_job_terminal(self, job_id: str, timeout: float = 120) -> JobStatus:
        return self.client.wait(job_id, lambda d: d.state in JOB_TERMINAL, timeout=timeout)

    def close(self) -> None:
        try:
            self.kill_leftover_runs()
        finally:
            self.stack.stop()

    def kill_leftover_runs(self) -> None:
        """A test that failed half-way leaves its solvers running (maybe frozen): kill every process of
        this engine's unfinished jobs, so no later test shares the cores with them."""
        store = self.client.store
        try:
            active = store.active_jobs()
            runs = {job_id: store.list_runs(job_id) for job_id in active}
        except redis.RedisError:
            return
        for job_id, job_runs in runs.items():
            for run in job_runs:
                pids = tagged_processes(f"{job_id}/{run.id}")
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    for pid in pids:
                        with contextlib.suppress(OSError):
                            os.kill(pid, sig)
                    if run.pid:
                        with contextlib.suppress(OSError):
                            os.killpg(run.pid, sig)


@pytest.fixture(scope="session")
def engine(redis_url, tmp_path_factory):
    """One engine for the session, on Redis database 0."""
    eng = Engine(make_settings(tmp_path_factory.mktemp("e2e-home"), redis_url + "/0"))
    yield eng
    eng.close()


@pytest.fixture(autouse=True)
def _ends_the_jobs_it_started(request):
    """A test on a shared engine terminates the jobs it left up: the engine's nodes are few (8), leases are
    first in, first out, and a job left holding nodes would queue every later test's jobs behind it."""
    if "engine" not in request.fixturenames:
        yield
        return
    engine = request.getfixturevalue("engine")
    before = set(engine.client.store.active_jobs())
    yield
    for job_id in set(engine.client.store.active_jobs()) - before:
        with contextlib.suppress(Exception):
            engine.client.terminate(job_id)


@pytest.fixture
def openfoam():
    require(shutil.which("simpleFoam") is not None and shutil.which("mpirun") is not None,
            "OpenFOAM and Open MPI (apt-get install openfoam openmpi-bin)")
    require(CAVITY.is_dir() and PITZ.is_dir(), "OpenFOAM tutorials (apt-get install openfoam-examples)")


def redis_flush(url: str) -> None:
    redis.Redis.from_url(url).flushdb()


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def texts(folder: Path) -> list[str]:
    """The folder's file contents as they are now; the sync's temp files (renamed into place at any moment,
    so one listed may be gone when read) are not outputs and are skipped."""
    found = []
    for path in folder.iterdir():
        if TEMP_MARK in path.name:
            continue
        try:
            found.append(path.read_text())
        except FileNotFoundError:
            continue
    return found
