"""Writes a run's directory: inputs through the solver plugin, hostfile, run.sh and the engine's wrapper."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.cluster.base import Node
from orchestrator.cluster.owned import hand_over_tree, traverse_only
from orchestrator.engine.runctl import run_tag
from orchestrator.model.identity import Account
from orchestrator.model.paths import JobPaths, RunPaths
from orchestrator.model.rendering import render
from solvers.base import TEMPLATES_ROOT, LaunchContext, NodeSlots, Prepared, RunMode, SolverPlugin


def openmpi_hostfile(nodes: tuple[NodeSlots, ...]) -> str:
    """Open MPI hostfile: one line per address with the slots summed (virtual nodes may share a host)."""
    slots: dict[str, int] = {}
    for node in nodes:
        slots[node.address] = slots.get(node.address, 0) + node.slots
    return "".join(f"{address} slots={count}\n" for address, count in slots.items())


def materialize_run(spec, plugin: SolverPlugin, job_id: str, run_id: str, nodes: list[Node],
                    paths: RunPaths, mode: RunMode = RunMode.FRESH,
                    site_env: dict[str, str] | None = None, stage_hosts: tuple[str, ...] = (),
                    account: Account | None = None) -> Prepared:
    """Write everything a run needs into its directory: inputs, hostfile, run.sh, the wrapper, and the
    staging helper run scripts call to reach stage_hosts (the other nodes' own copies of the directory)."""
    paths.meta.mkdir(parents=True, exist_ok=True)
    slots = tuple(NodeSlots(n.name, n.address, spec.cluster.cores_per_node) for n in nodes)
    paths.hostfile.write_text(openmpi_hostfile(slots))
    ctx = LaunchContext(job_id=job_id, run_id=run_id, run_dir=paths.root, nodes=slots,
                        hostfile=paths.hostfile.name, as_root=runs_as_root(account), mode=mode,
                        attempt=paths.attempt, site_env=dict(site_env or {}))
    prepared = plugin.prepare(spec.solver, ctx)
    script = render((plugin.templates_root,), prepared.template, {**prepared.context, "ctx": ctx})
    wrapper = render((plugin.templates_root,), "common/wrapper.sh.j2", {
        "run_dir": str(paths.root), "job_id": job_id, "run_id": run_id, "hostfile": str(paths.hostfile),
        "nprocs": ctx.nprocs, "env": prepared.env, "run_tag": run_tag(job_id, run_id),
        "meta": paths.relative(paths.meta), "attempt": paths.attempt, "mode": mode.value,
        "stage": str(paths.stage),
    })
    paths.stage.write_text(render((TEMPLATES_ROOT,), "common/stage.sh.j2", {
        "hosts": [f"[{h}]" if ":" in h else h for h in stage_hosts], "run_dir": str(paths.root)}))
    paths.stage.chmod(0o755)
    paths.script.write_text(script)
    paths.wrapper.write_text(wrapper)
    paths.wrapper.chmod(0o700)  # it may export licence settings
    return prepared


def runs_as_root(account: Account | None) -> bool:
    """Whether the run's processes are root's (MPI launchers then need to be told it is meant)."""
    return (os.geteuid() if account is None else account.uid) == 0


def prepare_job_tree(paths: JobPaths, state: Path, account: Account | None) -> None:
    """The job's folder on the engine host (work folder, runs): the account's, 0700, reached through
    $E2E_HOME and its jobs/ folder, which accounts may pass through but not list (0711)."""
    paths.work.mkdir(parents=True, exist_ok=True)
    (paths.root / "runs").mkdir(parents=True, exist_ok=True)
    traverse_only(state)
    traverse_only(paths.root.parent)
    paths.root.chmod(0o700)
    hand_over_tree(paths.root, account, state)
