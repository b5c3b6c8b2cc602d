"""DesktopService: starts, supervises and stops the job's desktop session on its head node."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from orchestrator.cluster.base import NodeUnreachable
from orchestrator.cluster.identity import account_for
from orchestrator.desktop import apps as desktop_apps
from orchestrator.desktop import nodes
from orchestrator.desktop.access import EVERYWHERE, is_everywhere, resolve, split_families
from orchestrator.desktop.panel_app import MARGIN as PANEL_MARGIN
from orchestrator.desktop.panel_app import WIDTH as PANEL_WIDTH
from orchestrator.desktop.rfb import RFBError, handshake
from orchestrator.desktop.secrets import DesktopSecret, DesktopSecrets
from orchestrator.desktop.vncauth import passwd_file
from orchestrator.model.errors import BackendError, PluginError, UserError
from orchestrator.model.events import EventKind
from orchestrator.model.identity import Account
from orchestrator.model.records import DesktopRecord, Job
from orchestrator.model.rendering import Raw, render
from orchestrator.model.services import JobService, ServiceContext
from orchestrator.model.states import DesktopState
from solvers.base import DesktopApp, DesktopContext, registry, terminal_and_files

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
GATEWAY_SOURCE = Path(__file__).with_name("gateway.py")
PANEL_SOURCE = Path(__file__).with_name("panel_app.py")  # the job panel, shipped as the session's panel.py
PANEL_FORM_SOURCE = Path(__file__).with_name("panel_form.py")  # its edit form, shipped beside it
# The panel runs on the head node's system python3 (where python3-tk is), not on whatever python3 PATH finds first
PANEL_PYTHON = 'if [ -x /usr/bin/python3 ]; then exec /usr/bin/python3 -s "$@"; fi; exec python3 -s "$@"'
NOVNC_DIR = "/usr/share/novnc"

STARTING, READY, FAILED, STOPPED = DesktopState.STARTING, DesktopState.READY, DesktopState.FAILED, DesktopState.STOPPED
READY_WAIT = 2.0          # seconds start() waits for the first login before leaving it to supervise
START_TIMEOUT = 30.0      # seconds a session may take to accept a login before it counts as failed
MAX_RESTARTS = 5          # restarts after deaths while the job is up, before giving up
STOP_GRACE = 5.0          # seconds between SIGTERM and SIGKILL on stop
BLACKLIST_THRESHOLD = 10  # failed logins before Xvnc shuns an address; every web viewer arrives from 127.0.0.1
REFUSALS_PER_PASS = 20    # refusal events per reconcile pass; the rest are counted in one event
ACTIVITY_EVERY = 30.0     # seconds between the gateway's looks for connected viewers (idle shutdown input)
# TigerVNC's line for a login it refused: "VNCSConnST:  closing 127.0.0.1::45678: Authentication failure"
_VNC_REFUSAL = re.compile(r"closing (\S+?)::\d+: (Authentication failure|Too many security failures|"
                          r"Too many authentication attempts)")
_VNC_REASONS = {"Authentication failure": "wrong VNC password"}
# Written empty before a (re)start, so a reader never takes a previous session's files for this one's.
_SESSION_FILES = ("pgid", "vnc.port", "gateway.port", "display", "failed", "panel.json")


def nftables_rules(job_id: str, port: int, cidrs: list[str]) -> str:
    """An nftables file letting only the CIDRs reach the gateway port (CIDRs are validated networks)."""
    v4, v6 = split_families(cidrs)
    return render((TEMPLATES,), "desktop/nftables.conf.j2", {
        "job_id": job_id, "port": port, "v4": Raw(", ".join(v4)), "v6": Raw(", ".join(v6)),
        "everywhere": is_everywhere(cidrs), "remove": False})


def nftables_removal(job_id: str) -> str:
    """An nftables file taking the job's rules away (and loading cleanly when they are already gone)."""
    return render((TEMPLATES,), "desktop/nftables.conf.j2", {"job_id": job_id, "remove": True})


JOB_PANEL = "Job panel"


