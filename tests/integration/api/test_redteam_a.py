"""Red-team findings 2 and 3 (issue 15) replayed on the real engine over real HTTP: a job swaps its own log for
a symlink to /proc/self/cmdline, then its owner edits its inputs to another user's upload and the engine's
files. Neither reaches anything: the log routes refuse the symlink, the edit is refused by its fields."""

from __future__ import annotations

import pytest

from tests.resilience import record

from .test_api import current_run, upload, wait_doc

pytestmark = pytest.mark.integration

SWAP_LOG = "echo 'progress: 1/2'; rm -f output.log; ln -s /proc/self/cmdline output.log; echo 'progress: 2/2'"


def test_a_job_cannot_read_through_its_log_nor_edit_its_way_to_other_files(http, tokens, engine):
    alice, bob = http("alice"), http("bob")
    mine = upload(alice, "case", {"params.txt": "gain=1\n"})
    theirs = upload(bob, "secret", {"data.txt": "bob's data\n"})
    job = {"name": "swap-log", "desktop": {"enabled": False},
           "solver": {"name": "command", "inputs": [mine], "command": ["bash", "-c", SWAP_LOG]}}
    reply = alice.post("/jobs", json={"spec": job})
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["id"]
    wait_doc(alice, job_id, lambda d: current_run(d)["state"] == "COMPLETED", "the run completed", timeout=90)
    cases = passed = 0

    # finding 3: the log is now a symlink; neither log route follows it
    page = alice.get(f"/jobs/{job_id}/logs")
    cases += 1
    passed += page.status_code == 400 and "symlink" in page.json()["error"] and "uvicorn" not in page.text
    with alice.stream("GET", f"/jobs/{job_id}/logs/stream") as stream:
        body = stream.read().decode()
    cases += 1
    passed += "event: error" in body and "symlink" in body and "python" not in body

    # finding 2: an edit naming bob's upload and the engine's own file is refused; nothing changes
    home = engine.settings.root
    owner_uploads = home / "uploads" / tokens["bob"][0]
    bob_path = next(p for p in owner_uploads.rglob("data.txt"))
    for target in (str(bob_path), str(home / "stack.json"), f"../{tokens['bob'][0]}/{theirs}"):
        edit = alice.post(f"/jobs/{job_id}/edit", json={"set": [f"solver.inputs=[{mine}, {target}]"]})
        cases += 1
        passed += edit.status_code == 422 and [p["field"] for p in edit.json()["problems"]] == ["solver.inputs.1"]
    assert alice.get(f"/jobs/{job_id}/history").json()["revision"] == 1
    assert alice.post(f"/jobs/{job_id}/terminate").status_code == 200
    record("red team/findings 2, 3", cases, passed, "log symlink refused on both log routes; edits naming "
                                                   "another user's upload or the engine's files refused")
    assert passed == cases
