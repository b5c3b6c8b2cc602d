"""The desktop's Fluent monitor: attaches to the running batch Fluent through PyFluent, shows its live iteration
and residuals.

Usage: PYTHON fluent_monitor.py SERVER_INFO_FILE, in the run's copy in the work folder. The batch run was
started with `-sifile=SERVER_INFO_FILE` (Fluent's gRPC server writes `ip:port` and a password there); this
program hands the file to PyFluent's `connect_to_fluent(server_info_file_name=..., cleanup_on_exit=False)`,
so the password never leaves the file (no argv, no log) and closing the window never stops the run (it
never calls session.exit()). It polls `session.monitors.get_monitor_set_data(monitor_set_name="residual")`
every second. A restart writes a new server-info file: the monitor notices and attaches to the new server.

Standalone (the plugin ships it into the desktop folder): stdlib and tkinter, plus ansys-fluent-core in the
Python that runs it (the Fluent option `monitor_python`); without PyFluent the window says so.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
from pathlib import Path
from typing import Any

POLL_S = 1.0
RETRY_S = 2.0
PLOT_POINTS = 400
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def numbers(values: Any) -> list[float]:
    """A monitor's values as floats: PyFluent returns numpy arrays, its y values one column wide (n x 1)."""
    flat = values.ravel() if hasattr(values, "ravel") else values
    return [float(v) for v in flat]


def latest(x_values: Any, values: dict[str, Any]) -> tuple[int | None, dict[str, float]]:
    """The last iteration and each residual's last value, from get_monitor_set_data's (x, {name: values})."""
    xs = numbers(x_values)
    last = {name: ys[-1] for name, ys in ((n, numbers(v)) for n, v in values.items()) if ys}
    return (int(xs[-1]) if xs else None), last


def watch(info: Path, post: Any, stop: threading.Event) -> None:
    """The worker: connect (again after a loss or a new server-info file) and post what the run reports."""
    try:
        from ansys.fluent.core import connect_to_fluent
    except ImportError:
        post("missing", f"PyFluent (ansys-fluent-core) is not installed in {sys.executable}:\n"
             "pip install ansys-fluent-core there, or set solver.monitor_python to a Python that has it")
        return
    while not stop.is_set():
        try:
            stamp = info.stat().st_mtime_ns
            if not info.stat().st_size:
                raise FileNotFoundError(info)
        except OSError:
            post("wait", f"waiting for Fluent's server-info file {info.name}")
            stop.wait(RETRY_S)
            continue
        try:
            session = connect_to_fluent(server_info_file_name=str(info), cleanup_on_exit=False)
        except Exception as exc:  # the server may not listen yet; never the file's content in the window
            post("wait", f"cannot attach yet ({type(exc).__name__}); retrying")
            stop.wait(RETRY_S)
            continue
        post("attached", "attached to the running Fluent")
        monitors = session.monitors
        if not getattr(monitors, "is_streaming", True):  # a StreamingService in PyFluent: its stream on
            monitors.start()
        while not stop.is_set():
            try:
                if "residual" in monitors.get_monitor_set_names():
                    post("data", *monitors.get_monitor_set_data(monitor_set_name="residual"))
                if info.stat().st_mtime_ns != stamp:  # a new attempt, a new server: attach to it
                    break
            except Exception as exc:
                post("wait", f"connection lost ({type(exc).__name__}); waiting for the run")
                break
            stop.wait(POLL_S)
        del monitors, session  # cleanup_on_exit=False: dropping it closes the channel, Fluent goes on
        stop.wait(RETRY_S)


