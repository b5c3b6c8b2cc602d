"""What each step of a job's life does: provision, launch, observe, terminate; reconcile drives them all."""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from solvers.base import LaunchContext, NodeSlots, Prepared, Registry, SolverPlugin, registry

from .cluster import get_backend
from .cluster.base import ClusterBackend, Node
from .errors import E2EError, UserError
from .events import EventKind
from .faults import fault_point
from .paths import JobPaths, RunPaths, results_dir
from .rendering import render
from .services import ServiceContext, services
from .settings import Settings
from .spec import validate_spec
from .states import JobState, RunState
from .store import JobStore

log = logging.getLogger(__name__)

PID_WAIT = 2.0          # seconds launch waits for the wrapper's pid before leaving it to reconcile
LOG_CHUNK = 1 << 20     # bytes of solver log parsed per observation


class RunFilesOnNode:
    """A plugin's window onto a live run directory: relative paths only, routed through the backend."""

    def __init__(self, backend: ClusterBackend, node: Node, root: Path) -> None:
        self._backend, self._node, self._root = backend, node, root

    def _path(self, rel: str) -> Path:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            raise UserError(f"path {rel!r} must stay inside the run directory")
        return self._root / pure

    def read_text(self, rel: str) -> str:
        data = self._backend.read_bytes(self._node, self._path(rel))
        if data is None:
            raise FileNotFoundError(rel)
        return data.decode()

    def write_text(self, rel: str, text: str) -> None:
        self._backend.write_bytes(self._node, self._path(rel), text.encode())


