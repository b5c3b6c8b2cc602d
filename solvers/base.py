"""The solver plugin contract (options model, prepare, progress, exit judgement, stop) and its registry."""

from __future__ import annotations

import logging
import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
)

from orchestrator.model.errors import PluginError, UserError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "orchestrator.solvers"
TEMPLATES_ROOT = Path(__file__).resolve().parent.parent / "templates"


class SolverOptions(BaseModel):
    """Base of every plugin's options model; `name` is the discriminator of the job spec's `solver`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str


def _dump_secret(value: SecretStr, info: SerializationInfo) -> str:
    # The store keeps the real value (the wrapper exports it); every other dump shows a mask.
    if (info.context or {}).get("reveal_secrets"):
        return value.get_secret_value()
    return "**********" if value.get_secret_value() else ""


# A licence key, podkey or password in a plugin's options: masked in status, events and logs.
Secret = Annotated[SecretStr, PlainSerializer(_dump_secret, return_type=str)]


class RunMode(str, Enum):
    """Why a run directory is being launched."""

    FRESH = "fresh"      # first launch of a run (run-001, or a rerun's run-00N): from the inputs
    RESTART = "restart"  # a later attempt in the same run directory: continue from the latest checkpoint


@dataclass(frozen=True)
class NodeSlots:
    """One allocated node as a solver sees it: where it is and how many processes it takes."""

    name: str
    address: str
    slots: int


@dataclass(frozen=True)
class LaunchContext:
    """What the engine tells a plugin about the run it prepares."""

    job_id: str
    run_id: str
    run_dir: Path                 # the run directory on the head node; the plugin writes inputs here
    nodes: tuple[NodeSlots, ...]
    hostfile: str                 # hostfile name inside run_dir, already written by the engine
    as_root: bool                 # launchers that refuse root by default need their opt-in flag
    mode: RunMode = RunMode.FRESH
    attempt: int = 1              # 1 for the first launch of this run directory, +1 per restart
    site_env: dict[str, str] = field(default_factory=dict)  # cluster-wide solver settings (licence servers)

    @property
    def nprocs(self) -> int:
        return sum(n.slots for n in self.nodes)


@dataclass(frozen=True)
class Prepared:
    """A plugin's answer to prepare(): which template to render, with what, and where its log goes."""

    template: str                          # e.g. "openfoam/run.sh.j2", relative to the plugin's templates root
    context: dict[str, Any]                # values for the template (quoted for the shell by the renderer)
    log_file: str                          # main solver log, relative to the run directory
    progress_total: float | None = None    # the value `Progress.step` reaches at the end, when known
    env: dict[str, str] = field(default_factory=dict)  # exported before the script; secrets allowed
    info: dict[str, str] = field(default_factory=dict)  # published on the run record (e.g. a server's port)
    # Logs of the steps run before the solver, by step name (`e2e logs --step NAME`), relative to the run dir.
    step_logs: dict[str, str] = field(default_factory=dict)


class Progress(BaseModel):
    """Live progress of a run as parsed from the solver's log."""

    model_config = ConfigDict(extra="forbid")
    step: float | None = None          # iteration or simulated time
    total: float | None = None         # where `step` ends
    residuals: dict[str, float] = {}   # initial residual per field, latest step
    solver_time: float | None = None   # wall/CPU seconds the solver reports
    converged: bool = False
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        """How far the run is, 0..1: 1.0 once the solver reports convergence (it stops before `total`);
        None while there is no step or no known total."""
        if self.converged:
            return 1.0
        if self.step is None or not self.total:
            return None
        return max(0.0, min(1.0, self.step / self.total))


@dataclass(frozen=True)
class Outcome:
    """How a finished run went, judged by its plugin."""

    ok: bool
    reason: str


