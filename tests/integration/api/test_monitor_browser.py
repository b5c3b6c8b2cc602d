"""The monitor in headless Chromium against a real engine: log in with a token, submit OpenFOAM's pitzDaily from
the page and watch its state and residual plot grow live, pause, edit and restart it from the page, open a job's
desktop (noVNC shows Connected), see who sees which jobs, drain a node and terminate another's job as an admin.
Assertions read the page (text, DOM); screenshots are kept next to the test's tmp files for a human to look at."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import httpx
import pytest

from orchestrator.model.paths import JobPaths
from tests.integration.api.test_api import wait_doc
from tests.integration.conftest import PITZ, wait_for
from tests.integration.desktop_helpers import chromium, close_chromium, require_desktop_tools, wait_novnc_connected
from tests.integration.desktop_helpers import spec as desktop_spec

pytestmark = pytest.mark.integration
SPEC = """\
name: monitor-pitz
solver:
  name: openfoam
  application: simpleFoam
  case: {case}
  parameters: {{endTime: 20000, writeInterval: 100}}
cluster: {{nodes: 1, cores_per_node: 1}}
desktop: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def driver():
    drv = chromium()
    drv.implicitly_wait(0)
    yield drv
    close_chromium(drv)


def by(selector: str):
    from selenium.webdriver.common.by import By
    return By.CSS_SELECTOR, selector


def text(drv, selector: str) -> str:
    """The element's rendered text, read in one script call (no element handle to go stale while it changes)."""
    return drv.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                              selector) or ""


def login(drv, api, token: str) -> None:
    drv.delete_all_cookies()
    drv.get(api.url + "/ui/login")
    drv.find_element(*by("#token")).send_keys(token)
    drv.find_element(*by("#login-button")).click()
    wait_for(lambda: text(drv, "#whoami"), 15, "the jobs page after login")


def page_until(drv, check, what: str, timeout: float = 60):
    from selenium.common.exceptions import StaleElementReferenceException

    def safely():
        try:
            return check(drv)
        except StaleElementReferenceException:  # the page replaced the element meanwhile: look again
            return None
    return wait_for(safely, timeout, what, poll=0.2)


