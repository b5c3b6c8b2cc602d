"""The monitor over real HTTP on a real engine (no browser): login cookie, CSRF header, usage from real runs,
/metrics against the store, workers answering the control API, task counters kept by the real worker."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.model.states import JOB_TERMINAL
from tests.integration.api.test_api import current_run, spec, upload, wait_doc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bob_job(api, tokens):
    """A short run of bob's that completes, then a restart (attempt 2) that completes too."""
    bob = httpx.Client(base_url=api.url + "/api/v1", headers={"Authorization": f"Bearer {tokens['bob'][1]}"})
    inputs = upload(bob, "short", {"params.txt": "gain=1\n"})
    job_id = bob.post("/jobs", json={"spec": spec("short", f"{inputs}/params.txt", steps=10)}).json()["id"]
    wait_doc(bob, job_id, lambda d: current_run(d)["state"] == "COMPLETED", "bob's run completed")
    assert bob.post(f"/jobs/{job_id}/restart").status_code == 200
    wait_doc(bob, job_id, lambda d: current_run(d)["state"] == "COMPLETED" and current_run(d)["attempt"] == 2,
             "the restarted attempt completed")
    yield job_id
    bob.close()


def browser(api) -> httpx.Client:
    return httpx.Client(base_url=api.url, follow_redirects=False, timeout=30)


def test_login_sets_an_httponly_strict_cookie_and_pages_need_it(api, tokens):
    with browser(api) as web:
        assert web.get("/ui/").headers["location"].startswith("/ui/login")
        refused = web.post("/ui/login", data={"token": "e2e_nope", "next": "/ui/"})
        assert refused.status_code == 401 and "Unknown or revoked token" in refused.text
        reply = web.post("/ui/login", data={"token": tokens["alice"][1], "next": "https://evil.example/"})
        assert reply.status_code == 303 and reply.headers["location"] == "/ui/"  # no open redirect
        cookie = reply.headers["set-cookie"].lower()
        assert "e2e_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        page = web.get("/ui/")
        assert page.status_code == 200 and tokens["alice"][0] in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert web.get("/ui/workers").status_code == 403   # alice is no admin
        web.post("/ui/logout")
        assert web.get("/ui/").status_code == 303


def test_cookie_posts_need_the_requested_with_header_bearer_posts_do_not(api, tokens, http):
    with browser(api) as web:
        web.post("/ui/login", data={"token": tokens["bob"][1]})
        forged = web.post("/ui/submit", json={"text": "name: x"})          # what a cross-site form could send
        assert forged.status_code == 403 and "X-Requested-With" in forged.json()["error"]
        assert web.get("/api/v1/me").json()["name"] == tokens["bob"][0]     # reads need no header
        bad = web.post("/ui/submit", json={"text": "name: [unclosed"}, headers={"X-Requested-With": "t"})
        assert bad.status_code == 422 and bad.json()["problems"][0]["field"] == "text"
        invalid = web.post("/ui/submit", json={"text": "name: x\nsolver: {name: nosuch}"},
                           headers={"X-Requested-With": "t"})
        assert invalid.status_code == 422 and "solver" in invalid.text
    assert http("bob").post("/jobs/nosuch/pause").status_code == 404      # a bearer POST goes through


def test_usage_charges_every_attempt_and_users_see_only_their_own(http, bob_job, tokens):
    doc = http("bob").get(f"/jobs/{bob_job}").json()
    run = current_run(doc)
    mine = http("bob").get("/usage").json()
    assert {j["owner"] for j in mine["jobs"]} == {tokens["bob"][0]}
    row = next(j for j in mine["jobs"] if j["id"] == bob_job)
    assert [(a["run"], a["attempt"]) for a in row["attempts"]] == [("run-001", 1), ("run-001", 2)]
    # the current attempt's interval is the run record's; the job has one node with one core
    assert row["attempts"][1]["seconds"] == pytest.approx(run["ended_at"] - run["started_at"], abs=1e-3)
    assert row["attempts"][0]["ended_at"] <= row["attempts"][1]["started_at"]
    assert row["core_hours"] == pytest.approx(sum(a["seconds"] for a in row["attempts"]) / 3600, abs=1e-5)
    assert row["core_hours"] > 0 and row["desktop_hours"] == 0
    everyone = http("root").get("/usage").json()
    assert bob_job in {j["id"] for j in everyone["jobs"]}
    assert tokens["bob"][0] in everyone["users"]
    asked = http("alice").get("/usage", params={"owner": tokens["bob"][0]}).json()  # a plain user's owner= is ignored
    assert bob_job not in {j["id"] for j in asked["jobs"]} and set(asked["users"]) <= {tokens["alice"][0]}


def test_metrics_parse_and_match_the_store(api, engine, bob_job):
    text = httpx.get(api.url + "/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    store = engine.client.store
    jobs = store.list_jobs(10_000)
    for state in ("QUEUED", "UP", "TERMINATED"):
        assert samples[("e2e_jobs", (("state", state),))] == sum(1 for j in jobs if j.state.value == state)
    active_runs = [r for j in jobs if j.state not in JOB_TERMINAL for r in store.list_runs(j.id)]
    assert samples[("e2e_runs", (("state", "COMPLETED"),))] == sum(1 for r in active_runs
                                                                  if r.state.value == "COMPLETED")
    leases = store.leases("local")
    assert samples[("e2e_nodes", (("backend", "local"), ("state", "leased")))] == sum(1 for v in leases.values() if v)
    assert samples[("e2e_queued_jobs", ())] == len(store.queued_jobs())
    # bob's restart was applied: its latency is in the histogram
    assert samples[("e2e_control_latency_seconds_count", (("action", "restart"),))] >= 1
    # the real worker counted its tasks through the Celery signals
    counted = store.metrics.task_totals()
    assert counted["e2e.provision"]["succeeded"] >= 1 and counted["e2e.launch"]["succeeded"] >= 1  # bob's restart
    assert samples[("e2e_celery_tasks_total", (("outcome", "succeeded"), ("task", "e2e.launch")))] == \
        counted["e2e.launch"]["succeeded"]


def test_admins_see_workers_and_queues_others_are_refused(http):
    assert http("alice").get("/admin/workers").status_code == 403
    workers = http("root").get("/admin/workers").json()["workers"]
    assert workers and all(w["name"].startswith("e2e-") and "@" in w["name"] for w in workers)  # stack.py names
    assert all(w["concurrency"] for w in workers)
    queues = http("root").get("/admin/queues").json()
    assert set(queues["celery"]) == {"e2e.jobs", "e2e.reconcile"}
    assert any(t["task"] == "e2e.reconcile" and t["succeeded"] > 0 for t in queues["tasks"])


def test_a_quiet_event_stream_stays_open_through_its_keepalive(http, bob_job):
    """The job page keeps one event stream open; on a quiet job it must see a keepalive, not a dropped connection."""
    from orchestrator.api.streams import KEEPALIVE

    events = http("bob").get(f"/jobs/{bob_job}/events.json").json()
    lines = []
    with http("bob").stream("GET", f"/jobs/{bob_job}/events", params={"after": events[-1]["id"]},
                            timeout=KEEPALIVE + 15) as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith(": keepalive"):
                break
    assert lines[-1] == ": keepalive", lines[-5:]
