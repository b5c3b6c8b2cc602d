"""The `e2e` command's entry point: a problem met while the CLI loads (an invalid E2E_* setting) is one message."""

from __future__ import annotations

import sys

from orchestrator.model.errors import E2EError, InfrastructureError


def main() -> None:
    try:
        from orchestrator.cli.main import main as run  # loading it reads the settings (the Celery app needs them)
    except E2EError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(3 if isinstance(exc, InfrastructureError) else 2)
    run()
