"""The in-process client: `Client` is the engine-side control service (orchestrator.control.service), kept under
its old name for scripts, benchmarks and tests."""

from __future__ import annotations

from orchestrator.control.protocol import run_finished, wait_until
from orchestrator.control.service import ControlService
from orchestrator.control.steering import ALLOWED_PAUSE, TERMINABLE

Client = ControlService

__all__ = ["ALLOWED_PAUSE", "TERMINABLE", "Client", "ControlService", "run_finished", "wait_until"]
