"""Renders launch templates with a sandboxed, strict jinja2 environment that shell-quotes every value."""

from __future__ import annotations

import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from orchestrator.model.errors import PluginError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# shlex.quote leaves these bare, and bash would read them as keywords (`time`, `if`), not commands.
_RESERVED = frozenset("! case coproc do done elif else esac fi for function if in select then time until while "
                      "{ } [[ ]]".split())


class Raw(str):
    """A trusted fragment the renderer must not quote (built by the engine, never from user input)."""


def shell_quote(value: Any) -> Any:
    """finalize hook: every `{{ value }}` lands in the shell as one quoted word, except numbers and Raw."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    text = str(value)
    if text in _RESERVED:
        return f"'{text}'"
    return shlex.quote(text)


def env_name(value: Any) -> Raw:
    """Filter for the left side of `export NAME=...`: a shell identifier or a render error."""
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise PluginError(f"{value!r} is not a valid environment variable name")
    return Raw(value)


@lru_cache(maxsize=8)
def environment(*roots: Path) -> ImmutableSandboxedEnvironment:
    """One environment per set of template roots (cached: building it compiles nothing, loading does)."""
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader([str(r) for r in roots]),
        undefined=StrictUndefined,
        finalize=shell_quote,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["env_name"] = env_name
    return env


def render(roots: tuple[Path, ...], template: str, context: dict[str, Any]) -> str:
    """Render `template` (a name under one of `roots`) with `context`; template bugs become PluginError."""
    try:
        return environment(*roots).get_template(template).render(**context)
    except TemplateError as exc:
        raise PluginError(f"template {template!r} failed to render: {exc}") from exc
