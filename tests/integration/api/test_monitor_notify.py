"""The monitor's browser notifications in headless Chromium against a real engine: with the permission granted,
a job's page raises a real desktop Notification when its run completes, from the job's event stream."""

from __future__ import annotations

import pytest

from tests.integration.api.test_monitor_browser import driver, login, page_until  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

# Records each Notification the page constructs (the real one still is: the wrapper only writes down its title).
RECORDER = """
window.__shown = [];
const Real = window.Notification;
if (Real) {
  window.Notification = class extends Real {
    constructor(title, options) { super(title, options); window.__shown.push(title); }
  };
}
"""


def test_a_job_page_raises_a_notification_when_its_run_completes(driver, api, tokens, http):  # noqa: F811
    driver.execute_cdp_cmd("Browser.grantPermissions", {"origin": api.url, "permissions": ["notifications"]})
    script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
    try:
        login(driver, api, tokens["alice"][1])
        reply = http("alice").post("/jobs", json={"spec": {
            "name": "notify-me", "desktop": {"enabled": False},
            "solver": {"name": "command", "command": ["sh", "-c", "sleep 4; echo progress: 1/1"]}}})
        assert reply.status_code == 201, reply.text
        job_id = reply.json()["id"]
        driver.get(f"{api.url}/ui/jobs/{job_id}")
        button = page_until(driver, lambda d: d.execute_script(
            "const b = document.getElementById('notify-me'); return b ? b.textContent : null;"), "the button")
        assert button == "Notifications on"
        shown = page_until(driver, lambda d: [t for t in d.execute_script("return window.__shown") or []
                                              if "run completed" in t], "the run-completed notification", 60)
        assert shown == [f"Job {job_id}: run completed"]
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
