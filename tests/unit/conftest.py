"""Shared fixtures of the unit suite: an in-memory Redis (fakeredis, with Lua) and a JobStore on it."""

from __future__ import annotations

import fakeredis
import pytest

from orchestrator.store.jobs import JobStore


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    """One in-memory Redis server; several clients may share it (as processes share a real one)."""
    return fakeredis.FakeServer()


@pytest.fixture
def make_store(fake_server):
    """Build a JobStore with its own client connected to the shared fake server."""

    def _make() -> JobStore:
        return JobStore(fakeredis.FakeRedis(server=fake_server, decode_responses=True))

    return _make


@pytest.fixture
def store(make_store) -> JobStore:
    return make_store()
