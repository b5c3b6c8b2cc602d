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
