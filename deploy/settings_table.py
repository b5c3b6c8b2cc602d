"""Prints the README's table of E2E_* environment variables from the Settings model (fields, defaults,
descriptions), so the documentation cannot drift from the code: tests/unit/test_compose.py checks README
contains exactly this table.

    .venv/bin/python deploy/settings_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestrator.model.settings import Settings  # noqa: E402

COMPUTED = {"local_cores_per_node": "this machine's CPU count"}


def variables(name: str, field) -> str:
    aliases = getattr(field.validation_alias, "choices", None)
    names = [str(a) for a in aliases] if aliases else [f"E2E_{name.upper()}"]
    return " or ".join(f"`{n}`" for n in names)


def default(name: str, field) -> str:
    if name in COMPUTED:
        return COMPUTED[name]
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    return "(unset)" if value is None else f"`{value}`" if value != {} else "`{}`"


def table() -> str:
    rows = ["| Variable | Default | What it sets |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        text = (field.description or "").replace("|", "\\|")
        rows.append(f"| {variables(name, field)} | {default(name, field)} | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
