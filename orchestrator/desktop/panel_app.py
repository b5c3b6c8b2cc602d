"""The job panel on the desktop: one Tk window showing and controlling this job through the REST API.

Why standalone (stdlib + tkinter, no engine import): it runs inside the job's desktop session, as the job's
OS account, with the head node's system python3, and the head node may be a remote ssh node without the
engine installed. The desktop service ships this file into the session's folder (as it ships gateway.py)
and starts it as the desktop's first app. It reads E2E_JOB, E2E_SERVER and E2E_TOKEN (a job-scoped token: it
reads and controls this job only) from its environment, never from argv, and never prints the token.

Without a token (a job not submitted through the API) it has no API: it shows the job through `e2e status
--json` on PATH and its buttons run `e2e pause` etc.; the residual plot, log and files stay empty, saying so.
That works only where the job's account can reach the engine with that CLI (an engine run by that same user);
elsewhere (e.g. a root engine's job accounts) the status line says `e2e` failed and the buttons stay disabled.

The edit form is panel_form.py, shipped beside this file. The pure parts (formatting, the edit form's request
body, the plot's scaling) have no Tk and are unit-tested.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any, Callable

try:  # shipped: panel_form.py lies beside this file in the session's folder
    import panel_form
except ImportError:  # in the repository (its tests)
    from orchestrator.desktop import panel_form

POLL = 1.0            # seconds between looks at the job
CLI_POLL = 5.0        # the same through `e2e` (no token): a process each time
CLI_RETRY = 30.0      # ... once `e2e` failed
FILES_EVERY = 5.0     # seconds between listings of the run's files
LOG_LINES = 12        # latest log lines shown
LOG_PAGE = 65536      # bytes asked per log read
WIDTH, MARGIN = 460, 16  # the panel's width and its gap to the right edge (plugins' main windows keep left of it)
BUTTONS = ("Pause", "Freeze", "Resume", "Edit", "Restart", "Rerun", "Terminate")
COMMANDS = {"Pause": "pause", "Freeze": "freeze", "Resume": "resume", "Restart": "restart", "Rerun": "rerun",
            "Terminate": "terminate"}


# -- pure parts
def current_run(doc: dict[str, Any]) -> dict[str, Any]:
    """The job document's current run ({} before it has one)."""
    return next((r for r in doc.get("runs_detail") or [] if r.get("id") == doc.get("current_run")), {})


def fraction(progress: dict[str, Any] | None) -> float | None:
    """How far a run is, 0..1 (as solvers.base.Progress.fraction): None with no step or no total."""
    if not progress:
        return None
    if progress.get("converged"):
        return 1.0
    step, total = progress.get("step"), progress.get("total")
    if step is None or not total:
        return None
    return max(0.0, min(1.0, float(step) / float(total)))


def time_left(run: dict[str, Any], now: float) -> float | None:
    """Seconds the run still needs at its pace so far (elapsed * (1 - f) / f), or None when unknown."""
    f, started = fraction(run.get("progress")), run.get("started_at")
    if f is None or not started or f <= 0 or run.get("state") != "RUNNING":
        return None
    return max(0.0, (now - float(started)) * (1 - f) / f)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "time left: unknown"
    s = int(round(seconds))
    if s >= 3600:
        return f"time left: {s // 3600}h {s % 3600 // 60:02d}m"
    return f"time left: {s // 60}m {s % 60:02d}s" if s >= 60 else f"time left: {s}s"


def state_line(doc: dict[str, Any]) -> str:
    """'RUNNING · run-001 RUNNING, attempt 2' (the job's state, its current run's and the attempt)."""
    run = current_run(doc)
    text = f"{doc.get('state', '?')} · {doc.get('current_run', '?')}"
    if run:
        text += f" {run.get('state', '?')}, attempt {run.get('attempt', 1)}"
    reason = run.get("reason") or doc.get("error")
    return f"{text}\n{reason}" if reason else text


def progress_line(run: dict[str, Any]) -> str:
    p = run.get("progress") or {}
    f = fraction(p)
    if f is None:
        return "progress: not reported"
    step, total = p.get("step"), p.get("total")
    return f"{f * 100:.0f} %  ({step:g} of {total:g})" if step is not None and total else f"{f * 100:.0f} %"


def _loggable(points: list[list[Any]]) -> list[tuple[float, float]]:
    """(x, log10 y) of the points a log plot can show (a positive, finite y)."""
    return [(float(p[0]), math.log10(p[1])) for p in points
            if len(p) >= 2 and p[0] is not None and p[1] is not None and math.isfinite(p[1]) and p[1] > 0]


