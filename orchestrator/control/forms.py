"""Edit forms from a solver plugin's options schema: the fields a client (the desktop panel, the monitor) shows for
a job, with their kinds, current values and whether a running solver takes them live.

Built here, once, rather than in each client: the panel is a standalone stdlib script on the head node, and the
schema's details (nullable `anyOf`, enums, secrets, input files) are the engine's to read, not every client's."""

from __future__ import annotations

from typing import Any

from solvers.base import SolverPlugin, registry

# Options a form never offers: input files and folders (replaced with `e2e edit --file` or an upload), secrets
# (never shown, even masked), lists and nested models (edited as key=value on the form's free line).
_SKIPPED_FORMATS = ("path", "password")
_SCALARS = {"string", "integer", "number", "boolean"}


def solver_catalog() -> list[dict[str, Any]]:
    """Every installed solver plugin: its name, summary, options schema and live-editable options."""
    return [solver_document(plugin) for plugin in registry()]


def solver_document(plugin: SolverPlugin) -> dict[str, Any]:
    return {"name": plugin.name, "summary": plugin.summary, "schema": plugin.Options.model_json_schema(),
            "live": list(plugin.live_fields)}


def _plain(prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The property's own schema without its `null` alternative, and whether null is allowed."""
    options = prop.get("anyOf")
    if not options:
        return prop, False
    rest = [o for o in options if o.get("type") != "null"]
    return ({**rest[0], **{k: v for k, v in prop.items() if k != "anyOf"}} if len(rest) == 1 else {}), \
        len(rest) < len(options)


def _kind(schema: dict[str, Any]) -> str | None:
    if schema.get("format") in _SKIPPED_FORMATS or "const" in schema:
        return None
    if "enum" in schema:
        return "choice"
    kind = schema.get("type")
    return kind if kind in _SCALARS else None


def form_fields(plugin: SolverPlugin, solver: dict[str, Any]) -> list[dict[str, Any]]:
    """The fields of an edit form for `solver` (the job's masked `solver:` block), in the options' order: one per
    scalar option, and one per entry of a free-form mapping of scalars (OpenFOAM's `parameters`). Kinds: string,
    integer, number, boolean, choice (with `choices`), and value (a mapping's entry: a number or a word, sent as
    typed, so 0.7 stays a number)."""
    schema = plugin.Options.model_json_schema()
    fields: list[dict[str, Any]] = []
    for name, prop in schema.get("properties", {}).items():
        plain, nullable = _plain(prop)
        live = name in plugin.live_fields
        help_text = prop.get("description", "")
        if plain.get("type") == "object" and plain.get("additionalProperties") is not False:
            entries = plain.get("additionalProperties")
            kind = _kind(entries) if isinstance(entries, dict) else "value"  # typed entries (env: strings) or any
            for key, value in sorted((solver.get(name) or {}).items()):
                if kind is None or isinstance(value, (dict, list)):
                    continue
                fields.append({"path": f"solver.{name}.{key}", "label": key, "kind": kind,
                               "value": value, "nullable": False, "live": live, "help": help_text})
            continue
        kind = _kind(plain)
        if kind is None:
            continue
        field: dict[str, Any] = {"path": f"solver.{name}", "label": name, "kind": kind,
                                 "value": solver.get(name, plain.get("default")), "nullable": nullable, "live": live,
                                 "help": help_text}
        if kind == "choice":
            field["choices"] = list(plain["enum"])
        fields.append(field)
    return fields


def job_form(plugin: SolverPlugin, solver: dict[str, Any], allowed: list[str]) -> dict[str, Any]:
    """The edit form of a job: its fields, and whether "apply live" can be offered now (the plugin takes some
    options live and the job accepts a live edit in its state)."""
    return {"solver": plugin.name, "summary": plugin.summary, "fields": form_fields(plugin, solver),
            "live": list(plugin.live_fields),
            "can_apply_live": bool(plugin.live_fields) and "edit-live" in allowed,
            "free": "further changes as spec paths, KEY=VALUE (e.g. description=..., limits.walltime=2h)"}
