"""The API's edges without a server: tokens stored only hashed, revocation, user names, rate and body limits."""

from __future__ import annotations

import fakeredis
import pytest
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.api.users import hash_token
from orchestrator.model.errors import NotFound, UserError
from orchestrator.model.settings import Settings
from orchestrator.store.jobs import JobStore


@pytest.fixture
def store():
    return JobStore(fakeredis.FakeRedis(decode_responses=True))


def app_client(store, tmp_path, **settings) -> TestClient:
    values = dict(home=tmp_path, redis_url="redis://127.0.0.1:1/0", **settings)
    return TestClient(create_app(Settings(**values), store))


def test_tokens_are_stored_hashed_and_revocable(store):
    users = store.users
    token = users.create("alice")
    dump = {key: store._r.dump(key) for key in store._r.keys("*")}
    assert token not in repr(dump) and hash_token(token) in repr(list(dump))
    assert users.authenticate(token).name == "alice"
    second = users.issue("alice", "laptop")
    assert users.revoke(token) == "alice"
    assert users.authenticate(token) is None and users.authenticate(second).name == "alice"
    assert users.revoke_all("alice") == 1 and users.authenticate(second) is None
    with pytest.raises(NotFound):
        users.revoke(token)
    assert users.list() == [{"name": "alice", "admin": False, "os_user": "", "tokens": 0}]


@pytest.mark.parametrize("name", ["", "Alice", "a b", "x" * 40, "-dash", "semi;colon"])
def test_user_names_are_checked(store, name):
    with pytest.raises(UserError, match="user name"):
        store.users.create(name)


def test_a_user_is_created_once(store):
    users = store.users
    users.create("bob")
    with pytest.raises(UserError, match="exists already"):
        users.create("bob", admin=True)
    assert users.get("bob").admin is False


def test_requests_over_the_rate_are_refused_with_retry_after(store, tmp_path):
    token = store.users.create("alice")
    client = app_client(store, tmp_path, api_rate=0.5, api_burst=3)
    headers = {"Authorization": f"Bearer {token}"}
    codes = [client.get("/api/v1/me", headers=headers).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    refused = client.get("/api/v1/me", headers=headers)
    assert refused.json()["error"].startswith("too many requests") and int(refused.headers["retry-after"]) >= 1
    other = store.users.create("bob")  # the limit is per user
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_bodies_over_the_limit_are_refused_before_they_are_read(store, tmp_path):
    token = store.users.create("alice")
    client = app_client(store, tmp_path, api_max_body=1000)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    declared = client.post("/api/v1/jobs", content=b"{" + b" " * 2000 + b"}", headers=headers)
    assert declared.status_code == 413 and "1000 bytes" in declared.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 200

    streamed = client.post("/api/v1/jobs", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    small = client.post("/api/v1/jobs", json={"spec": {}}, headers=headers)
    assert small.status_code == 422 and {p["field"] for p in small.json()["problems"]} >= {"name", "solver"}


def test_unknown_routes_and_methods_answer_json(store, tmp_path):
    client = app_client(store, tmp_path)
    assert client.get("/api/v1/nothing-here").json() == {"error": "Not Found"}
    assert client.delete("/api/v1/jobs").status_code == 405
