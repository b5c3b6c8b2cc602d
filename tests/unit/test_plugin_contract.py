"""The contract suite (solvers/contract.py) run against every plugin shipped here, as a third party would."""

from __future__ import annotations

from pathlib import Path

import pytest

from solvers.calculix import CalculiX
from solvers.command import Command
from solvers.contract import PluginContract
from solvers.electronics import Electronics
from solvers.fluent import Fluent
from solvers.mechanical import Mechanical
from solvers.openfoam import OpenFOAM
from solvers.starccm import StarCCM

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"


class TestOpenFOAMContract(PluginContract):
    plugin = OpenFOAM

    @pytest.fixture
    def options(self, tmp_path):
        case = tmp_path / "case"
        (case / "system").mkdir(parents=True)
        (case / "system" / "controlDict").write_text("application simpleFoam;\nendTime 10;\n")
        return {"application": "simpleFoam", "case": str(case)}


class TestCommandContract(PluginContract):
    plugin = Command

    @pytest.fixture
    def options(self):
        return {"command": ["echo", "progress: 1/2"]}


class TestFluentContract(PluginContract):
    plugin = Fluent

    @pytest.fixture
    def options(self):
        return {"case": str(DATA / "elbow.cas.h5"), "iterations": 40}


class TestMechanicalContract(PluginContract):
    plugin = Mechanical

    @pytest.fixture
    def options(self):
        return {"input": str(DATA / "beam.dat"), "jobname": "beam"}


class TestElectronicsContract(PluginContract):
    plugin = Electronics

    @pytest.fixture
    def options(self):
        return {"project": str(DATA / "patch.aedt"), "design": "HFSSDesign1", "setup": "Setup1"}


class TestStarCCMContract(PluginContract):
    plugin = StarCCM

    @pytest.fixture
    def options(self):
        return {"sim": str(DATA / "pipe.sim"), "max_steps": 50}


class TestCalculiXContract(PluginContract):
    plugin = CalculiX

    @pytest.fixture
    def options(self):
        return {"input": str(DATA / "cantilever.inp")}


# -- the worked example of docs/plugins.md, extracted and run through the same suite

def _doc_example() -> type:
    """Write the guide's `file=` code blocks to a folder and import the example plugin from it."""
    import importlib.util
    import re
    import sys
    import tempfile

    guide = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    folder = Path(tempfile.mkdtemp(prefix="plugin-doc-"))
    blocks = re.findall(r"^```\w+ file=(\S+)\n(.*?)^```$", guide, re.M | re.S)
    assert {name for name, _ in blocks} == {"mysolver_plugin.py", "templates/mysolver/run.sh.j2"}
    for name, text in blocks:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    spec = importlib.util.spec_from_file_location("mysolver_plugin", folder / "mysolver_plugin.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the annotations through the module
    spec.loader.exec_module(module)
    return module.MySolver


class TestGuideExampleContract(PluginContract):
    plugin = _doc_example()

    @pytest.fixture
    def options(self, tmp_path):
        (tmp_path / "case.json").write_text("{}")
        return {"input": str(tmp_path / "case.json"), "steps": 100}

    def test_restart_continues_from_the_newest_checkpoint(self, options, tmp_path):
        from solvers.base import RunMode
        from solvers.contract import launch_context, prepare_and_render

        opts = self.validated(options)
        first = launch_context(tmp_path / "run", 3)
        _, script = prepare_and_render(self.plugin(), opts, first)
        assert "mpirun -np 6 -hostfile hostfile -x E2E_RUN_TAG mysolver --input case.json --steps 100 >" in script
        for step in (50, 100):
            (first.run_dir / f"step-{step}.chk").write_text("")
        _, script = prepare_and_render(self.plugin(), opts, launch_context(tmp_path / "run", 3, RunMode.RESTART, 2))
        assert "--restart step-100.chk > mysolver-2.log" in script
