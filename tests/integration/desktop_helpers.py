"""Shared by the desktop integration tests: component checks, waiting for a desktop, a headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from orchestrator.desktop.service import desktop_record
from orchestrator.model.records import DesktopRecord
from tests.conftest import require

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def require_desktop_tools() -> None:
    for tool, package in (("Xvnc", "tigervnc-standalone-server"), ("openbox", "openbox"), ("xterm", "xterm")):
        require(shutil.which(tool) is not None, f"{tool} (apt-get install --no-install-recommends {package})")
    require(Path("/usr/share/fonts/X11/misc/fonts.dir").exists() or Path("/usr/share/fonts/X11/misc").is_dir(),
            "X fonts (apt-get install xfonts-base)")
    require(Path("/usr/share/novnc/vnc.html").exists(), "noVNC (apt-get install novnc)")
    ok = subprocess.run(["/usr/bin/python3", "-c", "import websockify"], capture_output=True).returncode == 0
    require(ok, "websockify for the system python3 (apt-get install websockify)")


def spec(name: str, seconds: int = 300, **desktop) -> dict:
    return {"name": name, "solver": {"name": "command", "command": ["sleep", str(seconds)]},
            "desktop": {"enabled": True, **desktop}}


def wait_desktop(engine, job_id: str, states=("ready", "failed"), timeout: float = 60) -> DesktopRecord:
    doc = engine.client.wait(job_id, lambda d: desktop_record(d).state in states, timeout=timeout, poll=0.05)
    return desktop_record(doc)


def session_processes(pgid: int) -> dict[int, str]:
    """pid -> command name of the live processes of a process group (the desktop session)."""
    from orchestrator.cluster.local import group_members

    found = {}
    for pid in group_members(pgid):
        try:
            found[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            pass
    return found


def chromium():
    """A headless Chromium driven by Selenium (the system browser and driver); quit() it when done."""
    require(os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK),
            "chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="desktop-chromium-")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1300,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver._e2e_profile = profile
    return driver


def novnc_status(driver) -> str:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.ID, "noVNC_status").get_attribute("textContent") or ""
    except WebDriverException:
        return ""


def wait_novnc_connected(driver, timeout: float = 45, reload_after: float = 20) -> str:
    """Wait until the noVNC page in `driver` says Connected; its status text ("" when it never did). A page that
    shows no status at all after `reload_after` s is loaded once more, as a person would: under CI's load
    Chromium twice never loaded the page (the gateway logged no request; the cause is not found)."""
    deadline, reload_at = time.monotonic() + timeout, time.monotonic() + reload_after
    while time.monotonic() < deadline:
        status = novnc_status(driver)
        if "Connected" in status:
            return status
        if not status and reload_at and time.monotonic() > reload_at:
            reload_at = 0.0
            driver.refresh()
        time.sleep(0.2)
    return novnc_status(driver)


def close_chromium(driver) -> None:
    profile = getattr(driver, "_e2e_profile", None)
    driver.quit()
    if profile:
        shutil.rmtree(profile, ignore_errors=True)


class WebSocketStream:
    """An RFB stream over the gateway's WebSocket, as noVNC speaks it (binary frames)."""

    def __init__(self, url: str, headers: list[str] | None = None) -> None:
        import websocket  # websocket-client, installed with selenium

        self.ws = websocket.create_connection(url, subprotocols=["binary"], header=headers or [], timeout=10)
        self.buffer = b""

    def recv(self, n: int) -> bytes:
        if not self.buffer:
            self.buffer = self.ws.recv()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def sendall(self, data: bytes) -> None:
        self.ws.send_binary(data)

    def close(self) -> None:
        self.ws.close()


def grab_display(display: str, target: Path) -> bool:
    """The X display's picture as a PNG (the system python3's PIL grabs X displays); whether it could."""
    code = "import sys; from PIL import ImageGrab; ImageGrab.grab(xdisplay=sys.argv[1]).save(sys.argv[2])"
    return subprocess.run(["/usr/bin/python3", "-c", code, f":{display}", str(target)], capture_output=True,
                          timeout=30).returncode == 0
