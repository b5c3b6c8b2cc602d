"""`e2e demo` reads its showcase from examples/demo.yaml: the engine itself names no solver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.demo import MANIFEST, find_demo, prepare_case
from orchestrator.model.errors import StackError, UserError
from orchestrator.model.spec import validate_spec

REPO = Path(__file__).resolve().parents[2]


def test_the_repository_demo_names_a_valid_job_spec_and_its_inputs():
    demo = find_demo([REPO / "examples"])
    assert demo.manifest == REPO / "examples" / MANIFEST
    assert demo.job.is_file() and demo.inputs and demo.summary
    data = yaml.safe_load(demo.job.read_text())
    validate_spec(data, base_dir=demo.job.parent, check_paths=False)


def test_by_default_the_source_tree_examples_are_found():
    assert find_demo().manifest == REPO / "examples" / MANIFEST


def write_demo(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.yaml").write_text("name: j\nsolver: {name: command, command: [cat, data.txt]}\n")
    (folder / MANIFEST).write_text(yaml.safe_dump({"job": "job.yaml", **fields}))
    return folder


def test_inputs_and_the_spec_are_copied_into_a_fresh_folder(tmp_path):
    (tmp_path / "src" / "case").mkdir(parents=True)
    (tmp_path / "src" / "case" / "a").write_text("a")
    (tmp_path / "src" / "data.txt").write_text("d")
    folder = write_demo(tmp_path / "examples", inputs={"case": "../src/case", "data.txt": str(tmp_path / "src" /
                                                                                               "data.txt")})
    dest = tmp_path / "demo"
    (dest / "old").mkdir(parents=True)
    spec = prepare_case(find_demo([folder]), dest)
    assert spec == dest / "job.yaml" and spec.read_text().startswith("name: j")
    assert (dest / "case" / "a").read_text() == "a" and (dest / "data.txt").read_text() == "d"
    assert not (dest / "old").exists()


def test_a_missing_input_says_how_to_get_it(tmp_path):
    folder = write_demo(tmp_path / "examples", inputs={"case": "/nonexistent/case"}, missing="apt-get install x")
    with pytest.raises(StackError, match=r"input 'case' is missing \(/nonexistent/case\): apt-get install x"):
        prepare_case(find_demo([folder]), tmp_path / "demo")


def test_no_examples_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="e2e demo needs examples/demo.yaml from the source tree"):
        find_demo([tmp_path / "nowhere"])


@pytest.mark.parametrize("content, match", [
    ("just text", "needs `job:`"),
    ("job: absent.yaml\ninputs: {}\n", "does not exist"),
    ("job: job.yaml\ninputs: {'../up': /tmp}\n", "plain file or folder names"),
])
def test_a_bad_manifest_is_named(tmp_path, content, match):
    folder = write_demo(tmp_path / "examples")
    (folder / MANIFEST).write_text(content)
    with pytest.raises(UserError, match=match):
        find_demo([folder])


def test_e2e_demo_takes_its_examples_from_E2E_EXAMPLES_and_names_a_missing_input(tmp_path):
    folder = write_demo(tmp_path / "mine", inputs={"case": "/nonexistent/case"}, missing="install the case")
    env = {**os.environ, "E2E_EXAMPLES": str(folder), "E2E_HOME": str(tmp_path / "home"),
           "REDIS_URL": "redis://127.0.0.1:1/0"}  # an external Redis: the demo starts no engine of its own
    proc = subprocess.run([str(Path(sys.executable).with_name("e2e")), "demo"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "input 'case' is missing (/nonexistent/case): install the case" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
