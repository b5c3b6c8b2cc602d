"""Monitor files parsed into series (samples captured from real OpenFOAM 1912 and CalculiX runs, and the
emulators' report files), and the engine tailing them through the backend into the store."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from orchestrator.cluster.base import Node
from orchestrator.cluster.local import LocalBackend
from orchestrator.engine.series import follow_series
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.settings import Settings
from solvers.calculix import CalculiX
from solvers.fluent import Fluent
from solvers.openfoam import OpenFOAM
from solvers.series import parse_ccx_cvg, parse_ccx_sta, parse_fluent_report, parse_foam_table, parse_star_csv
from solvers.starccm import StarCCM

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "series"  # captured from real runs
FOAM = SAMPLES / "openfoam"


def _foam(rel: str) -> dict:
    return parse_foam_table(rel, (FOAM / rel).read_text(), {})


def test_force_coefficients_are_named_by_function_object_and_column():
    points = _foam("postProcessing/fc/0/coefficient.dat")
    assert set(points) == {f"fc/{c}" for c in ("Cd", "Cs", "Cl", "CmRoll", "CmPitch", "CmYaw", "Cd(f)", "Cd(r)",
                                                 "Cs(f)", "Cs(r)", "Cl(f)", "Cl(r)")}
    assert points["fc/Cd"] == [[1.0, -2.379127e-04], [2.0, -3.321176e-05], [3.0, -1.145629e-05]]
    assert points["fc/Cl(r)"][-1] == [3.0, -1.107482e-04]


def test_force_vectors_give_one_series_per_component():
    points = _foam("postProcessing/forces1/0/force.dat")
    assert points["forces1/force/total_x"][0] == [1.0, -1.189564e-02]
    assert points["forces1/force/viscous_z"][0] == [1.0, 3.030007e-21]
    assert len(points) == 9 and all(len(p) == 8 for p in points.values())


def test_probes_name_each_probe_and_vector_component():
    scalar = _foam("postProcessing/probes1/0/p")
    assert scalar["probes1/p/0"][:2] == [[1.0, 524.317], [2.0, 80.6593]]
    assert scalar["probes1/p/1"][0] == [1.0, 321.013]
    vector = _foam("postProcessing/probes1/0/U")
    assert vector["probes1/U/0_y"][0] == [1.0, -3.53234]
    assert vector["probes1/U/1_x"][0] == [1.0, 2.85513]


def test_field_min_max_rows_are_per_field_and_skip_locations():
    points = _foam("postProcessing/minmax/0/fieldMinMax.dat")
    assert set(points) == {"minmax/mag(U)/min", "minmax/mag(U)/max", "minmax/p/min", "minmax/p/max"}
    assert points["minmax/p/max"][:2] == [[1.0, 746.5363], [2.0, 106.7442]]


def test_solver_info_keeps_numbers_and_skips_solver_names_and_flags():
    points = _foam("postProcessing/residuals/0/solverInfo.dat")
    assert points["residuals/p_initial"][1] == [2.0, 5.2242e-02]
    assert "residuals/U_solver" not in points and "residuals/p_converged" not in points


def test_a_header_read_earlier_names_the_rows_of_a_later_read():
    text = (FOAM / "postProcessing/fc/0/coefficient.dat").read_text().splitlines(keepends=True)
    state: dict = {}
    first = parse_foam_table("postProcessing/fc/0/coefficient.dat", "".join(text[:13]), state)
    later = parse_foam_table("postProcessing/fc/0/coefficient.dat", "".join(text[13:]), state)
    assert first == {} and later["fc/Cd"][0] == [1.0, -2.379127e-04]


def test_a_restart_continues_the_same_series_names():
    # a restart writes <startTime>/, or <startTime>/coefficient_<startTime>.dat when that folder had the file
    text = (FOAM / "postProcessing/fc/0/coefficient.dat").read_text()
    for rel in ("postProcessing/fc/100/coefficient.dat", "postProcessing/fc/100/coefficient_100.dat"):
        assert "fc/Cd" in parse_foam_table(rel, text, {})
    assert "probes1/p/0" in parse_foam_table("postProcessing/probes1/100/p_100", "# Probe 0\n# Time\n101 5\n", {})


def test_files_that_are_not_function_object_tables_are_skipped():
    state: dict = {}
    assert parse_foam_table("postProcessing/surfaces/100/p_plane.vtk", "# vtk DataFile\n1 2\n", state) == {}
    assert state["skip"] is True


def test_calculix_increments_and_convergence():
    sta = parse_ccx_sta((SAMPLES / "calculix/beamnldy.sta").read_text(), {})
    assert sta["increments/iterations"] == [[5e-06, 3.0]]
    state: dict = {}
    cvg = parse_ccx_cvg((SAMPLES / "calculix/beamnldy.cvg").read_text(), state)
    assert [p[1] for p in cvg["convergence/residual_force"]] == [1105.0, 0.7769, 0.0]
    assert state["rows"] == 3
    more = parse_ccx_cvg("     1     2     1     1        0  0.5000E+01  0.1000E+01  0.0000E+00  0.0000E+00\n", state)
    assert more["convergence/residual_force"] == [[4.0, 5.0]]  # x counts iterations across reads


def test_fluent_report_file_and_star_monitor_export():
    fluent = parse_fluent_report("report-def-0-rfile.out", '"report-def-0-rfile"\n"Iteration" "cd-1"\n'
                                 '("Iteration" "cd-1")\n1 0.39512294\n2 0.39048374\n', {})
    assert fluent == {"report-def-0-rfile/cd-1": [[1.0, 0.39512294], [2.0, 0.39048374]]}
    star = parse_star_csv("Cd.csv", '"Iteration","Cd Monitor: Cd"\n1,3.951229E-01\n2,nan\n', {})
    assert star["Cd/Cd Monitor: Cd"][0] == [1.0, 0.3951229] and math.isnan(star["Cd/Cd Monitor: Cd"][1][1])


def test_every_plugin_that_writes_monitor_files_says_where():
    assert OpenFOAM().series_files() == ("postProcessing/*/*/*",)
    assert CalculiX().series_files() == ("*.sta", "*.cvg")
    assert Fluent().series_files() == ("*.out",) and StarCCM().series_files() == ("*.csv",)


# -- the engine's side: tail through the backend, offsets in the run record, points and one event in the store
@pytest.fixture
def run_dir(tmp_path, store):
    settings = Settings(home=tmp_path / "home", redis_url="redis://unused", local_nodes=1, local_cores_per_node=1)
    job_id = store.create_job(name="s", owner="u", spec={}, backend="local", solver="openfoam")
    paths = JobPaths.for_job(settings.root, job_id).run("run-001", 1)
    paths.root.mkdir(parents=True)
    return settings, job_id, paths


def test_follow_series_reads_only_new_complete_lines_and_stores_points(store, run_dir):
    settings, job_id, paths = run_dir
    backend = LocalBackend(settings)
    head = Node("n1", "localhost", 1, settings.root)
    table = paths.root / "postProcessing/fc/0/coefficient.dat"
    table.parent.mkdir(parents=True)
    lines = (FOAM / "postProcessing/fc/0/coefficient.dat").read_text().splitlines(keepends=True)
    table.write_text("".join(lines[:14]) + lines[14][:10])  # the third row half written
    run = store.get_run(job_id, "run-001")
    got = follow_series(store, job_id, run, OpenFOAM(), backend, head, paths)
    assert got["fc/Cd"] == [[1.0, -2.379127e-04]]
    with table.open("a") as fh:
        fh.write(lines[14][10:] + lines[15])
    run = store.get_run(job_id, "run-001")  # as the next pass reads it
    got = follow_series(store, job_id, run, OpenFOAM(), backend, head, paths)
    assert [p[0] for p in got["fc/Cd"]] == [2.0, 3.0]
    assert store.series_points(job_id, "run-001", "fc/Cd") == [[1.0, -2.379127e-04], [2.0, -3.321176e-05],
                                                               [3.0, -1.145629e-05]]
    assert "fc/Cl" in store.series_names(job_id, "run-001")
    record = store.get_run(job_id, "run-001").series_files["postProcessing/fc/0/coefficient.dat"]
    assert record["offset"] == table.stat().st_size and record["columns"][0] == "Cd"
    events = [e for e in store.events(job_id) if e.kind is EventKind.SERIES]
    assert len(events) == 2 and events[0].data["run"] == "run-001"
    assert {s["name"] for s in events[1].data["series"]} >= {"fc/Cd", "fc/Cl"}
    assert follow_series(store, job_id, store.get_run(job_id, "run-001"), OpenFOAM(), backend, head, paths) == {}


def test_a_symlinked_monitor_file_or_folder_is_never_listed_nor_read(store, run_dir, tmp_path):
    settings, job_id, paths = run_dir
    secret = tmp_path / "secret.dat"
    secret.write_text("# Time a\n1 42\n")
    (paths.root / "postProcessing/x/0").mkdir(parents=True)
    (paths.root / "postProcessing/x/0/a.dat").symlink_to(secret)
    (tmp_path / "elsewhere/0").mkdir(parents=True)
    (tmp_path / "elsewhere/0/b.dat").write_text("# Time b\n1 7\n")
    (paths.root / "postProcessing/y").symlink_to(tmp_path / "elsewhere")  # a folder on the way
    backend = LocalBackend(settings)
    assert backend.list_files(Node("n1", "localhost", 1, settings.root), paths.root, ("postProcessing/*/*/*",)) == []
    got = follow_series(store, job_id, store.get_run(job_id, "run-001"), OpenFOAM(), LocalBackend(settings),
                        Node("n1", "localhost", 1, settings.root), paths)
    assert got == {} and store.series_names(job_id, "run-001") == []


def test_a_backlog_is_stored_whole_but_each_event_carries_the_latest_points(store, run_dir):
    from orchestrator.store.series import EVENT_POINTS, MAX_NAME

    _, job_id, _ = run_dir
    points = {"r/p": [[float(i), 1.0 / (i + 1)] for i in range(EVENT_POINTS + 20)], "x" * (MAX_NAME + 1): [[1.0, 2.0]]}
    assert store.record_series(job_id, "run-001", points, {}) == ["r/p"]  # an over-long name is dropped
    assert len(store.series_points(job_id, "run-001", "r/p")) == EVENT_POINTS + 20
    event = [e for e in store.events(job_id) if e.kind is EventKind.SERIES][-1]
    batch = event.data["series"][0]
    assert batch["skipped"] == 20 and len(batch["points"]) == EVENT_POINTS
    assert batch["points"][-1][0] == EVENT_POINTS + 19


def test_a_pass_reads_within_its_byte_budget_and_the_next_pass_goes_on(store, run_dir, monkeypatch):
    import orchestrator.engine.series as series_module

    settings, job_id, paths = run_dir
    monkeypatch.setattr(series_module, "SERIES_BUDGET", 100)
    for name in ("a", "b"):
        table = paths.root / f"postProcessing/{name}/0/{name}.dat"
        table.parent.mkdir(parents=True)
        table.write_text("# Time v\n" + "".join(f"{i} {i * 2}\n" for i in range(1, 30)))
    backend, head = LocalBackend(settings), Node("n1", "localhost", 1, settings.root)
    first = follow_series(store, job_id, store.get_run(job_id, "run-001"), OpenFOAM(), backend, head, paths)
    assert set(first) == {"a/a/v"}  # the first file used the pass's budget
    second = follow_series(store, job_id, store.get_run(job_id, "run-001"), OpenFOAM(), backend, head, paths)
    assert set(second) == {"b/b/v"} and len(second["b/b/v"]) == 29


def test_a_file_a_restart_rewrote_shorter_is_read_again_from_its_start(store, run_dir):
    # probes rewrite their file when a restart starts in the same time folder: it is shorter than the offset
    settings, job_id, paths = run_dir
    probe = paths.root / "postProcessing/probes1/0/p"
    probe.parent.mkdir(parents=True)
    header = "# Probe 0 (0 0 0)\n#       Probe 0\n#        Time\n"
    probe.write_text(header + "".join(f"{i} {i}.5\n" for i in range(1, 40)))
    backend, head = LocalBackend(settings), Node("n1", "localhost", 1, settings.root)
    follow_series(store, job_id, store.get_run(job_id, "run-001"), OpenFOAM(), backend, head, paths)
    probe.write_text(header + "31 7\n32 8\n")
    run = store.get_run(job_id, "run-001")
    assert follow_series(store, job_id, run, OpenFOAM(), backend, head, paths) == {}  # same attempt: no look
    run.attempt = 2  # the restart
    again = follow_series(store, job_id, run, OpenFOAM(), backend, head, paths)
    assert again == {"probes1/p/0": [[31.0, 7.0], [32.0, 8.0]]}
    assert store.get_run(job_id, "run-001").series_files["postProcessing/probes1/0/p"]["attempt"] == 2