def api_client(api, token: str) -> httpx.Client:
    return httpx.Client(base_url=api.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def upload_case(client: httpx.Client, case: Path = PITZ, name: str = "pitzDaily") -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(case, arcname=name)
    reply = client.post("/uploads", content=buffer.getvalue(), headers={"Content-Type": "application/gzip"})
    assert reply.status_code == 201, reply.text
    return f"{reply.json()['path']}/{name}"


def plot_points(drv) -> int:
    return plot(drv)[0]


def plot(drv) -> tuple[int, dict[str, int]]:
    """The plot's point count and its lines (field -> points), read in one go (it is redrawn as events come)."""
    points, lines = drv.execute_script(
        "const svg = document.getElementById('plot');"
        "return [Number(svg.dataset.points), [...svg.querySelectorAll('polyline')]"
        "        .map(p => [p.dataset.field, Number(p.dataset.count)])];")
    return points, dict(lines)


def test_submit_from_the_page_watch_the_plot_grow_then_pause_and_restart(driver, api, tokens, openfoam, tmp_path):
    alice = api_client(api, tokens["alice"][1])
    case = upload_case(alice)
    login(driver, api, tokens["alice"][1])
    driver.get(api.url + "/ui/submit")
    driver.find_element(*by("#spec")).send_keys(SPEC.format(case=case))
    driver.find_element(*by("#submit-button")).click()
    page_until(driver, lambda d: "/ui/jobs/" in d.current_url and text(d, "#job-state") == "UP", "the job page, UP")
    job_id = driver.current_url.rsplit("/", 1)[1]
    assert text(driver, "#job-owner") == tokens["alice"][0] and text(driver, "#job-solver") == "openfoam"

    # the plot grows while the solver runs: residual points arrive through the event stream
    first = page_until(driver, lambda d: plot_points(d) >= 12 and plot_points(d), "residual points on the plot")
    later = page_until(driver, lambda d: plot_points(d) > first + 12 and plot_points(d), "more points, live")
    points, lines = plot(driver)  # one line per field, each with the points drawn so far
    assert len(lines) >= 3 and {"Ux", "p"} <= set(lines) and sum(lines.values()) == points >= later
    assert text(driver, "#run-state") == "RUNNING" and "Time =" in text(driver, "#log")
    driver.save_screenshot(str(tmp_path / "monitor-running.png"))

    # pause (checkpoint and stop), then restart from the checkpoint: the page follows the run's state
    driver.find_element(*by("#do-pause")).click()
    page_until(driver, lambda d: text(d, "#run-state") == "PAUSED", "the run PAUSED on the page", timeout=90)
    assert driver.find_element(*by("#do-restart")).is_enabled()
    assert not driver.find_element(*by("#do-pause")).is_enabled()
    paused_points = plot_points(driver)
    # while paused, an edit from the page becomes revision 2 in the history, by alice
    driver.find_element(*by("#edit-sets")).send_keys("description=edited from the monitor")
    driver.find_element(*by("#edit-message")).send_keys("page edit")
    driver.find_element(*by("#edit-button")).click()
    page_until(driver, lambda d: "page edit" in text(d, "#revisions"), "the edit in the history")
    assert tokens["alice"][0] in text(driver, "#revisions tbody tr:last-child")
    driver.find_element(*by("#do-restart")).click()
    page_until(driver, lambda d: text(d, "#run-attempt") == "2" and text(d, "#run-state") == "RUNNING",
               "attempt 2 running", timeout=90)
    page_until(driver, lambda d: plot_points(d) > paused_points, "the restarted run adds points")
    runs = driver.find_elements(*by("#runs tbody tr"))
    assert [r.find_elements(*by("td"))[2].text for r in runs] == ["2"]
    assert "action=pause" in text(driver, "#events") and "action=restart" in text(driver, "#events")
    driver.save_screenshot(str(tmp_path / "monitor-restarted.png"))

    assert alice.post(f"/jobs/{job_id}/terminate").status_code == 200
    wait_doc(alice, job_id, lambda d: d["state"] == "TERMINATED", "terminated", timeout=120)
    alice.close()


SERIES_SPEC = {"name": "monitor-series", "desktop": {"enabled": False}, "cluster": {"nodes": 1, "cores_per_node": 1},
               "solver": {"name": "openfoam", "application": "simpleFoam",
                          "parameters": {"endTime": 2000, "writeInterval": 2000}},
               "monitor": {"rules": [{"name": "cd-steady", "when": "series", "series": "fc/Cd", "tolerance": "2%",
                                      "window": 20, "action": "stop"}]}}


def test_the_job_page_lists_and_plots_the_runs_series_and_the_rule_that_fired(driver, api, tokens, openfoam,
                                                                                tmp_path):
    # pitzDaily with a forceCoeffs function object, uploaded like a user's case, and a rule on its Cd
    from tests.integration.test_monitor_rules import _case

    alice = api_client(api, tokens["alice"][1])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(_case(tmp_path), arcname="pitzDaily")
    reply = alice.post("/uploads", content=buffer.getvalue(), headers={"Content-Type": "application/gzip"})
    assert reply.status_code == 201, reply.text
    spec = {**SERIES_SPEC, "solver": {**SERIES_SPEC["solver"], "case": f"{reply.json()['path']}/pitzDaily"}}
    reply = alice.post("/jobs", json={"spec": spec})
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["id"]
    login(driver, api, tokens["alice"][1])
    driver.get(f"{api.url}/ui/jobs/{job_id}")
    # the chooser lists the series as they appear; choosing fc/Cd plots it
    page_until(driver, lambda d: d.execute_script(
        "return [...document.querySelectorAll('#series-name option')].some(o => o.value === 'fc/Cd')"),
        "fc/Cd in the series chooser", timeout=90)
    driver.execute_script("const s = document.getElementById('series-name'); s.value = 'fc/Cd';"
                          "s.dispatchEvent(new Event('change'));")
    page_until(driver, lambda d: text(d, "#run-state") == "COMPLETED", "the rule completing the run", timeout=120)
    listed = alice.get(f"/jobs/{job_id}/series", params={"name": "fc/Cd", "last": 10000}).json()["series"]["fc/Cd"]
    drawn = page_until(driver, lambda d: d.execute_script(
        "const svg = document.getElementById('series-plot');"
        "return svg.dataset.series === 'fc/Cd' && Number(svg.dataset.points) === arguments[0] &&"
        "       svg.querySelector('polyline') ? Number(svg.dataset.points) : 0;", len(listed)),
        "every point of fc/Cd on the plot")
    assert drawn == len(listed) >= 20
    fired = text(driver, "#rules-fired")
    assert "rule cd-steady (series) -> stop" in fired and "fc/Cd steady" in fired
    count = text(driver, "#series-count")  # fc's 12 coefficients and solverInfo's residuals
    assert count.endswith(" series") and int(count.split()[0]) >= 13, count
    driver.execute_script("document.querySelector('h2 + p #series-name').closest('p').previousElementSibling"
                          ".scrollIntoView()")  # the Series section at the top of the window
    shot = os.environ.get("E2E_SERIES_SCREENSHOT")  # docs/monitor-series.png is made this way
    driver.save_screenshot(shot or str(tmp_path / "monitor-series.png"))


@pytest.fixture(scope="module")
def desktop_job(api, tokens):
    require_desktop_tools()
    with api_client(api, tokens["alice"][1]) as alice:
        reply = alice.post("/jobs", json={"spec": desktop_spec("monitor-desk", seconds=600)})
        assert reply.status_code == 201, reply.text
        job_id = reply.json()["id"]
        yield job_id
        alice.post(f"/jobs/{job_id}/terminate")


def test_the_desktop_link_opens_novnc_connected(driver, api, tokens, desktop_job, engine, tmp_path):
    login(driver, api, tokens["alice"][1])
    driver.get(f"{api.url}/ui/jobs/{desktop_job}")
    page_until(driver, lambda d: d.find_element(*by("#desktop-link")).is_displayed(), "the desktop link", timeout=90)
    assert text(driver, "#desktop-state") == "ready"
    home = driver.current_window_handle
    driver.find_element(*by("#desktop-link")).click()
    wait_for(lambda: len(driver.window_handles) == 2, 15, "the desktop tab")
    driver.switch_to.window(next(h for h in driver.window_handles if h != home))
    try:
        status = wait_novnc_connected(driver)
        if "Connected" not in status:
            desk = JobPaths.for_job(engine.settings.root, desktop_job).root / "desktop"
            pytest.fail(f"noVNC status {status!r} at {driver.current_url.split('?')[0]}; gateway log:\n"
                        f"{(desk / 'gateway.log').read_text()[-2000:]}")
        assert desktop_job in status
        driver.save_screenshot(str(tmp_path / "monitor-desktop.png"))
    finally:
        driver.close()
        driver.switch_to.window(home)


def test_admins_see_and_terminate_others_jobs_plain_users_do_not(driver, api, tokens, desktop_job, tmp_path):
    login(driver, api, tokens["bob"][1])
    page_until(driver, lambda d: text(d, "#jobs-updated"), "bob's job table")
    assert not driver.find_elements(*by(f"#jobs tr[data-job='{desktop_job}']"))
    driver.get(f"{api.url}/ui/jobs/{desktop_job}")
    assert f"No job '{desktop_job}'" in text(driver, "#error")
    assert not driver.find_elements(*by("a[href='/ui/workers']"))

    login(driver, api, tokens["root"][1])
    row = page_until(driver, lambda d: d.find_elements(*by(f"#jobs tr[data-job='{desktop_job}']")), "alice's job")
    assert tokens["alice"][0] in row[0].text
    # the running desktop job is charged for its solver (a sleep on 1 node x 1 core), its desktop shown apart
    cells = page_until(driver, lambda d: _charged(d, desktop_job), "core-hours of alice's job in the table")
    assert float(cells[9]) > 0 and float(cells[10]) > 0 and ":" in cells[8]
    driver.save_screenshot(str(tmp_path / "monitor-jobs.png"))
    with api_client(api, tokens["root"][1]) as root:
        worker = root.get("/admin/workers").json()["workers"][0]["name"]
    driver.get(f"{api.url}/ui/workers")
    page_until(driver, lambda d: worker in text(d, "#workers"), "the live worker on the workers page")
    assert "e2e.jobs" in text(driver, "#queues")
    driver.save_screenshot(str(tmp_path / "monitor-workers.png"))

    # admin actions: drain a free node and put it back, on the nodes page
    driver.get(f"{api.url}/ui/nodes")
    node = page_until(driver, lambda d: d.execute_script(
        "const rows = [...document.querySelectorAll('#nodes tr[data-state=free]')];"
        "return rows.length ? rows[rows.length - 1].dataset.node : null;"), "a free node")
    _node_action(driver, node, "drain", "drained")
    assert f"drained from the monitor by {tokens['root'][0]}" in text(driver, f"#nodes tr[data-node='{node}']")
    _node_action(driver, node, "undrain", "free")

    # an admin action: terminate alice's job from its page (the browser's confirm dialog accepted)
    driver.get(f"{api.url}/ui/jobs/{desktop_job}")
    page_until(driver, lambda d: d.find_element(*by("#do-terminate")).is_enabled(), "the terminate button")
    driver.find_element(*by("#do-terminate")).click()
    driver.switch_to.alert.accept()
    page_until(driver, lambda d: text(d, "#job-state") in ("TERMINATING", "TERMINATED"), "alice's job terminating")
    page_until(driver, lambda d: text(d, "#job-state") == "TERMINATED", "alice's job terminated", timeout=90)
    assert f"action=terminate by={tokens['root'][0]}" in text(driver, "#events")


def _node_action(drv, node: str, action: str, state: str, tries: int = 3) -> None:
    """Press a node's drain/undrain button until its row shows the state. The table is redrawn every few
    seconds: CI once saw a drain click change nothing in 60 s (a button replaced as it was clicked, or a click
    lost under load), so the button is pressed again after 15 s, as a person would; the page's flash message
    says what the last press answered."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(tries):
        try:
            drv.find_element(*by(f"button[data-node='{node}'][data-action='{action}']")).click()
        except StaleElementReferenceException:
            continue
        try:
            page_until(drv, lambda d: text(d, f"#nodes tr[data-node='{node}'][data-state={state}]"),
                       f"{node} {state}", timeout=15)
            return
        except AssertionError:
            print(f"{action} pressed: {node} not {state} after 15 s (flash: {text(drv, '#flash')!r})")
    raise AssertionError(f"{node} never {state} after {tries} presses of {action}; flash: {text(drv, '#flash')!r}; "
                         f"row: {text(drv, f'#nodes tr[data-node={node!r}]')!r}")


def _charged(drv, job_id: str) -> list[str] | None:
    cells = drv.execute_script(f"return [...document.querySelectorAll(\"#jobs tr[data-job='{job_id}'] td\")]"
                               ".map(td => td.textContent)")
    return cells if len(cells) == 11 and cells[9] and float(cells[9]) > 0 else None