@dataclass(frozen=True)
class DesktopApp:
    """A program a plugin puts on the job's desktop: started with the session and listed in its menu."""

    name: str                           # the menu's label
    argv: tuple[str, ...]               # the program and its arguments, each passed as one quoted word
    cwd: str = "."                      # where it starts, relative to the job's work folder
    start_with_session: bool = True     # False: only in the menu
    wait_for: str | None = None         # relative to cwd: start once this exists (results written later)
    optional: bool = False              # a missing program is skipped with a note either way; optional
                                        # ones are expected to be missing on lean head nodes
    files: dict[str, str] = field(default_factory=dict)  # helper files by relative path, into apps_dir first
    env: dict[str, str] = field(default_factory=dict)    # set for this app only


@dataclass(frozen=True)
class DesktopContext:
    """What the desktop service tells a plugin about the desktop it furnishes."""

    job_id: str
    run_id: str                   # the run the desktop shows: its copy is <work folder>/<run_id>/
    apps_dir: Path                # on the head node: where DesktopApp.files land (absolute, for argv)
    run_copy: Path | None = None  # on the head node: <work folder>/<run_id>, absolute (for helper files that
                                  # must name it from elsewhere, e.g. a viewer working in apps_dir)
    # Where the plugin's main window fits, (x, y, width, height) in pixels: the desktop left of the job panel,
    # which keeps the right edge (X11 programs take it as -geometry WxH+X+Y)
    area: tuple[int, int, int, int] = (0, 0, 800, 760)

    @property
    def geometry(self) -> str:
        """The area as an X11 -geometry value."""
        x, y, w, h = self.area
        return f"{w}x{h}+{x}+{y}"


def terminal_and_files(cwd: str = ".") -> list[DesktopApp]:
    """The default desktop: a terminal in the folder, and a file manager on it where one is installed."""
    # 80x24 at the left: the job panel takes the right edge (460 px), so on a 1024-wide desktop nothing overlaps
    return [DesktopApp("Terminal", ("xterm", "-geometry", "80x24+20+40"), cwd=cwd),
            DesktopApp("Files", ("pcmanfm", "."), cwd=cwd, start_with_session=False, optional=True)]


class RunFiles(Protocol):
    """The narrow file access a plugin gets to a live run directory (the engine routes it to the node)."""

    def read_text(self, rel: str) -> str: ...
    def write_text(self, rel: str, text: str) -> None: ...


class SolverPlugin(ABC):
    """What a solver plugin provides. It never touches Celery, Redis or nodes directly."""

    name: ClassVar[str]
    Options: ClassVar[type[SolverOptions]]
    templates_root: ClassVar[Path] = TEMPLATES_ROOT
    summary: ClassVar[str] = ""
    # Glob patterns (relative to the run directory) of lock and trigger files that a previous attempt may
    # have left behind; the engine deletes them before every restart and rerun.
    cleanup_patterns: ClassVar[tuple[str, ...]] = ()
    # Whether a restart may continue on fewer nodes than the run started with (after a node fault with no
    # replacement free); False where the checkpoint is tied to the process count (a decomposed case).
    runs_on_fewer_nodes: ClassVar[bool] = False
    # The options apply_live can hand to a running solver (edit forms mark them and offer "apply live" only for
    # plugins with some); every other option takes a pause, the edit, then a restart.
    live_fields: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def prepare(self, options: SolverOptions, ctx: LaunchContext) -> Prepared:
        """Write the run's inputs into ctx.run_dir and say how to launch it."""

    @abstractmethod
    def parse_progress(self, text: str, last: Progress | None) -> Progress | None:
        """Fold new complete log lines into the progress so far; None when nothing new was seen."""

    def series_files(self) -> tuple[str, ...]:
        """Glob patterns (relative to the run directory) of the monitor files the solver appends to, tailed
        live by the engine into series events (function-object tables, .sta/.cvg, report files); () = none."""
        return ()

    def parse_series(self, path: str, text: str, state: dict[str, Any]) -> dict[str, list[list[float]]]:
        """Fold new complete lines of the monitor file `path` (relative to the run directory) into points per
        series name ({"fc/Cd": [[x, y], ...]}). `state` is this file's own memory between reads (a header's
        column names), JSON-able, stored by the engine; set state["skip"] to stop reading a file."""
        return {}

    def desktop_apps(self, options: SolverOptions, ctx: DesktopContext) -> list[DesktopApp]:
        """What the job's desktop shows (the first app is its main window); by default a terminal and a file
        manager on the work folder. Override to open the solver's post-processor on the live run."""
        return terminal_and_files()

    def judge_exit(self, exit_code: int, log_tail: str) -> Outcome:
        """Decide success from the exit code and the end of the log (override for solvers that lie)."""
        if exit_code == 0:
            return Outcome(True, "exit code 0")
        return Outcome(False, f"exit code {exit_code}")

    def request_stop(self, files: RunFiles) -> bool:
        """Ask the solver to write a checkpoint and exit; False when it has no graceful way."""
        return False

    def latest_checkpoint(self, run_dir: Path) -> str | None:
        """What a restart of this (stopped) run directory would continue from, in words; None: nothing."""
        return None

    def apply_live(self, old: SolverOptions, new: SolverOptions, files: RunFiles) -> list[str]:
        """Apply an edit to the running solver, if it can re-read it; the names of what was applied.
        Raise UserError naming what cannot be changed live."""
        raise UserError(f"{self.name} cannot apply edits to a running solver; pause, edit, then restart")


