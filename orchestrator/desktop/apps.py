"""The desktop's apps: checks a plugin's DesktopApp list and renders their launcher script and openbox menu."""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath
from xml.sax.saxutils import escape, quoteattr

from orchestrator.model.errors import PluginError
from orchestrator.model.rendering import Raw, render
from solvers.base import DesktopApp

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check(apps: list[DesktopApp]) -> list[DesktopApp]:
    """The plugin's apps, or PluginError naming the app and field a launcher could not carry safely."""
    names: set[str] = set()
    for app in apps:
        if not isinstance(app, DesktopApp):
            raise PluginError(f"desktop_apps returned {type(app).__name__}, not DesktopApp")
        if not app.name or not app.name.isprintable() or app.name in names:
            raise PluginError(f"desktop app name {app.name!r} is empty, not printable or given twice")
        names.add(app.name)
        if not app.argv or any(not isinstance(a, str) or "\0" in a or "\n" in a for a in app.argv) or not app.argv[0]:
            raise PluginError(f"desktop app {app.name!r}: argv must be non-empty strings on one line each")
        for what, rel in (("cwd", app.cwd), ("wait_for", app.wait_for)):
            if rel is not None and not _relative(rel):
                raise PluginError(f"desktop app {app.name!r}: {what} {rel!r} must be relative and stay inside")
        for name in app.files:
            if not _relative(name) or name.endswith("/"):
                raise PluginError(f"desktop app {app.name!r}: file name {name!r} must be relative and stay inside")
        for key, value in app.env.items():
            if not _ENV_NAME.match(key) or "\0" in value or "\n" in value:
                raise PluginError(f"desktop app {app.name!r}: env {key!r} is not a variable name and one-line value")
    return apps


def _relative(rel: str) -> bool:
    path = PurePosixPath(rel)
    return bool(rel) and "\0" not in rel and "\n" not in rel and not path.is_absolute() and ".." not in path.parts


def launcher(job_id: str, work_dir: Path, apps: list[DesktopApp]) -> str:
    """apps.sh: `apps.sh --session` starts the session's apps, `apps.sh N` the N-th (the menu's items)."""
    return render((TEMPLATES,), "desktop/apps.sh.j2", {
        "job_id": job_id, "work_dir": str(work_dir),
        "apps": [{"index": i, "name": a.name, "argv": list(a.argv), "cwd": a.cwd, "wait_for": a.wait_for or "",
                  "optional": a.optional, "session": a.start_with_session,
                  "env": [Raw(f"{k}={shlex.quote(v)}") for k, v in a.env.items()]} for i, a in enumerate(apps, 1)],
    })


def menu(launcher_path: Path, apps: list[DesktopApp]) -> str:
    """openbox's root menu (right click on the desktop): every app, so a closed one can be opened again."""
    items = []
    for i, app in enumerate(apps, 1):
        # openbox splits <command> like a shell (g_shell_parse_argv): quote the path, then escape for XML
        command = escape(shlex.join(["bash", str(launcher_path), str(i)]))
        items.append(f'  <item label={quoteattr(app.name)}><action name="Execute"><command>{command}</command>'
                     f'</action></item>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<openbox_menu xmlns="http://openbox.org/3.4/menu">\n'
            '<menu id="root-menu" label="Job">\n' + "\n".join(items) + "\n"
            '  <separator />\n  <item label="Reconfigure"><action name="Reconfigure" /></item>\n'
            '</menu>\n</openbox_menu>\n')