def main_area(geometry: str) -> tuple[int, int, int, int]:
    """Where a plugin's main window goes, (x, y, width, height): left of the job panel, the whole height (on a
    desktop too narrow for both, it overlaps the panel, which stays on top)."""
    width, height = (int(v) for v in geometry.split("x"))
    return 0, 0, max(640, width - PANEL_WIDTH - PANEL_MARGIN - 8), height - 8


def job_panel(desk: Path) -> DesktopApp:
    """The panel as a desktop app: started with the session, in the menu; it skips itself (a note in
    session.log) where tkinter is missing, as a missing program is skipped."""
    return DesktopApp(JOB_PANEL, ("sh", "-c", PANEL_PYTHON, "panel", str(desk / "panel.py")))


def desktop_record(job: Job | dict[str, Any]) -> DesktopRecord:
    """The job's desktop record (empty before the desktop first starts); from a stored job, or from a job
    document as the API sends it."""
    value = job.desktop if isinstance(job, Job) else job.get("desktop")
    if isinstance(value, DesktopRecord):
        return value
    if isinstance(value, str):  # a field not decoded (raw hash)
        value = json.loads(value)
    return DesktopRecord.model_validate(value or {})


def _account(ctx: ServiceContext) -> Account | None:
    """The job owner's OS account: the session runs as it, and only its processes are signalled."""
    return account_for(ctx.job.account)