def plot_bounds(series: list[list[list[Any]]]) -> tuple[float, float, float, float] | None:
    """(x min, x max, log10 y min, log10 y max) over every series: they share one pair of axes."""
    good = [p for points in series for p in _loggable(points)]
    if not good:
        return None
    return min(x for x, _ in good), max(x for x, _ in good), min(y for _, y in good), max(y for _, y in good)


def plot_points(points: list[list[Any]], width: int, height: int, pad: int = 4,
                bounds: tuple[float, float, float, float] | None = None) -> list[float]:
    """Canvas coordinates (x0, y0, x1, y1 ...) of a series' (x, y) points with y on a log scale, within `bounds`
    (plot_bounds; the series' own by default); points with no positive finite y are left out."""
    good = _loggable(points)
    if len(good) < 2:
        return []
    x0, x1, y0, y1 = bounds or plot_bounds([points]) or (0.0, 1.0, 0.0, 1.0)
    xr, yr = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    coords: list[float] = []
    for x, y in good:
        coords += [pad + (x - x0) / xr * (width - 2 * pad), pad + (y1 - y) / yr * (height - 2 * pad)]
    return coords


def last_lines(text: str, n: int = LOG_LINES) -> list[str]:
    return [ln[:160] for ln in text.splitlines()[-n:]]


# -- talking to the job
class ApiError(Exception):
    """An API call that failed, with what the server said (shown in the status line)."""


class Api:
    """The REST API with the job-scoped token (urllib; the token only in the Authorization header)."""

    def __init__(self, server: str, token: str, job: str) -> None:
        self.base, self._token, self.job = server.rstrip("/") + "/api/v1", token, job

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/jobs/{self.job}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                said = json.loads(exc.read()).get("error") or exc.reason
            except (ValueError, AttributeError):
                said = exc.reason
            raise ApiError(f"{method} {path or '/'}: {exc.code} {said}") from None
        except (OSError, ValueError) as exc:
            raise ApiError(f"{method} {path or '/'}: {exc}") from None

    def job_doc(self) -> dict[str, Any]:
        return self.call("GET", "")

    def command(self, name: str, body: dict[str, Any] | None = None) -> Any:
        return self.call("POST", f"/{name}", body)

    def form(self) -> dict[str, Any] | None:
        """The job's edit form (its solver's options as fields); None from an engine that has none."""
        try:
            return self.call("GET", "/form")
        except ApiError:
            return None