class Window:
    def __init__(self, tk: Any, info: Path) -> None:
        self.tk = tk
        self.root = tk.Tk()
        self.root.title("Fluent monitor: connecting")
        self.root.geometry("520x340+20+400")  # under the 80x24 terminal, clear of the job panel at the right
        self.status = tk.Label(self.root, text=f"reading {info.name}", anchor="w", justify="left",
                               font=("TkDefaultFont", 11))
        self.status.pack(fill="x", padx=8, pady=(6, 0))
        self.values = tk.Label(self.root, text="", anchor="w", justify="left", font=("TkFixedFont", 9))
        self.values.pack(fill="x", padx=8)
        self.plot = tk.Canvas(self.root, background="white", height=200)
        self.plot.pack(fill="both", expand=True, padx=8, pady=6)
        self.inbox: queue.Queue[tuple] = queue.Queue()
        self.stop = threading.Event()
        threading.Thread(target=watch, args=(info, lambda *m: self.inbox.put(m), self.stop), daemon=True).start()
        self.root.protocol("WM_DELETE_WINDOW", self.close)
        self.root.after(200, self.drain)

    def close(self) -> None:
        self.stop.set()
        self.root.destroy()

    def drain(self) -> None:
        while True:
            try:
                kind, *rest = self.inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "data":
                self.show(*rest)
            else:
                self.status.config(text=rest[0])
                if kind == "missing":
                    self.root.title("Fluent monitor: PyFluent is not installed")
                elif kind == "wait":
                    self.root.title("Fluent monitor: waiting for the run")
        self.root.after(300, self.drain)

    def show(self, x_values: Any, values: dict[str, Any]) -> None:
        iteration, last = latest(x_values, values)
        if iteration is None:
            return
        self.root.title(f"Fluent monitor: iteration {iteration}")
        self.status.config(text=f"attached to the running Fluent: iteration {iteration}")
        items = [f"{n} {v:.3e}" for n, v in last.items()]
        self.values.config(text="\n".join("   ".join(items[i:i + 3]) for i in range(0, min(len(items), 9), 3)))
        self.draw(numbers(x_values)[-PLOT_POINTS:], {n: numbers(v)[-PLOT_POINTS:] for n, v in values.items()})

    def draw(self, xs: list, series: dict[str, list]) -> None:
        """The residuals on a log scale, the newest PLOT_POINTS iterations."""
        c = self.plot
        c.delete("all")
        width, height, pad = max(c.winfo_width(), 100), max(c.winfo_height(), 60), 24
        right = width - 84  # the legend's column
        logs = [math.log10(v) for ys in series.values() for v in ys if v > 0]
        if len(xs) < 2 or not logs:
            return
        low, high = math.floor(min(logs)), math.ceil(max(logs))
        high = high if high > low else low + 1
        x0, x1 = xs[0], xs[-1] if xs[-1] != xs[0] else xs[0] + 1
        for decade in range(low, high + 1):
            y = pad + (high - decade) / (high - low) * (height - 2 * pad)
            c.create_line(pad, y, right, y, fill="#e0e0e0")
            c.create_text(2, y, text=f"1e{decade}", anchor="w", font=("TkFixedFont", 7))
        for k, (name, ys) in enumerate(series.items()):
            points = []
            for x, v in zip(xs, ys, strict=False):
                if v > 0:
                    points += [pad + (x - x0) / (x1 - x0) * (right - pad),
                               pad + (high - math.log10(v)) / (high - low) * (height - 2 * pad)]
            if len(points) >= 4:
                c.create_line(*points, fill=COLOURS[k % len(COLOURS)])
                c.create_text(right + 6, pad + 12 * k, text=name, anchor="w", fill=COLOURS[k % len(COLOURS)],
                              font=("TkFixedFont", 7))
        c.create_text(pad, height - 4, text=f"iteration {x0}", anchor="sw", font=("TkFixedFont", 7))
        c.create_text(right, height - 4, text=f"{xs[-1]}", anchor="se", font=("TkFixedFont", 7))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: fluent_monitor.py SERVER_INFO_FILE", file=sys.stderr)
        return 2
    try:
        import tkinter
    except ImportError:
        print(f"fluent monitor: {sys.executable} has no tkinter (python3-tk)", file=sys.stderr)
        return 1
    Window(tkinter, Path(argv[0])).root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
