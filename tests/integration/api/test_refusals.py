"""Hardening through the API's real entry points: revoked and unknown tokens, other users' job ids, admin-only
calls, and malformed or oversized bodies on every endpoint that takes one. Each refusal is refused (never a
5xx) and recorded; the suite reports one row to the resilience table."""

from __future__ import annotations

import json

import pytest

from tests.resilience import record

from .test_api import current_run, spec, upload, wait_doc

pytestmark = pytest.mark.integration

JOB_ROUTES = [("GET", ""), ("GET", "/history"), ("GET", "/events.json"), ("GET", "/events"), ("GET", "/logs"),
              ("GET", "/logs/stream"), ("GET", "/files"), ("GET", "/files/output.log"), ("GET", "/archive"),
              ("GET", "/desktop"), ("POST", "/pause"), ("POST", "/freeze"), ("POST", "/resume"),
              ("POST", "/restart"), ("POST", "/rerun"), ("POST", "/terminate"), ("POST", "/edit")]
BODY_ROUTES = [("POST", "/jobs"), ("POST", "/jobs/{job}/pause"), ("POST", "/jobs/{job}/edit"), ("POST", "/keys"),
               ("PUT", "/access"), ("POST", "/nodes/node-01/drain"), ("POST", "/uploads")]
NASTY = [b"", b"{", b"null", b"[]", b'"x"', b"0", b"\x00\xff\xfe", json.dumps({"spec": "x" * 100_000}).encode(),
         b"[" * 5000 + b"]" * 5000, json.dumps({"set": [1, 2], "files": {"../x": None}}).encode(),
         json.dumps({"spec": {"name": "a", "solver": {"name": "command", "command": [["nested"]]}}}).encode(),
         json.dumps({"rules": ["0.0.0.0/-1"], "key": "\u202essh-ed25519 AAAA"}).encode(),
         json.dumps({"freeze": "yes please", "reason": {"a": 1}}).encode(), b"x" * (3 << 20)]


def test_refusals_are_refused_and_recorded(http, tokens, engine):
    alice, bob, root = http("alice"), http("bob"), http("root")
    inputs = upload(alice, "case", {"params.txt": "gain=1\n"})
    job_id = alice.post("/jobs", json={"spec": spec("refusals", f"{inputs}/params.txt", steps=300)}).json()["id"]
    wait_doc(alice, job_id, lambda d: current_run(d)["state"] == "RUNNING", "run running")
    before = len(root.get("/audit", params={"limit": 10000}).json())
    cases = passed = 0

    # a revoked token and an unknown one: 401 on every route, each one in the audit trail
    users = engine.client.store.users
    revoked = users.issue(tokens["alice"][0], "to revoke")
    users.revoke(revoked)
    for token in (revoked, "e2e_never-issued"):
        client = http(token=token)
        for method, path in JOB_ROUTES:
            cases += 1
            passed += client.request(method, f"/jobs/{job_id}{path}").status_code == 401
    # another user's job id: 404 on every route, exactly like a job that does not exist
    for method, path in JOB_ROUTES:
        cases += 1
        reply = bob.request(method, f"/jobs/{job_id}{path}", json={} if method == "POST" else None)
        passed += reply.status_code == 404 and reply.json()["error"] == f"no job {job_id!r}"
    # admin-only calls from a plain user
    for method, path in [("GET", "/audit"), ("POST", "/nodes/node-01/drain"), ("POST", "/nodes/node-01/undrain")]:
        cases += 1
        passed += bob.request(method, path).status_code == 403
    refusals = cases
    trail = root.get("/audit", params={"limit": 10000}).json()
    recorded = len(trail) - before
    job_events = [e for e in alice.get(f"/jobs/{job_id}/events.json").json() if e["kind"] == "access.refused"]
    assert passed == cases, f"{cases - passed} of {cases} refusals were not refused as they should be"
    assert recorded == refusals, f"{refusals} refusals, {recorded} in the audit trail"
    assert len(job_events) == len(JOB_ROUTES)
    secrets = {revoked, tokens["bob"][1], tokens["alice"][1]}
    assert not any(s in json.dumps(trail) + json.dumps(job_events) for s in secrets)

    # malformed and oversized bodies on every route that takes one: never a 5xx, always a JSON error
    server_errors, bad_json = [], []
    for method, path in BODY_ROUTES:
        for body in NASTY:
            cases += 1
            reply = root.request(method, path.format(job=job_id), content=body,
                                 headers={"Content-Type": "application/json"})
            if reply.status_code >= 500:
                server_errors.append((method, path, body[:40], reply.status_code))
            elif reply.status_code >= 400 and "error" not in reply.json():
                bad_json.append((method, path, body[:40]))
            else:
                passed += 1
    assert not server_errors and not bad_json, (server_errors, bad_json)
    assert alice.post(f"/jobs/{job_id}/terminate").status_code == 200
    record("access/api", cases, passed, f"{refusals} refusals recorded as events, 0 tokens in them; "
                                        f"{len(BODY_ROUTES) * len(NASTY)} malformed bodies, 0 5xx",
           refusals=refusals, recorded=recorded, server_errors=len(server_errors))
