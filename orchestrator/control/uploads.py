"""Input folders of specs submitted through the API: they live in the user's uploads folder, and a spec may
only name folders inside it. The remote client finds the same fields to upload them first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator.model.errors import SpecError


def uploads_root(home: Path, user: str) -> Path:
    return home / "uploads" / user


def path_fields(model: Any, prefix: str = "") -> list[tuple[str, Path]]:
    """Every Path value in a validated spec (input folders, case files), with its field name."""
    found: list[tuple[str, Path]] = []
    if isinstance(model, BaseModel):
        for name in type(model).model_fields:
            found += path_fields(getattr(model, name), f"{prefix}{name}.")
    elif isinstance(model, Path):
        found.append((prefix.rstrip("."), model))
    elif isinstance(model, (list, tuple)):
        for index, item in enumerate(model):
            found += path_fields(item, f"{prefix}{index}.")
    elif isinstance(model, dict):
        for key, item in model.items():
            found += path_fields(item, f"{prefix}{key}.")
    return found


def check_inside_uploads(spec: Any, base: Path) -> None:
    """Refuse a spec naming a path outside the user's uploads (another user's files, the server's)."""
    base = base.resolve()
    problems = [(field, "must be a folder you uploaded (POST /uploads), named relative to your uploads")
                for field, path in path_fields(spec)
                if not Path(path).resolve().is_relative_to(base)]
    if problems:
        raise SpecError(problems)
