"""The Redis ACL users without a Redis: what each role is granted, the ACL file, `e2e admin redis-acl`, and how a
process finds its role's URL (stack.json, a URLs file) while no engine variable carries a password."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from orchestrator.cli.admin import redis_acl
from orchestrator.model.errors import StackError, UserError
from orchestrator.model.settings import Settings
from orchestrator.store import acl
from orchestrator.worker.stack import Stack, acl_grants


def rules(text: str) -> dict[str, list[str]]:
    return {line.split()[1]: line.split()[2:] for line in text.splitlines()}


def test_the_acl_file_holds_hashes_only_and_the_admin_needs_its_password():
    passwords = acl.new_passwords()
    text = acl.acl_file(acl_grants(), passwords)
    assert not any(password in text for password in passwords.values())
    users = rules(text)
    assert set(users) == {"default", *acl.ROLES}
    assert "nopass" not in text and users["default"][0] == "on" and users["default"][1].startswith("#")
    for role in acl.ROLES:  # each starts from nothing and adds only what it names
        assert users[role][:2] == ["reset", "on"] and "-@all" in users[role] and "+@all" not in users[role]
        assert "~*" not in users[role] and "&*" not in users[role] and "allkeys" not in users[role]


def test_only_the_api_reaches_users_and_tokens_and_beat_no_engine_key():
    users = rules(acl.acl_file(acl_grants(), acl.new_passwords()))
    for family in ("~e2e:account:*", "~e2e:token:*", "~e2e:account-tokens:*"):
        assert family in users["api"] and family not in users["worker"] and family not in users["beat"]
    for engine_only in ("~e2e:lock:*", "~e2e:sync:*", "~e2e:leftovers"):
        assert engine_only in users["worker"] and engine_only not in users["api"]
    assert "~unacked*" in users["api"] and "~unacked*" in users["worker"] and "~unacked*" not in users["beat"]
    assert not [r for r in users["beat"] if r.startswith("~e2e:")] and "~e2e.reconcile*" in users["beat"]
    assert users["health"] == ["reset", "on", users["health"][2], "-@all", "+ping"]


def test_redis_acl_command_writes_each_roles_url_0600_and_prints_no_password(tmp_path, capsys):
    redis_acl(host="redis", port=6379, db=0, env_dir=tmp_path / "env", urls_file=tmp_path / "urls.json")
    printed = capsys.readouterr().out
    urls = json.loads((tmp_path / "urls.json").read_text())["redis_urls"]
    assert set(urls) == {"admin", *acl.ROLES}
    for role, url in urls.items():
        where = urlsplit(url)
        assert (where.username, where.hostname, where.port, where.path) == (
            "default" if role == "admin" else role, "redis", 6379, "/0")
        assert where.password and where.password not in printed
        env_file = tmp_path / "env" / f"{role}.env"
        assert env_file.read_text().startswith(f"E2E_REDIS_URL={url}\n")
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "urls.json").stat().st_mode) == 0o600
    assert set(rules(printed)) == {"default", *acl.ROLES}


@pytest.mark.parametrize(("options", "field"), [({}, "--env-dir"), ({"port": 0}, "--port"), ({"db": -1}, "--db")])
def test_redis_acl_command_refuses_bad_options_and_writes_nothing(tmp_path, capsys, options, field):
    values = {"host": "redis", "port": 6379, "db": 0, "env_dir": None, "urls_file": None,
              **({} if not options else {"urls_file": tmp_path / "urls.json"}), **options}
    with pytest.raises(UserError, match=field):
        redis_acl(**values)
    assert capsys.readouterr().out == "" and not list(tmp_path.iterdir())


def test_a_process_finds_its_roles_url_in_stack_json(tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps({"redis_url": "redis://default:a@h:1/0", "redis_urls": {
        "admin": "redis://default:a@h:1/0", "api": "redis://api:b@h:1/0", "worker": "redis://worker:c@h:1/0"}}))
    assert Settings(home=tmp_path).resolved_redis_url() == "redis://api:b@h:1/0"  # the CLI and API
    assert Settings(home=tmp_path, redis_role="worker").resolved_redis_url() == "redis://worker:c@h:1/0"
    with pytest.raises(StackError, match="'beat' role"):
        Settings(home=tmp_path, redis_role="beat").resolved_redis_url()
    (tmp_path / "stack.json").write_text(json.dumps({"redis_url": "redis://:old@h:1/0"}))  # an older engine's
    assert Settings(home=tmp_path, redis_role="beat").resolved_redis_url() == "redis://:old@h:1/0"


def test_a_urls_file_names_each_roles_url_and_a_missing_one_is_a_clear_error(tmp_path):
    urls = tmp_path / "urls.json"
    urls.write_text(json.dumps({"redis_urls": {"api": "redis://api:b@h:1/0"}}))
    assert Settings(home=tmp_path, redis_urls_file=urls).resolved_redis_url() == "redis://api:b@h:1/0"
    with pytest.raises(StackError, match="'worker' role"):
        Settings(home=tmp_path, redis_urls_file=urls, redis_role="worker").resolved_redis_url()
    with pytest.raises(StackError, match="E2E_REDIS_URLS_FILE"):
        Settings(home=tmp_path, redis_urls_file=tmp_path / "none.json").resolved_redis_url()


def test_the_stacks_children_get_a_role_and_no_redis_url(tmp_path, monkeypatch):
    monkeypatch.setenv("E2E_REDIS_URL", "redis://default:Pw0rdQ7@h:1/0")  # a parent's leftover never leaks
    stack = Stack(Settings(home=tmp_path, redis_url=None))
    env = stack._env("redis://default:Pw0rdQ7@h:1/0", "worker")
    assert env["E2E_REDIS_ROLE"] == "worker" and "E2E_REDIS_URL" not in env and "REDIS_URL" not in env
    assert not any("Pw0rdQ7" in value for value in env.values())
    urls = tmp_path / "urls.json"
    external = Stack(Settings(home=tmp_path, redis_url="redis://api:x@h:1/0", redis_urls_file=urls))
    env = external._env("redis://api:x@h:1/0", "beat")
    assert env["E2E_REDIS_URLS_FILE"] == str(urls) and "E2E_REDIS_URL" not in env
    single = Stack(Settings(home=tmp_path, redis_url="redis://h:1/0"))
    assert single._env("redis://h:1/0", "worker")["E2E_REDIS_URL"] == "redis://h:1/0"


def test_store_from_url_logs_in_as_the_urls_user():
    from orchestrator.store import JobStore

    store = JobStore.from_url("redis://worker:p%40ss@127.0.0.1:1/3")
    kwargs = store._r.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("worker", "p@ss", 3)


def test_engine_only_folders_are_made_0700_and_home_0711(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "logs").mkdir(mode=0o755)  # as an older engine left it
    Stack(Settings(home=home))._dir("logs")
    assert stat.S_IMODE(home.stat().st_mode) == 0o711
    assert stat.S_IMODE((home / "logs").stat().st_mode) == 0o700
    assert Path(home / "logs").is_dir()
