"""A node's network drops (its namespace link goes down) in the middle of a run on the ssh test cluster: how
long the engine takes to notice, what becomes of the run, and whether anything is left running on any node
once the job is terminated and the link is back."""

from __future__ import annotations

import statistics
import time

import pytest
import redis

from orchestrator.cluster.local import tagged_processes
from orchestrator.engine.node_health import LEFTOVER_RETRY
from orchestrator.model.events import EventKind
from orchestrator.model.states import JobState, RunState
from tests.integration.conftest import Engine, make_settings, wait_for
from tests.integration.ssh.conftest import own_cluster  # noqa: F401 - a 3-node cluster of this test's own

from .conftest import Tally, sized

pytestmark = [pytest.mark.integration, pytest.mark.timeout(sized(300, 2400))]

TRIALS = sized(2, 6)   # alternating: the head node (where the solver runs) and the other node of a 2-node job


def test_node_network_drop_midrun_is_detected_and_leaves_nothing_behind(own_cluster, redis_url, tmp_path):  # noqa: F811 (the imported fixture)
    url = f"{redis_url}/4"
    redis.Redis.from_url(url).flushdb()
    engine = Engine(make_settings(tmp_path / "home", url, inventory=own_cluster.inventory()))
    client = engine.client
    tally = Tally()
    detections: list[float] = []
    outcomes: list[str] = []
    cleanups: list[float] = []
    hit: set[str] = set()
    try:
        for trial in range(TRIALS):
            job_id = client.submit_data({"name": f"netdrop-{trial}", "desktop": {"enabled": False},
                                         "cluster": {"backend": "ssh", "nodes": 2},
                                         "solver": {"name": "command", "command": ["sleep", "600"]}})
            tag = f"{job_id}/run-001"
            wait_for(lambda: client.status(job_id).runs_detail[0].state is RunState.RUNNING, 60, "RUNNING")
            wait_for(lambda: tagged_processes(tag), 30, "the solver process on its node")
            victim_name = client.status(job_id).nodes[trial % 2]
            victim = next(n for n in own_cluster.nodes if n.name == victim_name)
            # When the node's link goes down mid-run
            cut_at = time.time()
            own_cluster.cut(victim)
            try:
                # Then the run fails naming the node, and terminate still completes without it
                run = wait_for(lambda: (r := client.status(job_id).runs_detail[0]).state in
                               (RunState.FAILED, RunState.COMPLETED) and r, 60, "the run to end")
                failed = next(e for e in client.events(job_id) if e.kind is EventKind.NODE_FAILED)
                detections.append(failed.ts - cut_at)
                outcomes.append(f"{'head' if trial % 2 == 0 else 'other'}: run {run.state.value}")
                if run.state is not RunState.FAILED or victim_name not in (run.reason or ""):
                    tally.problem(job_id, f"{tag} ended {run.state.value}: {run.reason}")
                client.terminate(job_id)
                doc = engine.wait_job_terminal(job_id, timeout=90)
                if doc.state is not JobState.TERMINATED:
                    tally.problem(job_id, f"{job_id} ended {doc.state.value}")
            finally:
                own_cluster.mend(victim)
            mended = time.monotonic()
            # ... and once the link is back, no process of the run is left on any node (a terminate that could
            # not reach the node leaves them to the engine's cleanup of silent nodes that answer again)
            try:
                wait_for(lambda: not tagged_processes(tag), LEFTOVER_RETRY + 30, f"{tag} gone after the mend")
                cleanups.append(time.monotonic() - mended)
            except AssertionError:
                left = tagged_processes(tag)
                tally.orphans += len(left)
                tally.problem(job_id, f"{tag}: {len(left)} processes left after terminate (node {victim_name})")
            tally.jobs += 1
            hit.add(job_id)
        tally.settle(hit)
        tally.record("fault: node network drop", f"detected in {statistics.median(detections):.1f}s median "
                     f"(max {max(detections):.1f}s) over {TRIALS} drops; leftovers killed "
                     f"{max(cleanups, default=0):.0f}s after the link came back; orphans {tally.orphans}",
                     detection_seconds=[round(d, 2) for d in detections], outcomes=outcomes,
                     cleanup_seconds=[round(c, 1) for c in cleanups])
        tally.assert_clean()
    finally:
        engine.close()