@dataclass
class Lifecycle:
    """The engine's steps, each short and idempotent: safe to run twice, safe to resume after a crash."""

    store: JobStore
    settings: Settings
    plugins: Registry

    @classmethod
    def create(cls, store: JobStore, settings: Settings) -> Lifecycle:
        return cls(store, settings, registry())

    # -- helpers
    def backend_of(self, job: dict[str, Any]) -> ClusterBackend:
        return get_backend(job["backend"], self.settings)

    def nodes_of(self, job: dict[str, Any], backend: ClusterBackend) -> list[Node]:
        by_name = {n.name: n for n in backend.inventory()}
        return [by_name[name] for name in job["nodes"] if name in by_name]

    def paths(self, job_id: str) -> JobPaths:
        return JobPaths.for_job(self.settings.root, job_id)

    def spec_of(self, job: dict[str, Any]):
        return validate_spec(job["spec"], check_paths=False, source=f"job {job['id']} spec")

    def plugin_of(self, job: dict[str, Any]) -> SolverPlugin:
        return self.plugins.get(job["solver"])

    def service_context(self, job: dict[str, Any]) -> ServiceContext | None:
        backend = self.backend_of(job)
        nodes = self.nodes_of(job, backend)
        if not nodes:
            return None
        return ServiceContext(job=job, spec=self.spec_of(job), backend=backend, nodes=nodes,
                              paths=self.paths(job["id"]), store=self.store, settings=self.settings)

    def _each_service(self, job: dict[str, Any], step: str) -> bool:
        """Run one step (start, supervise, stop) of every wanted service; True when all stops finished."""
        ctx = self.service_context(job)
        if ctx is None:
            return True
        done = True
        for service in services():
            try:
                if not service.wanted(ctx):
                    continue
                result = getattr(service, step)(ctx)
                done = done and (result is not False)
            except (E2EError, OSError) as exc:  # a failing service is reported, never fatal to the job
                self.store.append_event(job["id"], EventKind.WARNING,
                                        {"service": service.name, "step": step, "message": str(exc)})
        return done

    # -- provision
    def provision(self, job_id: str) -> None:
        """QUEUED -> PROVISIONING (lease nodes) -> UP (directories ready), then launch the current run."""
        job = self.store.get_job(job_id)
        backend = self.backend_of(job)
        if job["state"] is JobState.QUEUED:
            spec = self.spec_of(job)
            leased = self.store.allocate(backend.name, job_id, spec.cluster.nodes,
                                         [n.name for n in backend.inventory()])
            if isinstance(leased, str):
                return  # waits in the queue (behind another job, or for free nodes); reconcile retries
            if not self.store.transition_job(job_id, JobState.PROVISIONING, expect=[JobState.QUEUED],
                                             data={"nodes": leased}, nodes=leased):
                return
            job = self.store.get_job(job_id)
        if job["state"] is not JobState.PROVISIONING:
            return
        try:
            for node in self.nodes_of(job, backend):
                backend.prepare_node(node, job_id)
            paths = self.paths(job_id)
            paths.work.mkdir(parents=True, exist_ok=True)
            (paths.root / "runs").mkdir(parents=True, exist_ok=True)
        except (E2EError, OSError) as exc:
            self.store.append_event(job_id, EventKind.ERROR, {"step": "provision", "message": str(exc)})
            self.store.transition_job(job_id, JobState.FAILED, expect=[JobState.PROVISIONING], error=str(exc))
            self.store.release(backend.name, job_id)
            return
        if self.store.transition_job(job_id, JobState.UP, expect=[JobState.PROVISIONING]):
            self._each_service(self.store.get_job(job_id), "start")
            self.launch(job_id, job["current_run"])

    # -- launch
    def launch(self, job_id: str, run_id: str) -> None:
        """PENDING -> LAUNCHING -> RUNNING. A second delivery never starts a second solver: the wrapper
        claims the run with an atomic mkdir, and only an unclaimed run is (re)spawned."""
        job = self.store.get_job(job_id)
        if job["state"] is not JobState.UP:
            return
        run = self.store.get_run(job_id, run_id)
        if run["state"] is RunState.PENDING:
            self.store.transition_run(job_id, run_id, RunState.LAUNCHING, expect=[RunState.PENDING],
                                      launch_requested_at=time.time())
            run = self.store.get_run(job_id, run_id)
        if run["state"] is not RunState.LAUNCHING:
            return
        backend = self.backend_of(job)
        nodes = self.nodes_of(job, backend)
        paths = self.paths(job_id).run(run_id)
        head = nodes[0]
        if not backend.exists(head, paths.claim):
            try:
                self._write_run_files(job, run_id, nodes, paths)
            except E2EError as exc:
                self.store.transition_run(job_id, run_id, RunState.FAILED, expect=[RunState.LAUNCHING],
                                          data={"reason": exc.message}, reason=exc.message, ended_at=time.time())
                return
            backend.stage_in(nodes, paths.root)
            fault_point("launch.before_spawn")
            backend.spawn_detached(head, ["bash", str(paths.wrapper)], cwd=paths.root)
            fault_point("launch.after_spawn")
        deadline = time.monotonic() + PID_WAIT
        while time.monotonic() < deadline:
            if self._adopt_started(job_id, run_id, backend, head, paths):
                return
            time.sleep(0.002)

    def _write_run_files(self, job: dict[str, Any], run_id: str, nodes: list[Node], paths: RunPaths) -> None:
        prepared = materialize_run(self.spec_of(job), self.plugin_of(job), job["id"], run_id, nodes, paths)
        self.store.update_run(job["id"], run_id, log_file=prepared.log_file,
                              progress_total=prepared.progress_total, node=nodes[0].name)

    def _adopt_started(self, job_id: str, run_id: str, backend: ClusterBackend, head: Node,
                       paths: RunPaths) -> bool:
        """LAUNCHING -> RUNNING once the wrapper has recorded its pid."""
        pid = backend.read_bytes(head, paths.pid)
        if not pid:
            return False
        started = backend.read_bytes(head, paths.started_at) or b""
        self.store.transition_run(job_id, run_id, RunState.RUNNING, expect=[RunState.LAUNCHING],
                                  data={"pid": int(pid)}, pid=int(pid),
                                  started_at=float(started or time.time()))
        return True

    # -- observe
    def observe(self, job: dict[str, Any], run: dict[str, Any]) -> None:
        """Move an active run along: adopt a started wrapper, parse new log, notice the exit, escalate stops."""
        job_id, run_id = job["id"], run["id"]
        backend = self.backend_of(job)
        nodes = self.nodes_of(job, backend)
        if not nodes:
            return
        head = nodes[0]
        paths = self.paths(job_id).run(run_id)
        state = run["state"]
        if state is RunState.LAUNCHING:
            if self._adopt_started(job_id, run_id, backend, head, paths):
                return
            if time.time() - (run.get("launch_requested_at") or 0) > self.settings.launch_timeout:
                log.warning("re-driving launch of %s/%s", job_id, run_id)
                self.store.update_run(job_id, run_id, launch_requested_at=time.time())
                self.launch(job_id, run_id)
            return
        if state not in (RunState.RUNNING, RunState.STOPPING):
            return
        plugin = self.plugin_of(job)
        self._follow_log(job_id, run, plugin, backend, head, paths)
        code = backend.read_bytes(head, paths.exit_code)
        if code is not None and code.strip():
            self._finish(job_id, run, plugin, int(code), backend, head, paths)
        elif not backend.group_alive(head, run["pid"]):
            reason = "the run's processes are gone and no exit code was recorded (killed?)"
            to = RunState.STOPPED if state is RunState.STOPPING else RunState.FAILED
            self.store.transition_run(job_id, run_id, to, expect=[state], data={"reason": reason},
                                      reason=reason, ended_at=time.time())
        elif state is RunState.STOPPING:
            self._escalate(job_id, run, backend, head)

    def _follow_log(self, job_id: str, run: dict[str, Any], plugin: SolverPlugin, backend: ClusterBackend,
                    head: Node, paths: RunPaths) -> None:
        if not run.get("log_file"):
            return
        offset = run.get("log_offset") or 0
        data = backend.read_bytes(head, paths.root / run["log_file"], offset, LOG_CHUNK)
        if not data:
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            return  # no complete line yet
        last = run.get("progress")
        progress = plugin.parse_progress(data[:cut].decode(errors="replace"), last)
        if progress is None:
            self.store.update_run(job_id, run["id"], log_offset=offset + cut)
            return
        if progress.total is None and run.get("progress_total") is not None:
            progress = progress.model_copy(update={"total": run["progress_total"]})
        self.store.record_progress(job_id, run["id"], progress, offset + cut)
        run["progress"], run["log_offset"] = progress, offset + cut

    def _finish(self, job_id: str, run: dict[str, Any], plugin: SolverPlugin, code: int,
                backend: ClusterBackend, head: Node, paths: RunPaths) -> None:
        tail = b""
        if run.get("log_file"):
            size_hint = max(0, (run.get("log_offset") or 0) - 8192)
            tail = backend.read_bytes(head, paths.root / run["log_file"], size_hint) or b""
        outcome = plugin.judge_exit(code, tail.decode(errors="replace")[-8192:])
        if run["state"] is RunState.STOPPING:
            to, reason = RunState.STOPPED, f"stopped on request ({outcome.reason})"
        else:
            to, reason = (RunState.COMPLETED if outcome.ok else RunState.FAILED), outcome.reason
        ended = backend.read_bytes(head, paths.meta / "ended_at") or b""
        self.store.transition_run(job_id, run["id"], to, expect=[run["state"]],
                                  data={"exit_code": code, "reason": reason}, exit_code=code, reason=reason,
                                  ended_at=float(ended or time.time()))

    def _escalate(self, job_id: str, run: dict[str, Any], backend: ClusterBackend, head: Node) -> None:
        now = time.time()
        asked = run.get("stop_requested_at") or now
        if run.get("term_sent_at") is None and now - asked > self.settings.stop_grace:
            backend.signal_group(head, run["pid"], signal.SIGTERM)
            self.store.update_run(job_id, run["id"], term_sent_at=now)
            self.store.append_event(job_id, EventKind.WARNING, {
                "run": run["id"], "message": f"graceful stop took over {self.settings.stop_grace:.0f}s: sent SIGTERM"})
        elif run.get("term_sent_at") and run.get("kill_sent_at") is None \
                and now - run["term_sent_at"] > self.settings.kill_grace:
            backend.signal_group(head, run["pid"], signal.SIGKILL)
            self.store.update_run(job_id, run["id"], kill_sent_at=now)
            self.store.append_event(job_id, EventKind.WARNING, {"run": run["id"], "message": "sent SIGKILL"})

    # -- terminate
    def stop_run(self, job: dict[str, Any], run: dict[str, Any]) -> None:
        """Ask an active run to stop: graceful through its plugin, else SIGTERM at once."""
        job_id, run_id = job["id"], run["id"]
        state = run["state"]
        if state is RunState.PENDING:
            self.store.transition_run(job_id, run_id, RunState.STOPPED, expect=[state], reason="never started")
            return
        backend = self.backend_of(job)
        nodes = self.nodes_of(job, backend)
        paths = self.paths(job_id).run(run_id)
        if state is RunState.LAUNCHING and nodes:
            if self._adopt_started(job_id, run_id, backend, nodes[0], paths):
                return self.stop_run(job, self.store.get_run(job_id, run_id))
            try:  # take the claim ourselves, so no wrapper can start this run any more
                paths.meta.mkdir(parents=True, exist_ok=True)
                paths.claim.mkdir()
            except FileExistsError:
                return  # a wrapper claimed it: it records its pid within moments; next pass stops it
            self.store.transition_run(job_id, run_id, RunState.STOPPED, expect=[state], reason="stopped before start",
                                      ended_at=time.time())
            return
        if state is not RunState.RUNNING:
            return
        if not self.store.transition_run(job_id, run_id, RunState.STOPPING, expect=[RunState.RUNNING],
                                         stop_requested_at=time.time()):
            return
        head = nodes[0]
        graceful = False
        try:
            graceful = self.plugin_of(job).request_stop(RunFilesOnNode(backend, head, paths.root))
        except (OSError, E2EError) as exc:
            self.store.append_event(job_id, EventKind.WARNING, {"run": run_id, "message": f"graceful stop failed: {exc}"})
        if not graceful:
            backend.signal_group(head, run["pid"], signal.SIGTERM)
            self.store.update_run(job_id, run_id, term_sent_at=time.time())

    def drive_termination(self, job_id: str) -> None:
        """TERMINATING: stop the run, wait for it (across passes), then collect results and release nodes."""
        job = self.store.get_job(job_id)
        if job["state"] is not JobState.TERMINATING:
            return
        run = self.store.get_run(job_id, job["current_run"])
        if run["state"] in (RunState.PENDING, RunState.LAUNCHING, RunState.RUNNING):
            self.stop_run(job, run)
            run = self.store.get_run(job_id, run["id"])
        if run["state"] is RunState.STOPPING:
            self.observe(job, run)
            run = self.store.get_run(job_id, run["id"])
        if run["state"] in (RunState.PENDING, RunState.LAUNCHING, RunState.RUNNING, RunState.STOPPING):
            return  # not yet: the next pass looks again
        if not self._each_service(job, "stop"):
            return  # a service (the final sync) is still finishing
        backend = self.backend_of(job)
        nodes = self.nodes_of(job, backend)
        for r in self.store.list_runs(job_id):  # no process of any run may outlive the cluster
            if r.get("pid") and nodes:
                backend.signal_group(nodes[0], r["pid"], signal.SIGKILL)
        dest = results_dir(self.settings.root, job_id)
        paths = self.paths(job_id)
        for r in self.store.list_runs(job_id):
            if nodes and r["state"] is not RunState.PENDING:
                backend.stage_out(nodes, paths.run(r["id"]).root)
        if paths.root.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            if nodes:
                backend.collect(nodes[0], paths.root, dest)
        self.store.release(backend.name, job_id)
        self.store.transition_job(job_id, JobState.TERMINATED, expect=[JobState.TERMINATING],
                                  data={"results": str(dest)}, results=str(dest), nodes=[])

    # -- reconcile
    def reconcile_job(self, job_id: str) -> None:
        """One observation of one job, moving its state machine where the world has moved."""
        job = self.store.get_job(job_id)
        state = job["state"]
        if state is JobState.QUEUED:
            self.provision(job_id)
        elif state is JobState.PROVISIONING:
            if time.time() - job["updated_at"] > self.settings.launch_timeout:
                self.provision(job_id)
        elif state is JobState.UP:
            self.observe(job, self.store.get_run(job_id, job["current_run"]))
            self._each_service(job, "supervise")
        elif state is JobState.TERMINATING:
            self.drive_termination(job_id)

    def reconcile(self) -> int:
        """One pass over every active job; errors in one job do not stop the others."""
        count = 0
        queued = self.store.queued_jobs()
        for job_id in self.store.active_jobs():
            if job_id in queued and queued.index(job_id) > 0:
                continue  # strictly first-in, first-out: only the head of the queue may take nodes
            try:
                self.reconcile_job(job_id)
            except E2EError as exc:
                log.warning("reconcile %s: %s", job_id, exc.message)
            except Exception:  # noqa: BLE001 - one bad job must not stop the loop; logged with its traceback
                log.exception("reconcile %s failed", job_id)
            count += 1
        return count