class DesktopService(JobService):
    """One session per job: a single process group (session.sh) holding Xvnc, openbox, xterm and the gateway."""

    name = "desktop"

    def wanted(self, ctx: ServiceContext) -> bool:
        return bool(ctx.spec.desktop.enabled)

    # -- the three hooks
    def start(self, ctx: ServiceContext) -> None:
        with self._lock(ctx) as mine:
            if not mine:
                return
            rec = self._record(ctx)
            if rec.state in (STARTING, READY) and self._alive(ctx):
                return  # adopt the session that already runs (a re-delivered provision)
            if rec.state is FAILED and rec.permanent:
                return
            self._launch(ctx, rec)
            deadline = time.monotonic() + READY_WAIT
            while time.monotonic() < deadline:
                if self._check_starting(ctx, self._record(ctx)) is not STARTING:
                    return
                time.sleep(0.02)

    def supervise(self, ctx: ServiceContext) -> None:
        with self._lock(ctx) as mine:
            if not mine:
                return
            rec = self._record(ctx)
            state = rec.state
            if state is None:
                return self._launch(ctx, rec)
            if state in (FAILED, STOPPED):
                return
            self._report_refusals(ctx, rec)
            self._report_activity(ctx)
            if state is STARTING:
                self._check_starting(ctx, rec)
            elif not self._alive(ctx):
                self._restart(ctx, rec, "the desktop session exited")
            else:
                self._apply_password(ctx, rec)

    def stop(self, ctx: ServiceContext) -> bool:
        with self._lock(ctx, wait=5) as mine:
            if not mine:
                return False
            rec = self._record(ctx)
            if not rec.model_fields_set or rec.state is STOPPED:
                return True
            pgid = self._pgid(ctx)
            if pgid and ctx.backend.group_alive(ctx.head, pgid):
                now = time.time()
                if not rec.term_sent_at:
                    ctx.backend.signal_group(ctx.head, pgid, signal.SIGTERM, _account(ctx))
                    self._save(ctx, term_sent_at=now)
                elif now - rec.term_sent_at > STOP_GRACE:
                    ctx.backend.signal_group(ctx.head, pgid, signal.SIGKILL, _account(ctx))
                for _ in range(50):  # the session usually ends within moments: spare the job a pass
                    if not ctx.backend.group_alive(ctx.head, pgid):
                        break
                    time.sleep(0.02)
                else:
                    return False
            self._report_refusals(ctx, self._record(ctx))
            if rec.firewall:
                self._load_rules(ctx, "nftables-removal.conf", nftables_removal(ctx.job_id), "removed")
            self._set_state(ctx, STOPPED, {}, url=None, firewall=False)
            DesktopSecrets(ctx.store).delete(ctx.job_id)
            return True

    # -- steps
    def _launch(self, ctx: ServiceContext, rec: DesktopRecord) -> None:
        """Write the session's files on the head node and start session.sh detached (ending any old one)."""
        try:
            cidrs = resolve(ctx.spec.desktop.access or [EVERYWHERE])  # concrete already, unless submitted around
        except UserError as exc:
            self._fail(ctx, exc.message, permanent=True)
            return
        old = self._pgid(ctx)
        if old and ctx.backend.group_alive(ctx.head, old):  # half-dead: e.g. Xvnc up but its display never came
            ctx.backend.signal_group(ctx.head, old, signal.SIGKILL, _account(ctx))
        secret = DesktopSecrets(ctx.store).ensure(ctx.job_id)
        desk = self.folder(ctx)
        write = lambda name, data: ctx.backend.write_bytes(ctx.head, desk / name, data)  # noqa: E731
        nodes.make_dirs(ctx.backend, ctx.head, desk, 0o700)
        for name in _SESSION_FILES:
            write(name, b"")
        nodes.write_private(ctx.backend, ctx.head, desk / "passwd", passwd_file(secret.password, secret.view_password))
        write("gateway.py", GATEWAY_SOURCE.read_bytes())
        write("gateway.json", json.dumps({
            "listen": nodes.listen_host(ctx.head), "token": secret.token, "allowed": cidrs, "web": NOVNC_DIR,
            "port_file": str(desk / "gateway.port"), "refused_file": str(desk / "refused.log"),
            "failed_file": str(desk / "failed"), "activity_file": str(desk / "activity"),
            "activity_every": ACTIVITY_EVERY,
        }).encode())
        nodes.write_private(ctx.backend, ctx.head, desk / "e2e.env", self.session_env(ctx, secret).encode())
        self._write_apps(ctx, desk)
        write("session.sh", self.session_script(ctx, desk).encode())
        restarts = rec.restarts
        self._set_state(ctx, STARTING, {"restarts": restarts} if restarts else {}, restarts=restarts,
                        started_at=time.time(),
                        access=cidrs, password_version=secret.version, url=None, reason=None,
                        term_sent_at=None, **self._log_offsets(ctx))
        account = _account(ctx)
        ctx.backend.hand_over(ctx.head, desk, account)  # the session is the owner's; its password file 0600
        ctx.backend.spawn_detached(ctx.head, ["bash", str(desk / "session.sh")], cwd=desk, account=account)

    def session_env(self, ctx: ServiceContext, secret: DesktopSecret) -> str:
        """The session's E2E_JOB, and E2E_SERVER with the job-scoped token minted at submit (E2E_TOKEN): `e2e
        status` in the desktop's terminal needs no argument, and can act on this job only. A file (0600, the
        owner's) that session.sh sources, so the token is never on a command line."""
        env = {"E2E_JOB": ctx.job_id}
        if secret.api_token:  # none for a job of the engine machine's own user: its CLI talks to the engine
            env.update(E2E_SERVER=ctx.settings.resolved_api_url(), E2E_TOKEN=secret.api_token)
        lines = [f"{name}={shlex.quote(value)}" for name, value in env.items()]
        engine_bin = Path(sys.executable).parent
        if nodes.is_loopback(ctx.head) and (engine_bin / "e2e").exists():  # this machine: the engine's own CLI
            lines.append(f"PATH={shlex.quote(str(engine_bin))}:\"$PATH\"")
        return "\n".join(lines) + "\n"

    def apps(self, ctx: ServiceContext, desk: Path) -> list[DesktopApp]:
        """What the job's solver plugin puts on the desktop, checked (the engine itself knows no solver)."""
        plugin = registry().get(ctx.spec.solver.name)
        try:
            run = ctx.job.current_run
            found = plugin.desktop_apps(ctx.spec.solver, DesktopContext(
                ctx.job_id, run, desk / "apps", ctx.paths.work_of(run), main_area(ctx.spec.desktop.geometry)))
            return desktop_apps.check(list(found))
        except PluginError as exc:  # a plugin's mistake costs its apps, not the desktop
            ctx.store.append_event(ctx.job_id, EventKind.WARNING, {
                "service": self.name, "message": f"{plugin.name} desktop apps refused ({exc}); a terminal instead"})
            return terminal_and_files()

    def _write_apps(self, ctx: ServiceContext, desk: Path) -> None:
        """The job panel (panel.py) and the plugin's apps' helper files, their launcher (apps.sh) and the openbox
        menu listing them (menu.xml). The panel comes first: every desktop has it, whatever the solver."""
        ctx.backend.write_bytes(ctx.head, desk / "panel.py", PANEL_SOURCE.read_bytes())
        ctx.backend.write_bytes(ctx.head, desk / "panel_form.py", PANEL_FORM_SOURCE.read_bytes())
        found = [job_panel(desk), *(a for a in self.apps(ctx, desk) if a.name != JOB_PANEL)]
        nodes.make_dirs(ctx.backend, ctx.head, desk / "apps", 0o700)
        for app in found:
            for name, text in app.files.items():
                nodes.make_dirs(ctx.backend, ctx.head, (desk / "apps" / name).parent, 0o700)
                ctx.backend.write_bytes(ctx.head, desk / "apps" / name, text.encode())
        ctx.backend.write_bytes(ctx.head, desk / "apps.sh",
                                desktop_apps.launcher(ctx.job_id, ctx.paths.work, found).encode())
        ctx.backend.write_bytes(ctx.head, desk / "menu.xml", desktop_apps.menu(desk / "apps.sh", found).encode())

    def session_script(self, ctx: ServiceContext, desk: Path) -> str:
        spec = ctx.spec.desktop
        home = nodes.home_dir(ctx.backend, ctx.head) if nodes.own_home(ctx.backend) else None
        if home is not None and ctx.job.account:  # a virtual node's home is shared: each job's own instead
            home = desk / "home"
        return render((TEMPLATES,), "desktop/session.sh.j2", {
            "job_id": ctx.job_id, "desktop_dir": str(desk), "work_dir": str(ctx.paths.work),
            "home": str(home) if home else "", "geometry": spec.geometry, "depth": spec.depth,
            "title": f"{ctx.job.name or 'job'} ({ctx.job_id})", "novnc_dir": NOVNC_DIR,
            "blacklist_threshold": BLACKLIST_THRESHOLD,
            # openbox runs its startup command: the plugin's apps, each in its folder of the work folder
            "startup": f"bash {desk / 'apps.sh'} --session",
        })

    def _check_starting(self, ctx: ServiceContext, rec: DesktopRecord) -> DesktopState:
        """STARTING -> READY once a VNC login works and the gateway listens; FAILED on a reported failure."""
        desk = self.folder(ctx)
        failed = self._read(ctx, desk / "failed")
        if failed:
            kind, _, reason = failed.partition(":")
            if kind == "missing":  # a component to install: restarting cannot help
                return self._fail(ctx, reason.strip(), permanent=True)
            self._restart(ctx, rec, reason.strip() or failed)
            return self._record(ctx).state or STARTING
        vnc_port, web_port = self._read(ctx, desk / "vnc.port"), self._read(ctx, desk / "gateway.port")
        secret = DesktopSecrets(ctx.store).read(ctx.job_id)
        try:
            works = bool(vnc_port and web_port and secret) and self._login_works(ctx, int(vnc_port), secret)
        except NodeUnreachable:
            raise  # a passing fault: reported as a warning, and the next pass checks again
        except BackendError as exc:  # the node cannot carry a VNC connection at all (e.g. no TCP forwarding)
            return self._fail(ctx, exc.message, permanent=True)
        if works:
            url = f"http://{nodes.public_host(ctx.head)}:{int(web_port)}/vnc.html"
            self._set_state(ctx, READY, {"url": url}, url=url, vnc_port=int(vnc_port), web_port=int(web_port),
                            display=self._read(ctx, desk / "display"), ready_at=time.time(),
                            ssh=list(nodes.ssh_endpoint(ctx.backend, ctx.head, _account(ctx))))
            self._firewall(ctx, int(web_port), rec.access or [])
            return READY
        alive = self._alive(ctx)
        if time.time() - (rec.started_at or time.time()) > START_TIMEOUT:
            return self._fail(ctx, f"no VNC login possible within {START_TIMEOUT:.0f}s; see {desk}/xvnc.log")
        if not alive and self._pgid(ctx):
            self._restart(ctx, rec, "the desktop session exited while starting")
        return STARTING

    def _login_works(self, ctx: ServiceContext, port: int, secret: DesktopSecret) -> bool:
        """The readiness check: a real VncAuth login with the session password."""
        try:
            stream = nodes.open_tcp(ctx.backend, ctx.head, port)
        except OSError:
            return False
        try:
            handshake(stream, secret.password)
            return True
        except (RFBError, OSError):
            return False
        finally:
            stream.close()

    def _restart(self, ctx: ServiceContext, rec: DesktopRecord, why: str) -> None:
        restarts = rec.restarts + 1
        if restarts > MAX_RESTARTS:
            self._fail(ctx, f"{why}, {MAX_RESTARTS} restarts did not help; see {self.folder(ctx)}")
            return
        ctx.store.append_event(ctx.job_id, EventKind.WARNING, {"service": self.name,
                                                               "message": f"{why}; restarting ({restarts})"})
        self._launch(ctx, rec.merged(restarts=restarts))

    def _fail(self, ctx: ServiceContext, reason: str, permanent: bool = False) -> DesktopState:
        pgid = self._pgid(ctx)
        if pgid and ctx.backend.group_alive(ctx.head, pgid):
            ctx.backend.signal_group(ctx.head, pgid, signal.SIGKILL, _account(ctx))
        self._set_state(ctx, FAILED, {"reason": reason}, reason=reason, permanent=permanent, url=None)
        return FAILED

    def _apply_password(self, ctx: ServiceContext, rec: DesktopRecord) -> None:
        """A changed password (e2e desktop --set-password) reaches the passwd file Xvnc reads at every login."""
        secret = DesktopSecrets(ctx.store).read(ctx.job_id)
        if secret is None or secret.version == rec.password_version:
            return
        nodes.write_private(ctx.backend, ctx.head, self.folder(ctx) / "passwd",
                            passwd_file(secret.password, secret.view_password))
        ctx.backend.hand_over(ctx.head, self.folder(ctx), _account(ctx))  # Xvnc (the owner) reads it
        self._save(ctx, password_version=secret.version)
        ctx.store.append_event(ctx.job_id, EventKind.DESKTOP, {"state": READY, "message": "VNC password changed"})

    def _report_refusals(self, ctx: ServiceContext, rec: DesktopRecord) -> None:
        """Refusals on the head node become ACCESS_REFUSED events: the gateway's (its refused.log) and Xvnc's
        failed VNC logins (wrong password, or an address blacklisted after too many), read from xvnc.log."""
        refused = self._new_lines(ctx, rec, "refused.log", "refused_offset")
        found = []
        for line in refused:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            found.append({"entry": "web gateway", "address": entry.get("address"), "reason": entry.get("reason")})
        for line in self._new_lines(ctx, rec, "xvnc.log", "xvnc_offset"):
            if (m := _VNC_REFUSAL.search(line)):
                reason = _VNC_REASONS.get(m.group(2), m.group(2))
                found.append({"entry": "vnc", "address": m.group(1), "reason": reason})
        for data in found[:REFUSALS_PER_PASS]:
            ctx.store.append_event(ctx.job_id, EventKind.ACCESS_REFUSED, data)
        if len(found) > REFUSALS_PER_PASS:
            ctx.store.append_event(ctx.job_id, EventKind.ACCESS_REFUSED, {
                "entry": "desktop", "message": f"{len(found) - REFUSALS_PER_PASS} more refusals"})

    def _log_offsets(self, ctx: ServiceContext) -> dict[str, int]:
        """How far the logs were read, from the stored record (a caller's copy may predate the last read)."""
        fresh = self._record(ctx)
        return {"refused_offset": fresh.refused_offset, "xvnc_offset": fresh.xvnc_offset}

    def _new_lines(self, ctx: ServiceContext, rec: DesktopRecord, name: str, offset_field: str) -> list[str]:
        """Complete lines a head-node log gained since the offset kept on the desktop record (then moved on)."""
        offset = getattr(rec, offset_field) or 0  # refused_offset or xvnc_offset
        data = ctx.backend.read_bytes(ctx.head, self.folder(ctx) / name, offset, 1 << 16)
        if not data:
            return []
        cut = data.rfind(b"\n") + 1
        self._save(ctx, **{offset_field: offset + cut})
        return [ln for ln in data[:cut].decode(errors="replace").splitlines() if ln.strip()]

    def _report_activity(self, ctx: ServiceContext) -> None:
        """A viewer connected lately: the job is in use, whatever its runs do (limits.idle_shutdown reads this)."""
        text = self._read(ctx, self.folder(ctx) / "activity")
        try:
            seen = float(text)
        except ValueError:
            return
        if seen > (ctx.store.get_job(ctx.job_id).desktop_activity_at or 0):
            ctx.store.update_job(ctx.job_id, desktop_activity_at=seen)

    def _firewall(self, ctx: ServiceContext, port: int, cidrs: list[str]) -> None:
        """nftables rules for the gateway port, rendered always and loaded where the backend can (real nodes)."""
        if self._load_rules(ctx, "nftables.conf", nftables_rules(ctx.job_id, port, cidrs), "loaded"):
            self._save(ctx, firewall=True)

    def _load_rules(self, ctx: ServiceContext, name: str, text: str, what: str) -> bool:
        """Write an nftables file beside the session and load it on the head node; whether it was loaded."""
        path = self.folder(ctx) / name
        ctx.backend.write_bytes(ctx.head, path, text.encode())
        try:
            return nodes.apply_firewall(ctx.backend, ctx.head, path)
        except BackendError as exc:
            ctx.store.append_event(ctx.job_id, EventKind.WARNING, {"service": self.name,
                                                                   "message": f"firewall rules not {what}: {exc}"})
            return False

    # -- record and files
    @staticmethod
    def folder(ctx: ServiceContext) -> Path:
        return ctx.paths.root / "desktop"

    def _record(self, ctx: ServiceContext) -> DesktopRecord:
        return desktop_record(ctx.store.get_job(ctx.job_id))

    def _save(self, ctx: ServiceContext, **fields: Any) -> None:
        ctx.store.update_job(ctx.job_id, desktop=self._record(ctx).merged(**fields))

    def _set_state(self, ctx: ServiceContext, state: DesktopState, event: dict[str, Any], **fields: Any) -> None:
        self._save(ctx, state=state, **fields)
        ctx.store.append_event(ctx.job_id, EventKind.DESKTOP, {"state": state, **event})

    def _read(self, ctx: ServiceContext, path: Path) -> str:
        return (ctx.backend.read_bytes(ctx.head, path) or b"").decode(errors="replace").strip()

    def _pgid(self, ctx: ServiceContext) -> int | None:
        text = self._read(ctx, self.folder(ctx) / "pgid")
        return int(text) if text.isdigit() else None

    def _alive(self, ctx: ServiceContext) -> bool:
        pgid = self._pgid(ctx)
        return bool(pgid) and ctx.backend.group_alive(ctx.head, pgid)

    @contextlib.contextmanager
    def _lock(self, ctx: ServiceContext, wait: float = 0) -> Iterator[bool]:
        """One step at a time per desktop: provision's start and a reconcile pass may overlap."""
        lock = ctx.store.locks.desktop(ctx.job_id, timeout=60, wait=wait)
        got = lock.acquire()
        try:
            yield bool(got)
        finally:
            if got:
                with contextlib.suppress(Exception):
                    lock.release()