def copy_if_absent(src: str, dest: str) -> str:
    """A shutil copy function for copying inputs into a fresh run directory: files already there win,
    because the engine lays the user's edited inputs (e2e edit --file) in before prepare() runs."""
    if not os.path.lexists(dest):
        shutil.copy2(src, dest)
    return dest


class Registry:
    """Solver plugins by name, loaded from the `orchestrator.solvers` entry-point group."""

    def __init__(self, plugins: dict[str, SolverPlugin], broken: dict[str, str] | None = None) -> None:
        self._plugins = dict(sorted(plugins.items()))
        self.broken = broken or {}

    @classmethod
    def from_classes(cls, classes: list[type[SolverPlugin]]) -> Registry:
        plugins: dict[str, SolverPlugin] = {}
        for plugin_cls in classes:
            _add(plugins, plugin_cls, origin=plugin_cls.__module__)
        return cls(plugins)

    @classmethod
    def from_entry_points(cls) -> Registry:
        plugins: dict[str, SolverPlugin] = {}
        origins: dict[str, str] = {}
        broken: dict[str, str] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if origins.get(ep.name) == ep.value:
                continue  # the same distribution seen twice (editable installs)
            try:
                plugin_cls = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the engine down
                log.warning("solver plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
                broken[ep.name] = f"{type(exc).__name__}: {exc}"
                continue
            if ep.name in plugins:
                raise PluginError(
                    f"two solver plugins are registered as {ep.name!r}: {origins[ep.name]} and {ep.value}"
                )
            if getattr(plugin_cls, "name", None) != ep.name:
                raise PluginError(f"entry point {ep.name!r} loads {ep.value}, whose name is {plugin_cls.name!r}")
            _add(plugins, plugin_cls, origin=ep.value)
            origins[ep.name] = ep.value
        return cls(plugins, broken)

    def names(self) -> list[str]:
        return list(self._plugins)

    def get(self, name: str) -> SolverPlugin:
        try:
            return self._plugins[name]
        except KeyError:
            raise UserError(f"unknown solver {name!r}; known solvers: {', '.join(self.names()) or 'none'}") from None

    def __iter__(self):
        return iter(self._plugins.values())


def _add(plugins: dict[str, SolverPlugin], plugin_cls: type[SolverPlugin], origin: str) -> None:
    name = getattr(plugin_cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"solver plugin {origin} has no name")
    if name in plugins:
        raise PluginError(f"two solver plugins are registered as {name!r}")
    options = getattr(plugin_cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, SolverOptions)):
        raise PluginError(f"solver plugin {name!r} must define Options as a SolverOptions subclass")
    plugins[name] = plugin_cls()


@lru_cache(maxsize=1)
def registry() -> Registry:
    """The process-wide registry of installed solver plugins."""
    return Registry.from_entry_points()