def openmpi_hostfile(nodes: tuple[NodeSlots, ...]) -> str:
    """Open MPI hostfile: one line per address with the slots summed (virtual nodes may share a host)."""
    slots: dict[str, int] = {}
    for node in nodes:
        slots[node.address] = slots.get(node.address, 0) + node.slots
    return "".join(f"{address} slots={count}\n" for address, count in slots.items())


def materialize_run(spec, plugin: SolverPlugin, job_id: str, run_id: str, nodes: list[Node],
                    paths: RunPaths) -> Prepared:
    """Write everything a run needs into its directory: inputs, hostfile, run.sh and the wrapper."""
    paths.meta.mkdir(parents=True, exist_ok=True)
    slots = tuple(NodeSlots(n.name, n.address, spec.cluster.cores_per_node) for n in nodes)
    paths.hostfile.write_text(openmpi_hostfile(slots))
    ctx = LaunchContext(job_id=job_id, run_id=run_id, run_dir=paths.root, nodes=slots,
                        hostfile=paths.hostfile.name, as_root=os.geteuid() == 0)
    prepared = plugin.prepare(spec.solver, ctx)
    script = render((plugin.templates_root,), prepared.template, {**prepared.context, "ctx": ctx})
    wrapper = render((plugin.templates_root,), "common/wrapper.sh.j2", {
        "run_dir": str(paths.root), "job_id": job_id, "run_id": run_id, "hostfile": str(paths.hostfile),
        "nprocs": ctx.nprocs, "env": prepared.env, "run_tag": f"{job_id}/{run_id}",
    })
    paths.script.write_text(script)
    paths.wrapper.write_text(wrapper)
    paths.wrapper.chmod(0o700)  # it may export licence settings
    return prepared
