"""The run-time staging helper ($E2E_STAGE): exact rsync argv per host, hostile values stay data, failures
reported; which nodes it reaches; the SFTP fallback's newest-wins rule."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.cluster.base import Node
from orchestrator.cluster.transfer import _kept
from orchestrator.engine.lifecycle import stage_hosts
from orchestrator.model.rendering import render
from solvers.base import TEMPLATES_ROOT
from tests.unit.test_rendering import PAYLOADS, hostile

BASH = shutil.which("bash") or "/bin/bash"
# One record per call (a file named by the stub's pid): argv NUL-separated; a FAIL in any argument fails it.
RSYNC_STUB = '#!/bin/bash\nfor a in "$@"; do printf \'%s\\0\' "$a"; done > "$CALLS/$$"\n[[ "$*" != *FAIL* ]]\n'


def _run(tmp_path: Path, hosts: list[str], run_dir: str, verb: str) -> tuple[subprocess.CompletedProcess, list]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "rsync").write_text(RSYNC_STUB)
    (bin_dir / "rsync").chmod(0o755)
    script = tmp_path / "stage.sh"
    script.write_text(render((TEMPLATES_ROOT,), "common/stage.sh.j2", {"hosts": hosts, "run_dir": run_dir}))
    calls = tmp_path / "calls"
    shutil.rmtree(calls, ignore_errors=True)
    calls.mkdir()
    done = subprocess.run([BASH, str(script), verb], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls)})
    return done, sorted([a.decode() for a in f.read_bytes().split(b"\0")[:-1]] for f in calls.iterdir())


def test_spread_and_gather_copy_the_run_directory_with_each_host(tmp_path):
    done, calls = _run(tmp_path, ["10.0.0.2", "[fe80::1]"], "/runs/run-001", "spread")
    assert done.returncode == 0, done.stderr
    rsh = "ssh -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3"
    common = ["-a", "-s", "--update", "--timeout=600", "--exclude=/.e2e/", "-e", rsh]
    assert calls == sorted([[*common, "/runs/run-001/", f"{h}:/runs/run-001/"] for h in ("10.0.0.2", "[fe80::1]")])
    assert "e2e stage: spread with 2 node(s) took " in done.stderr  # the cost, in the wrapper's log
    done, calls = _run(tmp_path, ["10.0.0.2"], "/runs/run-001", "gather")
    assert done.returncode == 0 and calls == [[*common, "10.0.0.2:/runs/run-001/", "/runs/run-001/"]]


def test_no_hosts_copies_nothing_and_a_failed_host_is_named(tmp_path):
    done, calls = _run(tmp_path, [], "/runs/r", "gather")
    assert done.returncode == 0 and calls == []
    done, calls = _run(tmp_path, ["ok-host", "FAIL-host"], "/runs/r", "gather")
    assert done.returncode == 1 and "gather with FAIL-host failed" in done.stderr and len(calls) == 2
    done, _ = _run(tmp_path, ["h"], "/runs/r", "sideways")
    assert done.returncode == 64


@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_hosts_and_run_directories_stay_single_arguments(payload, tmp_path):
    mark = tmp_path / "MARK"
    value = hostile(payload, mark)
    done, calls = _run(tmp_path, [value], value, "spread")
    assert not mark.exists(), "INJECTION"
    assert done.returncode == 0, done.stderr
    assert [c[-2:] for c in calls] == [[f"{value}/", f"{value}:{value}/"]]


def test_only_other_nodes_with_their_own_disks_are_staged_to():
    nodes = [Node(n, a, 1, Path("/s")) for n, a in (("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3"),
                                                    ("a2", "10.0.0.1"), ("b2", "10.0.0.2"))]
    own = SimpleNamespace(shares_storage=lambda node: node.name == "c")
    assert stage_hosts(own, nodes) == ("10.0.0.2",)
    shared = SimpleNamespace(shares_storage=lambda node: True)
    assert stage_hosts(shared, nodes) == ()


def test_the_sftp_fallback_keeps_a_newer_or_identical_destination():
    def attrs(mtime: float, size: int):
        return SimpleNamespace(st_mtime=mtime, st_size=size)
    assert not _kept(None, attrs(10, 1))
    assert _kept(attrs(11, 1), attrs(10, 5))        # newer destination: a stale source never replaces it
    assert not _kept(attrs(9, 1), attrs(10, 1))     # older destination: replaced
    assert _kept(attrs(10.7, 3), attrs(10.2, 3))    # same second, same size: unchanged
    assert not _kept(attrs(10, 3), attrs(10, 4))    # same second, other size: copied
