"""The desktop's web client through the API, with the real pieces (Xvnc, openbox, xterm, noVNC, Chromium,
uvicorn) on the local backend, while the head node's gateway port is firewalled: the browser reaches only the
API. Also: the session's terminal gets E2E_SERVER/E2E_TOKEN/E2E_JOB (never on argv) and `e2e status` with no
argument works with that job-scoped token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orchestrator.desktop.rfb import authenticate
from orchestrator.model.paths import JobPaths
from tests.integration.conftest import wait_for
from tests.integration.desktop_helpers import chromium, close_chromium, require_desktop_tools, spec, wait_desktop

pytestmark = pytest.mark.integration

# How many distinct colours noVNC's canvas shows (sampled): a black screen with nothing drawn has one.
CANVAS_COLOURS = """
const canvas = [...document.querySelectorAll('canvas')].sort((a, b) => b.width * b.height - a.width * a.height)[0];
if (!canvas || !canvas.width) return 0;
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const seen = new Set();
for (let i = 0; i < data.length; i += 4 * 97) seen.add(data[i] << 16 | data[i + 1] << 8 | data[i + 2]);
return seen.size;
"""


class Firewalled:
    """An nftables table dropping every TCP packet to one port (loopback included): that port is unreachable
    from any browser on this machine, as a head node behind a firewall is."""

    def __init__(self, port: int) -> None:
        self.table = f"e2e_test_block_{port}"
        rules = (f"table inet {self.table} {{\n  chain input {{\n    type filter hook input priority -50;\n"
                 f"    tcp dport {port} drop\n  }}\n}}\n")
        done = subprocess.run(["nft", "-f", "-"], input=rules, text=True, capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot load nftables rules here: {done.stderr.strip()}")

    def remove(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)


def test_browser_opens_the_desktop_through_the_api_with_the_gateway_unreachable(engine, api, tokens, http,
                                                                                 tmp_path):
    require_desktop_tools()
    alice = http("alice")
    job_id = alice.post("/jobs", json={"spec": spec("desk-api", geometry="1024x768", depth=24)}).json()["id"]
    rec = wait_desktop(engine, job_id)
    assert rec.state == "ready", rec.reason
    desk = JobPaths.for_job(engine.settings.root, job_id).root / "desktop"

    # the session's environment: a 0600 file of the owner's, sourced by session.sh; the token never on argv
    env_file = desk / "e2e.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if not line.startswith("PATH="))
    assert env["E2E_JOB"] == job_id and env["E2E_TOKEN"].startswith("e2e_")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                assert env["E2E_TOKEN"].encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                pass
    # `e2e status` with no argument, as in the desktop's terminal (the API's address is this test's server)
    status = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "status"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "E2E_SERVER": api.url,
                                                        "E2E_TOKEN": env["E2E_TOKEN"], "E2E_JOB": job_id})
    assert status.returncode == 0 and job_id in status.stdout, status.stderr

    wall = Firewalled(rec.web_port)
    driver = chromium()
    try:
        with pytest.raises(OSError):  # the direct gateway: nothing gets through
            socket.create_connection(("127.0.0.1", rec.web_port), timeout=1).close()
        link = alice.post(f"/jobs/{job_id}/desktop/link")
        assert link.status_code == 201, link.text
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get(api.url + link.json()["path"])
        status_text = lambda drv: drv.find_element(By.ID, "noVNC_status").get_attribute("textContent")  # noqa: E731
        try:
            WebDriverWait(driver, 30).until(lambda drv: "Connected" in status_text(drv))
        except Exception:
            pytest.fail(f"noVNC did not connect through the API: {driver.page_source[:2000]}")
        assert job_id in status_text(driver)
        assert "code=" not in driver.current_url  # the page dropped the one-time code from the address bar
        colours = wait_for(lambda: (n := driver.execute_script(CANVAS_COLOURS)) > 1 and n, 20,
                           "the desktop drawn on noVNC's canvas")
        assert colours > 1
        # the desktop took the browser window's size (noVNC's resize=remote; the spec asked for 1024x768)
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        password = alice.get(f"/jobs/{job_id}/desktop").json()["password"]
        size = wait_for(lambda: (i := authenticate("127.0.0.1", rec.vnc_port, password)) and (i.width, i.height)
                        != (1024, 768) and (i.width, i.height), 20, "the desktop resized to the browser window")
        assert abs(size[0] - inner[0]) <= 16 and abs(size[1] - inner[1]) <= 16, (size, inner)
        shot = tmp_path / "desktop-api.png"
        driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("E2E_SCREENSHOT_DIR"):  # how docs/desktop-api.png was taken
            driver.save_screenshot(str(Path(os.environ["E2E_SCREENSHOT_DIR"]) / "desktop-api.png"))

        # the same link a second time: refused (the unit tests cover expiry and the refusal event)
        assert alice.post(f"/jobs/{job_id}/desktop/link").status_code == 201  # a new one is fine, though
        reused = httpx.post(f"{api.url}/desktop/{job_id}/link", json={"code": link.json()["path"].split("code=")[1]
                                                                         .split("&")[0]})
        assert reused.status_code == 403
    finally:
        close_chromium(driver)
        wall.remove()
        alice.post(f"/jobs/{job_id}/terminate")
        engine.wait_job_terminal(job_id, timeout=60)
    # the session's token ended with the job
    assert http(token=env["E2E_TOKEN"]).get(f"/jobs/{job_id}").status_code == 401
