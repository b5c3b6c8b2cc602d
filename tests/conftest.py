"""Shared test helpers: components that are missing skip locally and fail in CI (CI=true)."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) when a real component a test needs is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required in CI but missing: {what}")
    pytest.skip(f"missing: {what}")
