"""Notifications on a real engine (Redis, Celery worker and beat): a run completes, and a real HTTP receiver
gets the signed webhook, a real SMTP server (aiosmtpd) gets the email, and a receiver that fails twice gets
it on the third attempt, which the delivery log records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from orchestrator.model.notify import RUN_COMPLETED, verify

from .conftest import Engine, make_settings, redis_flush, wait_for

pytestmark = pytest.mark.integration

DB = "/1"


def e2e(settings, *args: str) -> subprocess.CompletedProcess:
    """The real CLI as the job's owner (USER=tester, the engine machine's own user), on this engine."""
    env = {**os.environ, "E2E_HOME": str(settings.root), "E2E_REDIS_URL": settings.redis_url, "USER": "tester",
           "LOGNAME": "tester", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_completed_run_is_delivered_signed_by_webhook_and_email_and_retried_with_backoff(redis_url, tmp_path):
    pytest.importorskip("aiosmtpd", reason="aiosmtpd (the test extras)")
    from .receivers import SmtpReceiver, WebhookReceiver

    hooks, smtp = WebhookReceiver(fail={"/flaky": 2}), SmtpReceiver()
    redis_flush(redis_url + DB)
    engine = Engine(make_settings(tmp_path / "home", redis_url + DB, local_nodes=1, smtp_host="127.0.0.1",
                                  smtp_port=smtp.port, smtp_from="e2e@test.local", notify_backoff=0.3))
    try:
        client = engine.client
        client.notify_add("webhook", hooks.url + "/mine", [RUN_COMPLETED])
        secret = client.notify_secret()
        job_id = client.submit_data({
            "name": "hello", "desktop": {"enabled": False},
            "solver": {"name": "command", "command": ["sh", "-c", "echo progress: 1/1"]},
            "notify": {"events": [RUN_COMPLETED], "webhooks": [hooks.url + "/flaky"], "email": ["ann@example.org"]},
        })
        engine.wait_run(job_id, timeout=60)

        # The owner's webhook: one signed POST naming the job and the completed run
        [mine] = hooks.wait(1, 15, path="/mine")
        assert verify(secret, mine.body, mine.headers["X-E2E-Signature"])
        assert not verify("another-secret", mine.body, mine.headers["X-E2E-Signature"])
        body = json.loads(mine.body)
        assert (body["event"], body["state"], body["run"], body["job"]["id"], body["job"]["owner"]) == \
            (RUN_COMPLETED, "COMPLETED", "run-001", job_id, "tester")
        assert mine.headers["X-E2E-Event"] == RUN_COMPLETED and mine.headers["X-E2E-Delivery"] == body["delivery"]

        # The job's email: plain text through the real SMTP server
        [mail] = smtp.wait(1, 15)
        assert mail["To"] == "ann@example.org" and RUN_COMPLETED in mail["Subject"]
        assert job_id in mail.get_payload() and "COMPLETED" in mail.get_payload()

        # The job's flaky webhook: refused twice (500), delivered on attempt 3 after 0.3 s and 0.6 s
        [flaky] = hooks.wait(1, 20, path="/flaky")
        assert verify(secret, flaky.body, flaky.headers["X-E2E-Signature"])
        def tries() -> list:
            return sorted((e["attempt"], e["status"]) for e in client.notify_log(job=job_id)
                          if e["address"].endswith("/flaky"))

        wait_for(lambda: len(tries()) == 3, 5, "the third attempt's log entry")  # logged just after the POST
        log = client.notify_log(job=job_id)
        assert tries() == [(1, "retrying"), (2, "retrying"), (3, "delivered")]
        assert all(e["error"] == "HTTP 500" for e in log if e["status"] == "retrying")
        assert {e["status"] for e in log if e["address"] != hooks.url + "/flaky"} == {"delivered"}

        # The CLI shows the same log, per job; a bad URL is refused by its field, and nothing is stored
        shown = e2e(engine.settings, "notify", "log", "--job", job_id, "--json")
        assert shown.returncode == 0, shown.stderr
        assert sorted((e["attempt"], e["status"]) for e in json.loads(shown.stdout)
                      if e["address"].endswith("/flaky")) == [(1, "retrying"), (2, "retrying"), (3, "delivered")]
        bad = e2e(engine.settings, "notify", "add-webhook", "ftp://example.org/x")
        assert bad.returncode != 0 and "http:// or https://" in bad.stderr and "Traceback" not in bad.stderr
        assert [t["address"] for t in client.notify_targets()] == [hooks.url + "/mine"]

        # Each (event, target) once: nothing more arrives (RUNNING was not subscribed)
        assert len(hooks.wait(3, 1.0)) == 2 and len(smtp.messages) == 1
        client.terminate(job_id)
        engine.wait_job_terminal(job_id, timeout=60)
    finally:
        engine.close()
        hooks.close()
        smtp.close()
