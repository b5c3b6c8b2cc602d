"""`e2e` commands that steer a job's runs: pause, resume, edit, restart, rerun, history."""

from __future__ import annotations
