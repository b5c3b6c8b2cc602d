"""docker-compose.yml checked without a Docker engine: its services, every E2E_* variable against the Settings
model, the entry points its commands name, the files it builds from and mounts; and README's variable table
against the model."""

from __future__ import annotations

import importlib
import os
import runpy
from pathlib import Path

import pytest
import typer
import yaml
from celery import Celery

from orchestrator.cluster.inventory import load_inventory
from orchestrator.model.settings import Settings
from orchestrator.worker.celery_app import JOBS_QUEUE, RECONCILE_QUEUE

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SERVICES = ("api", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_the_expected_services_are_there(compose):
    assert {"redis", "api", "worker", "beat", "headnode"} <= set(compose["services"])


def test_redis_keeps_an_append_only_file(compose):
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"  # never drop a job's keys
    assert any(volume.endswith(":/data") for volume in compose["services"]["redis"]["volumes"])


@pytest.mark.parametrize("name", ENGINE_SERVICES)
def test_every_e2e_variable_is_a_setting_and_parses(compose, name, monkeypatch):
    env = environment(compose["services"][name])
    fields = {f"E2E_{field.upper()}" for field in Settings.model_fields}
    unknown = [key for key in env if key.startswith("E2E_") and key not in fields]
    assert not unknown, f"{name}: not Settings fields: {unknown}"
    for key in [k for k in os.environ if k.startswith("E2E_") or k == "REDIS_URL"]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # raises on any value the model refuses
    assert str(settings.home) == "/var/lib/e2e"
    assert settings.redis_url is None  # the role's URL, with its password, comes from the service's env_file


def test_every_engine_process_shares_the_state_directory_and_redis(compose):
    homes = set()
    for name in ENGINE_SERVICES:
        service = compose["services"][name]
        assert "redis" in service["depends_on"]
        home = environment(service)["E2E_HOME"]
        assert any(str(v).endswith(f":{home}") for v in service["volumes"]), f"{name}: {home} is not a volume"
        homes.add(next(str(v).split(":")[0] for v in service["volumes"] if str(v).endswith(f":{home}")))
    node_mounts = [str(v).split(":")[0] for v in compose["services"]["headnode"]["volumes"]]
    assert len(homes) == 1 and homes <= set(node_mounts)  # the node shares it too (shared_storage: true)


def test_the_api_listens_on_every_interface(compose):
    command = compose["services"]["api"]["command"]
    assert command[:2] == ["e2e", "serve"] and command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    assert any(str(p).endswith(f":{port}") for p in compose["services"]["api"]["ports"])


def test_e2e_commands_are_real_subcommands_with_real_options(compose):
    from orchestrator.cli.main import app

    cli = typer.main.get_command(app)
    for service in compose["services"].values():
        command = service.get("command") or []
        if command[:1] == ["e2e"]:
            sub = cli.commands[command[1]]  # KeyError: no such subcommand
            sub.make_context(command[1], list(command[2:]))  # a usage error on an unknown option or bad value


def test_celery_commands_name_the_engine_app_and_its_queues(compose):
    for name in ("worker", "beat"):
        command = compose["services"][name]["command"]
        assert command[0] == "celery"
        module, attr = command[command.index("-A") + 1].split(":")
        assert isinstance(getattr(importlib.import_module(module), attr), Celery)
    worker = compose["services"]["worker"]
    queues = worker["command"][worker["command"].index("-Q") + 1].split(",")
    assert set(queues) == {JOBS_QUEUE, RECONCILE_QUEUE}
    assert worker["command"][worker["command"].index("-c") + 1] == environment(worker)["E2E_WORKER_CONCURRENCY"]
    schedule = compose["services"]["beat"]["command"]
    assert schedule[schedule.index("-s") + 1].startswith(environment(compose["services"]["beat"])["E2E_HOME"])


def test_dockerfiles_and_mounted_files_exist(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
            for line in dockerfile.read_text().splitlines():  # COPY sources exist in the context
                if line.startswith("COPY "):
                    for source in line.split()[1:-1]:
                        assert (context / source).exists(), f"{dockerfile.name}: COPY {source} missing"
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith(("./deploy/keys", "./deploy/redis/")):
                continue  # made by the administrator (deploy/keys, deploy/redis READMEs), never committed
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which does not exist"


def test_the_mounted_inventory_is_valid_and_names_the_headnode(compose):
    inventory = load_inventory(ROOT / "deploy" / "inventory.yaml")
    assert [node.address for node in inventory.nodes] == ["headnode"]
    mounted = environment(compose["services"]["worker"])["E2E_INVENTORY"]
    assert any(str(v).endswith(f":{mounted}:ro") for v in compose["services"]["worker"]["volumes"])


def test_readme_lists_every_setting_as_the_model_describes_it():
    table = runpy.run_path(str(ROOT / "deploy" / "settings_table.py"))["table"]()
    readme = (ROOT / "README.md").read_text()
    assert table in readme, "README's variable table is stale: paste `python deploy/settings_table.py` into it"
    for field in Settings.model_fields:
        assert f"`E2E_{field.upper()}`" in readme


def test_a_bad_option_in_an_e2e_command_would_be_caught():
    """The subcommand check above can fail: an unknown option is a usage error (typer's vendored click)."""
    from orchestrator.cli.main import app

    with pytest.raises(Exception, match="No such option"):
        typer.main.get_command(app).commands["serve"].make_context("serve", ["--no-such-option"])


ROLE_OF = {"api": "api", "worker": "worker", "beat": "beat", "redis": "health"}


def networks(service: dict) -> set[str]:
    found = service.get("networks") or ["default"]
    return set(found if isinstance(found, list) else found.keys())


def test_redis_requires_a_login_and_each_service_has_its_own_role(compose):
    redis_service = compose["services"]["redis"]
    command = redis_service["command"]
    aclfile = command[command.index("--aclfile") + 1]
    assert f"./deploy/redis/users.acl:{aclfile}:ro" in redis_service["volumes"]
    assert "--requirepass" not in command and "--protected-mode" not in command and "ports" not in redis_service
    assert "--user health" in " ".join(redis_service["healthcheck"]["test"])
    for name, role in ROLE_OF.items():  # each service reads only its own role's password
        assert compose["services"][name]["env_file"] == [f"deploy/redis/{role}.env"], name
    for name, service in compose["services"].items():  # and no URL without a credential anywhere
        env = environment(service)
        assert "E2E_REDIS_URL" not in env and "REDIS_URL" not in env, name
    assert "headnode" not in ROLE_OF and "env_file" not in compose["services"]["headnode"]


def test_the_generated_acl_file_has_no_open_user():
    """What `e2e admin redis-acl` (the command the compose header names) writes: every user has a password
    (hashed), none is `nopass`, and the default user is the password-only admin."""
    from orchestrator.cli.main import app
    from orchestrator.store import acl
    from orchestrator.worker.stack import acl_grants

    header = (ROOT / "docker-compose.yml").read_text()
    line = next(row for row in header.splitlines() if "e2e admin redis-acl" in row)
    argv = line.lstrip("# ").split(">")[0].split()
    cli = typer.main.get_command(app)
    cli.commands["admin"].commands["redis-acl"].make_context("redis-acl", argv[3:])  # a real command and options
    assert "> deploy/redis/users.acl" in line
    text = acl.acl_file(acl_grants(), acl.new_passwords())
    assert "nopass" not in text
    assert all(" on #" in row for row in text.splitlines())
    assert text.startswith("user default on #")


def test_redis_is_on_the_engine_network_only_and_the_nodes_cannot_reach_it(compose):
    services = compose["services"]
    assert networks(services["redis"]) == {"engine"}
    assert compose["networks"]["engine"].get("internal") is True
    assert "engine" not in networks(services["headnode"])
    for name in ("api", "worker", "beat"):
        assert "engine" in networks(services[name]), name
    reach_nodes = {name for name, service in services.items() if "nodes" in networks(service)}
    assert reach_nodes == {"worker", "headnode"}
    # nothing shares a network with both Redis and the head node except the worker
    for name, service in services.items():
        if name not in ("worker",):
            assert not ({"engine"} <= networks(service) and networks(service) & networks(services["headnode"]))


def test_the_engines_private_key_is_mounted_into_the_worker_only(compose):
    for name, service in compose["services"].items():
        key_mounts = [str(v) for v in service.get("volumes") or [] if "deploy/keys" in str(v)]
        if name == "worker":
            assert key_mounts == ["./deploy/keys:/etc/e2e/keys:ro"]
        elif name == "headnode":
            assert key_mounts and all(m.split(":")[0].endswith(".pub") for m in key_mounts), key_mounts
        else:
            assert not key_mounts, f"{name} mounts {key_mounts}"
