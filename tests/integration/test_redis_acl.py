"""A real redis-server loaded with the engine's ACL file: each role can do its work and nothing else, the admin
needs its password, and a connection with no credential is refused."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestrator.store import JobStore, acl
from orchestrator.worker.stack import acl_grants, free_port, wait_for_redis
from tests.conftest import require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory):
    """A redis-server whose users are the engine's (fresh passwords); the role URLs, admin's as "admin"."""
    binary = shutil.which("redis-server")
    require(binary is not None, "redis-server (apt-get install redis-server)")
    data = tmp_path_factory.mktemp("acl-redis")
    passwords = acl.new_passwords()
    (data / "users.acl").write_text(acl.acl_file(acl_grants(), passwords))
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(data), "--aclfile", str(data / "users.acl")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    urls = acl.role_urls(passwords, "127.0.0.1", port)
    wait_for_redis(urls["admin"])
    yield urls
    proc.terminate()
    proc.wait(10)


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


def test_no_credential_and_the_admin_without_its_password_are_refused(acl_redis):
    port = int(acl_redis["admin"].rsplit(":", 1)[1].split("/")[0])

    def login(**credential) -> redis.Redis:  # no retries: a refused login is the answer, not a glitch
        return redis.Redis(port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0), **credential)

    with pytest.raises(redis.AuthenticationError):  # NOAUTH: the default user is not open
        login().get("e2e:jobs")
    with pytest.raises(redis.AuthenticationError):
        login(username="default", password="not-it").ping()
    with pytest.raises(redis.AuthenticationError):
        login(password="not-it").ping()
    with pytest.raises(redis.AuthenticationError):
        login(username="api", password="not-it").ping()
    assert client(acl_redis["admin"]).ping()  # the admin with its password may


def test_the_api_role_cannot_flush_configure_or_reach_the_engines_own_keys(acl_redis):
    api = client(acl_redis["api"])
    for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "requirepass"), ("KEYS", "*"),
                    ("ACL", "LIST"), ("SHUTDOWN",), ("MONITOR",), ("SCRIPT", "FLUSH"), ("FUNCTION", "FLUSH")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            api.execute_command(*command)
    for key in ("e2e:lock:reconcile", "e2e:sync:{j1}:offset", "e2e:leftovers", "some-other-app:data"):
        with pytest.raises(redis.exceptions.NoPermissionError):
            api.get(key)
    with pytest.raises(redis.exceptions.NoPermissionError):  # nor write them
        api.set("e2e:lock:reconcile", "mine")
    assert api.hlen("unacked") == 0  # what it needs, it has (the monitor counts unacked tasks)


def test_the_worker_role_cannot_read_tokens_or_make_anyone_admin(acl_redis):
    """Finding 1 again, from a worker's credential: no write to accounts or tokens, no read of them either."""
    admin = client(acl_redis["admin"])
    admin.hset("e2e:token:abc", mapping={"user": "bob", "admin": 0})
    worker = client(acl_redis["worker"])
    for call in (lambda: worker.hset("e2e:token:abc", "admin", 1), lambda: worker.hgetall("e2e:token:abc"),
                 lambda: worker.hset("e2e:account:bob", "admin", 1), lambda: worker.smembers("e2e:account-tokens:bob"),
                 lambda: worker.flushdb(), lambda: worker.config_get("*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    assert admin.hget("e2e:token:abc", "admin") == "0"


def test_the_beat_role_can_only_queue_the_reconcile_task(acl_redis):
    beat = client(acl_redis["beat"])
    assert beat.lpush("e2e.reconcile", "{}") == 1 and beat.sadd("_kombu.binding.e2e.reconcile", "x") == 1
    for call in (lambda: beat.lpush("e2e.jobs", "{}"), lambda: beat.hgetall("e2e:job:{j1}"),
                 lambda: beat.lrange("e2e.reconcile", 0, -1), lambda: beat.get("e2e:seq")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    health = client(acl_redis["health"])
    assert health.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        health.get("e2e:seq")


def test_the_store_works_through_a_user_and_password_url(acl_redis):
    """JobStore.from_url logs in as the role named in the URL: the API creates a user and a job, the worker
    moves the job's run along; each through its own ACL user."""
    api = JobStore.from_url(acl_redis["api"])
    token = api.users.create("carol")
    assert api.users.authenticate(token).name == "carol"
    job_id = api.create_job(name="acl", owner="carol", spec={"name": "acl"}, backend="local", solver="command")
    worker = JobStore.from_url(acl_redis["worker"])
    assert worker.get_job(job_id).owner == "carol"
    assert worker.get_run(job_id, "run-001").id == "run-001"
