"""The API served for real: uvicorn on a free port over the session's engine, and one HTTP client per user."""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest
import uvicorn

from orchestrator.api.app import create_app
from orchestrator.cli.admin import proxy_options
from orchestrator.worker.stack import free_port
from tests.conftest import JOB_ACCOUNT
from tests.integration.conftest import port_free


def api_os_user(role: str = "") -> str:
    """The OS account an API test user's jobs run as: a root engine needs one (alice and bob their own)."""
    if os.geteuid() != 0:
        return ""
    return role if role in ("alice", "bob") else JOB_ACCOUNT


class Served:
    """uvicorn serving the API in this process, on a background thread."""

    def __init__(self, settings) -> None:
        # the engine's own API address when it is free: desktops' panels and terminals reach this API there
        self.port = settings.api_port if port_free(settings.api_port) else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, **proxy_options(settings))  # as `e2e serve` runs it
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def api(engine):
    served = Served(engine.settings)
    yield served
    served.stop()


@pytest.fixture(scope="session")
def tokens(engine):
    """Tokens of three API users: alice and bob (plain users) and root (an admin); names unique per session."""
    users = engine.client.store.users
    suffix = str(int(time.time() * 1000) % 10**8)
    names = {"alice": f"alice{suffix}", "bob": f"bob{suffix}", "root": f"root{suffix}"}
    return {role: (name, users.create(name, admin=role == "root", os_user=api_os_user(role)))
            for role, name in names.items()}


@pytest.fixture
def http(api, tokens):
    """http(role) -> an httpx client authenticated as that user; closed after the test."""
    opened = []

    def make(role: str | None = None, token: str | None = None) -> httpx.Client:
        headers = {}
        if role is not None or token is not None:
            headers["Authorization"] = f"Bearer {token or tokens[role][1]}"
        client = httpx.Client(base_url=api.url + "/api/v1", headers=headers, timeout=30)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()
