"""A file put into a running job's work folder through the API (and `e2e put` through it): written as the job's
account, carried by the live sync into the run directory, where the running solver reads it. Another user, a
path outside work/, a batch job without a desktop (no sync) and a terminated job are refused, changing nothing."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.model.paths import JobPaths
from tests.integration.conftest import texts, wait_for

pytestmark = pytest.mark.integration

# Each step the "solver" copies params.txt (if there is one yet) into a new output.
SOLVER = ('mkdir -p out; for i in $(seq -w 1 300); do cat params.txt > out/step-$i.txt 2>/dev/null || '
          'echo none > out/step-$i.txt; echo "progress: $i/300"; sleep 0.2; done')


def _spec(name: str, desktop: bool) -> dict:
    return {"name": name, "desktop": {"enabled": desktop},
            "solver": {"name": "command", "command": ["bash", "-c", SOLVER]}}


def test_a_file_put_into_the_work_folder_reaches_the_running_solver(engine, api, tokens, http, tmp_path):
    alice, bob = http("alice"), http("bob")
    job_id = alice.post("/jobs", json={"spec": _spec("put", True)}).json()["id"]
    paths = JobPaths.for_job(engine.settings.root, job_id)
    run_dir, work = paths.run("run-001").root, paths.work_of("run-001")
    wait_for(lambda: (work / "out").is_dir(), 60, "the run's outputs in the work folder")

    # refused, changing nothing: another user, outside work/, an escape, a temp name
    assert bob.put(f"/jobs/{job_id}/files/work/run-001/params.txt", content=b"x").status_code == 404
    for bad, code in (("runs/run-001/params.txt", 400), ("work/../../etc/x", 400),
                      ("work/run-001/params.txt.e2e-sync.tmp", 400)):
        reply = alice.put(f"/jobs/{job_id}/files/{bad}", content=b"value=9\n")
        assert reply.status_code in (code, 404, 422), (bad, reply.status_code, reply.text)
        assert "Traceback" not in reply.text
    assert not (run_dir / "params.txt").exists()

    put = alice.put(f"/jobs/{job_id}/files/work/run-001/params.txt", content=b"value=2\n")
    assert put.status_code == 201, put.text
    assert put.json() == {"job": job_id, "path": "work/run-001/params.txt", "bytes": 8}
    owner = alice.get(f"/jobs/{job_id}").json()["account"]
    if os.geteuid() == 0 and owner:
        assert (work / "params.txt").stat().st_uid == pwd.getpwnam(owner).pw_uid  # written as the account
    wait_for(lambda: "value=2\n" in texts(run_dir / "out"), 30, "an output written from the put file")
    events = alice.get(f"/jobs/{job_id}/events.json").json()
    assert any(e["data"].get("action") == "file-put" for e in events)

    # `e2e put` through the API (--server), with the run's folder as the default place
    local = tmp_path / "params.txt"
    local.write_text("value=3\n")
    env = {**os.environ, "E2E_SERVER": api.url, "E2E_TOKEN": tokens["alice"][1]}
    env.pop("E2E_HOME", None)
    done = subprocess.run([str(Path(sys.executable).parent / "e2e"), "put", str(local), job_id], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "work/run-001/params.txt" in done.stdout
    wait_for(lambda: "value=3\n" in texts(run_dir / "out"), 30, "an output written from the CLI's put")

    # a batch job (no desktop: no live sync) and a terminated job are refused
    batch = alice.post("/jobs", json={"spec": _spec("put-batch", False)}).json()["id"]
    refused = alice.put(f"/jobs/{batch}/files/work/run-001/params.txt", content=b"value=4\n")
    assert refused.status_code == 409 and "no desktop" in refused.text
    for job in (job_id, batch):
        alice.post(f"/jobs/{job}/terminate")
    wait_for(lambda: alice.get(f"/jobs/{job_id}").json()["state"] == "TERMINATED", 60, "terminated")
    late = alice.put(f"/jobs/{job_id}/files/work/run-001/params.txt", content=b"value=5\n")
    assert late.status_code == 409 and "TERMINATED" in late.text
