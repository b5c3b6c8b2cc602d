"""Uploads over the real API (uvicorn, the session's engine) with small caps: a gzip bomb is refused with 413
and leaves nothing, the per-user quota names the usage, an upload is listed and deleted by its owner only
(another user's id is a 404 like an id that does not exist), one a live job uses is kept (409), and the
CLI lists and removes uploads through --server."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import time

import httpx
import pytest

from tests.integration.conftest import wait_for

from .conftest import Served, api_os_user
from .test_cli_remote import remote

pytestmark = pytest.mark.integration
KIB = 1024


def tarball(name: str, size: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{name}/data.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def capped(engine):
    """The API over the same engine with a 1 MiB extraction cap and a 1.5 MiB quota per user."""
    served = Served(engine.settings.model_copy(update={"upload_max_extracted": 1024 * KIB,
                                                       "upload_quota": 1536 * KIB}))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def users(engine):
    suffix = str(int(time.time() * 1000) % 10**8)
    return {role: (f"up{role}{suffix}", engine.client.store.users.create(f"up{role}{suffix}",
                                                                          os_user=api_os_user()))
            for role in ("carol", "dave")}


def test_bomb_quota_listing_and_deletion(capped, users, engine):
    (carol_name, carol_token), (_, dave_token) = users["carol"], users["dave"]
    carol = httpx.Client(base_url=capped.url + "/api/v1", headers={"Authorization": f"Bearer {carol_token}"},
                         timeout=30)
    dave = httpx.Client(base_url=capped.url + "/api/v1", headers={"Authorization": f"Bearer {dave_token}"},
                        timeout=30)
    mine = engine.settings.root / "uploads" / carol_name
    incoming = engine.settings.root / "uploads" / ".incoming"

    # a ~64 KiB gzip bomb of 64 MiB: 413 on its header, nothing kept, and quickly
    bomb = tarball("bomb", 64 << 20)
    started = time.monotonic()
    refused = carol.post("/uploads", content=bomb, headers={"Content-Type": "application/gzip"})
    assert refused.status_code == 413 and "E2E_UPLOAD_MAX_EXTRACTED" in refused.json()["error"], refused.text
    assert time.monotonic() - started < 5 and len(bomb) < 100 * KIB
    assert not any(mine.iterdir()) and not any(incoming.iterdir())

    # the quota: 900 KiB fits, another 900 KiB does not, and the refusal names what carol holds
    made = carol.post("/uploads", content=tarball("case", 900 * KIB)).json()
    over = carol.post("/uploads", content=tarball("more", 900 * KIB))
    assert over.status_code == 413 and "quota" in over.json()["error"]
    assert "900.0 KiB of 1.5 MiB" in over.json()["error"] and "E2E_UPLOAD_QUOTA" in over.json()["error"]
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700 and stat.S_IMODE((mine / made["id"]).stat().st_mode) == 0o700

    listed = carol.get("/uploads").json()
    assert [(row["id"], row["bytes"], row["name"], row["used_by"]) for row in listed] == \
        [(made["id"], 900 * KIB, "case", [])]
    assert dave.get("/uploads").json() == []
    theirs, nothing = dave.delete(f"/uploads/{made['id']}"), dave.delete("/uploads/up-000000000000")
    assert theirs.status_code == nothing.status_code == 404
    assert theirs.json()["error"].replace(made["id"], "X") == nothing.json()["error"].replace("up-000000000000", "X")

    # a job not yet terminated that names the upload keeps it (its run copies the inputs when it starts)
    spec = {"name": "uses-upload", "desktop": {"enabled": False},
            "solver": {"name": "command", "command": ["sleep", "30"], "inputs": [f"{made['path']}/case"]}}
    job_id = carol.post("/jobs", json={"spec": spec}).json()["id"]
    kept = carol.delete(f"/uploads/{made['id']}")
    assert kept.status_code == 409 and job_id in kept.json()["error"]
    assert carol.get("/uploads").json()[0]["used_by"] == [job_id]
    carol.post(f"/jobs/{job_id}/terminate")
    wait_for(lambda: carol.get(f"/jobs/{job_id}").json()["state"] == "TERMINATED", 60, "job terminated", poll=0.2)

    # the CLI through --server: list, then remove; the quota is free again
    assert [row["id"] for row in json.loads(remote(capped, carol_token, "uploads", "ls", "--json").stdout)] == \
        [made["id"]]
    assert f"removed {made['id']}" in remote(capped, carol_token, "uploads", "rm", made["id"]).stdout
    assert carol.get("/uploads").json() == []
    assert not (mine / made["id"]).exists()
    assert carol.post("/uploads", content=tarball("more", 900 * KIB)).status_code == 201
    carol.close()
    dave.close()