class Cli:
    """No token: `e2e` on PATH (the engine machine's own user). Status and commands only."""

    def __init__(self, job: str) -> None:
        self.job, self.exe = job, shutil.which("e2e")

    def _run(self, *args: str) -> str:
        if not self.exe:
            raise ApiError("no E2E_TOKEN and no `e2e` on PATH: this panel can only show the job id")
        done = subprocess.run([self.exe, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:  # e.g. the job's account cannot reach the engine from here
            raise ApiError(f"e2e {args[0]} failed, so this panel cannot show or control the job: "
                           f"{(done.stderr or done.stdout).strip()[-300:]}")
        return done.stdout

    def job_doc(self) -> dict[str, Any]:
        return json.loads(self._run("status", self.job, "--json"))

    def command(self, name: str, body: dict[str, Any] | None = None) -> Any:
        if name == "edit":
            args = [a for s in (body or {}).get("set", []) for a in ("--set", s)]
            return self._run("edit", self.job, *args, *(["--live"] if (body or {}).get("live") else []))
        return self._run(name, self.job)

    def form(self) -> dict[str, Any] | None:
        return None  # the form then holds the job's solver.parameters


class Poller(threading.Thread):
    """Looks at the job every POLL seconds and runs the buttons' commands at once (first), off the Tk thread;
    hands (kind, data) to the window through a queue. Through `e2e` (a process per look) it looks every
    CLI_POLL seconds, and every CLI_RETRY once `e2e` failed: a panel that cannot reach the engine costs little."""

    def __init__(self, source: Api | Cli, out: queue.Queue) -> None:
        super().__init__(daemon=True)
        self.source, self.out = source, out
        self.actions: queue.Queue = queue.Queue()  # (command, body) from the buttons
        self.log_run, self.log_offset, self.log_text, self.files_at = None, 0, "", 0.0
        self.form_for: tuple[Any, ...] | None = None  # the (revision, allowed) the edit form was fetched for

    def run(self) -> None:
        every = POLL if isinstance(self.source, Api) else CLI_POLL
        wait = 0.0
        while True:
            try:
                name, body = self.actions.get(timeout=wait)
                try:
                    self.source.command(name, body)
                    self.out.put(("done", f"{name}: sent"))
                except ApiError as exc:
                    self.out.put(("error", str(exc)))
            except queue.Empty:
                pass
            wait = every if self.look() or every == POLL else CLI_RETRY

    def look(self) -> bool:
        """One look at the job (its document; through the API also its series, log and files): whether it worked."""
        try:
            doc = self.source.job_doc()
            self.out.put(("job", doc))
            if (key := (doc.get("revision"), tuple(doc.get("allowed") or ()))) != self.form_for:
                self.form_for = key  # a new revision changes the values, a new state "apply live"
                self.out.put(("form", self.source.form()))
            if isinstance(self.source, Api):
                self.out.put(("series", self.source.call("GET", "/series?last=500")))
                self.out.put(("log", self._log(doc)))
                if time.monotonic() - self.files_at > FILES_EVERY:
                    self.files_at = time.monotonic()
                    self.out.put(("files", self.source.call("GET", "/files")))
        except ApiError as exc:
            self.out.put(("error", str(exc)))
            return False
        return True

    def _log(self, doc: dict[str, Any]) -> list[str]:
        assert isinstance(self.source, Api)
        if doc.get("current_run") != self.log_run:
            self.log_run, self.log_offset, self.log_text = doc.get("current_run"), 0, ""
        for _ in range(8):  # catch up a few pages a look; keep only the tail
            page = self.source.call("GET", f"/logs?offset={self.log_offset}&limit={LOG_PAGE}")
            self.log_text = (self.log_text + page.get("text", ""))[-8192:]
            moved = page.get("next_offset", self.log_offset) != self.log_offset
            self.log_offset = page.get("next_offset", self.log_offset)
            if not moved or len(page.get("text", "")) < LOG_PAGE:
                break
        return last_lines(self.log_text)


class Window:
    """The Tk window: its widgets, the edit form and the terminate confirmation; the buttons' root coordinates go
    to panel.json beside this file whenever they move (a test or a script can click them there)."""

    COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")

    def __init__(self, job: str, source: Api | Cli, note: str, places: Path) -> None:
        import tkinter as tk
        from tkinter import ttk

        self.tk, self.job, self.places = tk, job, places
        self.root = tk.Tk()
        self.root.title(f"e2e job {job}")
        width = WIDTH
        height = min(720, self.root.winfo_screenheight() - 40)  # the right edge, whole on a small screen too
        self.root.geometry(f"{width}x{height}+{max(0, self.root.winfo_screenwidth() - width - MARGIN)}+8")
        # always present: an app started later (ParaView takes seconds) is not stacked over it
        self.root.attributes("-topmost", True)
        self.out: queue.Queue = queue.Queue()
        self.poller = Poller(source, self.out)
        self.doc: dict[str, Any] = {}
        self.form: dict[str, Any] | None = None           # the job's edit form, from the engine
        self.history: dict[str, list[list[float]]] = {}  # residuals seen in the progress (no monitored series)
        self.dialogs: dict[str, Any] = {}                 # the open dialogs' buttons, for panel.json
        self.enabled: list[str] = []                      # the buttons enabled (the commands the job accepts)
        bold = ("TkDefaultFont", 11, "bold")
        self.state = tk.Label(self.root, text="connecting ...", font=bold, anchor="w", justify="left",
                              wraplength=width - 12)
        self.state.pack(fill="x", padx=6, pady=(6, 0))
        self.bar = ttk.Progressbar(self.root, maximum=100, mode="determinate")
        self.bar.pack(fill="x", padx=6, pady=2)
        self.progress = tk.Label(self.root, text="", anchor="w")
        self.progress.pack(fill="x", padx=6)
        tk.Label(self.root, text="Residuals (log scale)", anchor="w").pack(fill="x", padx=6, pady=(4, 0))
        self.plot = tk.Canvas(self.root, height=170, background="white", highlightthickness=1)
        self.plot.pack(fill="x", padx=6)
        tk.Label(self.root, text="Latest log lines", anchor="w").pack(fill="x", padx=6, pady=(4, 0))
        self.log = tk.Text(self.root, height=LOG_LINES, wrap="none", font=("TkFixedFont", 8), state="disabled")
        self.log.pack(fill="x", padx=6)
        # the buttons and the status line are packed (at the bottom) before the files' list, which alone gives
        # up room when a long status line needs more
        bottom = tk.Frame(self.root)
        bottom.pack(side="bottom", fill="x")
        rows = [tk.Frame(bottom) for _ in range(2)]
        self.buttons: dict[str, Any] = {}
        for i, label in enumerate(BUTTONS):
            action: Callable[[], None] = self._edit if label == "Edit" else self._confirm \
                if label == "Terminate" else partial(self._send, COMMANDS.get(label, ""))
            self.buttons[label] = tk.Button(rows[i // 4], text=label, width=9, command=action, state="disabled")
            self.buttons[label].pack(side="left", padx=2, pady=2)
        for row in rows:
            row.pack(padx=6)
        if note:  # why this panel does less than it could: stays, whatever the status line says next
            tk.Label(bottom, text=note, anchor="w", justify="left", wraplength=width - 12, fg="#555").pack(
                fill="x", padx=6)
        self.status = tk.Label(bottom, text="", anchor="w", justify="left", wraplength=width - 12)
        self.status.pack(fill="x", padx=6, pady=(2, 6))
        tk.Label(self.root, text="Files of the job", anchor="w").pack(fill="x", padx=6, pady=(4, 0))
        self.files = tk.Listbox(self.root, height=4, font=("TkFixedFont", 8))
        self.files.pack(fill="both", expand=True, padx=6)
        self.root.bind("<Configure>", lambda _e: self._write_places())

    def run(self) -> None:
        self.poller.start()
        self.root.after(100, self._drain)
        self.root.mainloop()

    # -- what the poller found
    def _drain(self) -> None:
        try:
            while True:
                kind, data = self.out.get_nowait()
                getattr(self, f"_show_{kind}")(data)
        except queue.Empty:
            pass
        except Exception as exc:  # noqa: BLE001  a surprising document: said in the status line, never a traceback
            self._say(f"cannot show the job: {exc}", error=True)
        self.root.after(100, self._drain)

    def _show_job(self, doc: dict[str, Any]) -> None:
        self.doc, run = doc, current_run(doc)
        self.state.configure(text=state_line(doc))
        f = fraction(run.get("progress"))
        self.bar.configure(value=(f or 0) * 100)
        self.progress.configure(text=f"{progress_line(run)}   {duration(time_left(run, time.time()))}")
        allowed = set(doc.get("allowed") or [])
        if "edit-live" in allowed:  # a running solver takes live edits: the form offers "apply live"
            allowed.add("edit")
        enabled = [label for label in BUTTONS if ("edit" if label == "Edit" else COMMANDS[label]) in allowed]
        for label, widget in self.buttons.items():
            widget.configure(state="normal" if label in enabled else "disabled")
        if enabled != self.enabled:  # panel.json says which buttons a click would work on now
            self.enabled = enabled
            self._write_places()
        progress = run.get("progress") or {}
        for name, value in (progress.get("residuals") or {}).items():
            points = self.history.setdefault(name, [])
            x = float(progress["step"]) if progress.get("step") is not None else time.time()
            if not points or points[-1][0] != x:
                points.append([x, value])
                del points[:-500]

    def _show_series(self, data: dict[str, Any]) -> None:
        series = {n: p for n, p in (data.get("series") or {}).items() if p} or self.history
        self.plot.delete("all")
        width, height = self.plot.winfo_width(), self.plot.winfo_height()
        shown = sorted(series.items())[:len(self.COLOURS)]
        bounds = plot_bounds([points for _, points in shown])
        axis = 48  # the left margin, where the shared log axis's ends are written
        if bounds:
            self.plot.create_text(4, 4, text=f"{10 ** bounds[3]:.3g}", anchor="nw", fill="#555")
            self.plot.create_text(4, height - 16, text=f"{10 ** bounds[2]:.3g}", anchor="sw", fill="#555")
            self.plot.create_line(axis, 2, axis, height - 14, fill="#bbb")
        for i, (name, points) in enumerate(shown):
            coords = plot_points(points, width - axis, height - 14, bounds=bounds)
            coords = [c + axis if k % 2 == 0 else c for k, c in enumerate(coords)]
            colour = self.COLOURS[i]
            if coords:
                self.plot.create_line(*coords, fill=colour, width=2)
            self.plot.create_text(axis + 6 + 70 * i, height - 7, text=name[:10], fill=colour, anchor="w")
        if not series:
            self.plot.create_text(width // 2, height // 2, text="no residuals reported yet", fill="#888")

    def _show_log(self, lines: list[str]) -> None:
        self.log.configure(state="normal")
        self.log.delete("1.0", "end")
        self.log.insert("end", "\n".join(lines))
        self.log.configure(state="disabled")

    def _show_files(self, data: dict[str, Any]) -> None:
        self.files.delete(0, "end")
        for entry in (data.get("files") or [])[:300]:
            self.files.insert("end", f"{entry.get('path', '?')}  ({entry.get('size', 0)} B)")

    def _show_form(self, form: dict[str, Any] | None) -> None:
        self.form = form

    def _show_error(self, text: str) -> None:
        self._say(text, error=True)

    def _show_done(self, text: str) -> None:
        self._say(text)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.configure(text=f"{time.strftime('%H:%M:%S')} {text}", fg="#b00" if error else "#060")

    # -- buttons
    def _send(self, name: str, body: dict[str, Any] | None = None) -> None:
        self._say(f"{name}: sending ...")
        self.poller.actions.put((name, body))

    def _confirm(self) -> None:
        tk = self.tk
        top = tk.Toplevel(self.root)
        top.title(f"Terminate job {self.job}?")
        tk.Label(top, text=f"Terminate job {self.job}?\nThe solver stops, results are collected and the\n"
                           "nodes are released. This cannot be undone.", justify="left").pack(padx=12, pady=8)
        row = tk.Frame(top)
        row.pack(pady=(0, 8))
        def terminate() -> None:
            self._close(top)
            self._send("terminate")

        yes = tk.Button(row, text="Terminate", fg="#b00", command=terminate)
        no = tk.Button(row, text="Cancel", command=lambda: self._close(top))
        yes.pack(side="left", padx=6)
        no.pack(side="left", padx=6)
        self._dialog(top, {"confirm": yes, "cancel": no})

    def _edit(self) -> None:
        top = self.tk.Toplevel(self.root)
        top.title(f"Edit job {self.job}")

        def apply(body: dict[str, Any]) -> None:
            self._close(top)
            self._send("edit", body)

        widgets = panel_form.build_dialog(self.tk, top, self.form, self.doc, apply,
                                          lambda text: self._say(text, error=True))
        widgets["cancel"].configure(command=lambda: self._close(top))
        self._dialog(top, widgets)

    def _dialog(self, top: Any, buttons: dict[str, Any]) -> None:
        top.transient(self.root)
        top.attributes("-topmost", True)  # above the panel, and never lost behind an app mapped meanwhile
        self.dialogs = buttons
        top.bind("<Configure>", lambda _e: self._write_places())
        top.bind("<Map>", lambda _e: self._write_places())

    def _close(self, top: Any) -> None:
        self.dialogs = {}
        top.destroy()
        self._write_places()

    def _write_places(self) -> None:
        """Each button's centre in root coordinates (and the open dialog's), once the window is mapped."""
        def centre(widget: Any) -> list[int]:
            return [widget.winfo_rootx() + widget.winfo_width() // 2, widget.winfo_rooty() + widget.winfo_height() // 2]

        try:
            places = {"buttons": {k: centre(w) for k, w in self.buttons.items()}, "enabled": self.enabled,
                      "dialog": {k: centre(w) for k, w in self.dialogs.items() if w.winfo_ismapped()}}
            tmp = self.places.with_name(self.places.name + ".tmp")
            tmp.write_text(json.dumps(places))
            tmp.replace(self.places)
        except (OSError, self.tk.TclError):
            pass


def main() -> int:
    job = os.environ.get("E2E_JOB", "")
    if not job:
        print("apps: Job panel skipped: E2E_JOB is not set", flush=True)
        return 0
    try:
        import tkinter  # noqa: F401  (the window's own module imports it too)
    except ImportError:
        print("apps: Job panel skipped: tkinter is not installed on the head node (Debian: apt-get install "
              "python3-tk)", flush=True)
        return 0
    server, token = os.environ.get("E2E_SERVER", ""), os.environ.get("E2E_TOKEN", "")
    source: Api | Cli = Api(server, token, job) if server and token else Cli(job)
    note = "" if isinstance(source, Api) else ("No job token (the job was not submitted through the API): the "
                                               "state and buttons go through `e2e` on PATH; the plot, log and "
                                               "files need the API.")
    Window(job, source, note, Path(__file__).with_name("panel.json")).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
