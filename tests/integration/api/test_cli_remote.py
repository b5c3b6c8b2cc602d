"""The CLI through the REST API (`e2e --server URL`, token from E2E_TOKEN), as a user on another machine
would run it: no Redis URL, no engine home; inputs are uploaded; errors are the API's, one line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .test_api import wait_doc

pytestmark = pytest.mark.integration

SOLVER = ("cat settings.txt; trap 'exit 0' TERM; "
          "for i in $(seq 1 400); do echo \"progress: $i/400\"; sleep 0.1 & wait $!; done")

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl remote@laptop"


def remote(api, token: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2E_", "REDIS_URL"))}
    env["E2E_HOME"] = "/nonexistent/e2e-home"  # nothing local: everything must go through the API
    if token is not None:
        env["E2E_TOKEN"] = token
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "--server", api.url, *args], env=env,
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"e2e {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_cli_drives_a_job_through_the_api(api, tokens, http, tmp_path):
    name, token = tokens["alice"]
    (tmp_path / "settings.txt").write_text("remote=yes\n")
    spec = tmp_path / "job.yaml"
    spec.write_text("name: remote-cli\ndesktop: {enabled: false}\nsolver:\n  name: command\n"
                    "  inputs: [settings.txt]\n"
                    f"  command: [bash, -c, {json.dumps(SOLVER)}]\n")
    job_id = remote(api, token, "submit", str(spec)).stdout.strip()
    status = json.loads(remote(api, token, "status", job_id, "--json").stdout)
    assert status["owner"] == name and status["id"] == job_id
    alice = http("alice")  # wait through the API itself: each CLI call is a whole process start
    wait_doc(alice, job_id, lambda d: d["runs_detail"][0]["state"] == "RUNNING" and d["runs_detail"][0].get("progress"),
             "run running")
    frozen = remote(api, token, "pause", job_id, "--freeze", "--json")
    assert frozen is not None and json.loads(frozen.stdout)["runs_detail"][0]["state"] == "FROZEN"
    assert "remote=yes" in remote(api, token, "logs", job_id).stdout  # the uploaded input reached the run
    # `logs --step` reaches the control surface through the API: a job with no pre-processing steps says so
    no_step = remote(api, token, "logs", job_id, "--step", "setFields", check=False)
    assert no_step.returncode == 2 and "has no step 'setFields'; its steps: none" in no_step.stderr
    remote(api, token, "resume", job_id)
    listing = remote(api, token, "ls").stdout
    assert job_id in listing and "RUNNING" in listing
    # another user's CLI cannot see the job; the error is one clear line
    other = remote(api, tokens["bob"][1], "status", job_id, check=False)
    assert other.returncode == 2 and other.stderr.strip() == f"error: no job {job_id!r}"
    no_desktop = remote(api, token, "desktop", job_id, check=False)
    assert no_desktop.returncode == 2 and "has no desktop" in no_desktop.stderr
    pub = tmp_path / "id.pub"
    pub.write_text(KEY + "\n")
    assert "ssh-ed25519 256 bits SHA256:" in remote(api, token, "keys", "add", str(pub)).stdout
    listed = json.loads(remote(api, token, "keys", "ls", "--json").stdout)
    assert [k["comment"] for k in listed] == ["remote@laptop"]
    remote(api, token, "keys", "rm", "remote@laptop")
    assert json.loads(remote(api, token, "keys", "ls", "--json").stdout) == []
    done = json.loads(remote(api, token, "terminate", job_id, "--wait", "--json").stdout)
    assert done["state"] == "TERMINATED"


def test_cli_without_a_valid_token_says_so(api, tmp_path):
    missing = remote(api, None, "ls", check=False)
    assert missing.returncode == 2 and "E2E_TOKEN" in missing.stderr
    revoked = remote(api, "e2e_revoked-or-never-issued", "ls", check=False)
    assert revoked.returncode == 2 and "token" in revoked.stderr and "Traceback" not in revoked.stderr
    local_only = remote(api, "e2e_x", "sweep", "ls", check=False)  # a command with no API route yet
    assert local_only.returncode == 2 and "engine's machine only" in local_only.stderr
