"""The job panel's Edit form: its fields (from the job's edit form, GET /jobs/{job}/form, which the engine builds from
the solver plugin's options schema), the Tk dialog showing them, and the POST /edit body built from what changed.

Standalone like the panel (stdlib + tkinter): shipped beside it into the session's folder as panel_form.py."""

from __future__ import annotations

import json
from typing import Any, Callable

KINDS = ("string", "integer", "number", "boolean", "choice", "value")


def parameter_fields(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Fields when the engine's form cannot be had (no API): the job's solver.parameters, each taken as typed."""
    params = ((doc.get("spec") or {}).get("solver") or {}).get("parameters") or {}
    return [{"path": f"solver.parameters.{name}", "label": name, "kind": "value", "value": value, "nullable": False,
             "live": False, "help": ""} for name, value in sorted(params.items())]


def shown(value: Any) -> str:
    """A field's value as the form shows it."""
    return "" if value is None else json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)


def _assignment(field: dict[str, Any], typed: str) -> str:
    """`path=value` for a changed field, the value written so the engine's YAML reading gets the right type back;
    ValueError names the field when the text cannot be its kind."""
    path, kind, text = field["path"], field.get("kind", "value"), typed.strip()
    if not text and field.get("nullable"):
        return f"{path}=null"
    if kind == "boolean":
        return f"{path}={'true' if text.lower() in ('1', 'true', 'yes', 'on') else 'false'}"
    if kind in ("string", "choice"):
        if kind == "choice" and text not in [str(c) for c in field.get("choices", [])]:
            raise ValueError(f"{field['label']}: choose one of {', '.join(map(str, field.get('choices', [])))}")
        return f"{path}={json.dumps(text)}"  # quoted: "yes" or "0.5" stays a string
    if kind in ("integer", "number"):
        try:
            int(text) if kind == "integer" else float(text)
        except ValueError:
            what = "a whole number" if kind == "integer" else "a number"
            raise ValueError(f"{field['label']}: {text!r} is not {what}") from None
    elif not text:
        raise ValueError(f"{field['label']}: empty; give a value")
    return f"{path}={text}"


def edit_body(fields: list[dict[str, Any]], typed: dict[str, str], free: str, live: bool) -> dict[str, Any]:
    """The POST /edit body: a `path=value` per field the user changed (by path), then each `key=value` of the free
    line (separated by ';' or new lines). Applied live, every changed field must be one the solver takes live.
    ValueError names the bad entry."""
    sets, fixed = [], []
    for field in fields:
        text, value = typed.get(field["path"]), field.get("value")
        if text is None or text.strip() == shown(bool(value) if field.get("kind") == "boolean" else value):
            continue  # unchanged (an unset check box shows as false)
        sets.append(_assignment(field, text))
        if not field.get("live"):
            fixed.append(field["label"])
    if live and fixed:
        raise ValueError(f"{', '.join(fixed)}: the running solver cannot take this; clear \"apply live\", then "
                         "Pause, Edit and Restart")
    for part in free.replace("\n", ";").split(";"):
        if not part.strip():
            continue
        key, eq, value = part.strip().partition("=")
        if not eq or not key.strip() or any(c.isspace() for c in key.strip()):
            raise ValueError(f"free line: {part.strip()!r} is not key=value (a spec path, e.g. solver.parameters."
                             f"endTime=0.7)")
        sets.append(f"{key.strip()}={value.strip()}")
    if not sets:
        raise ValueError("nothing to edit: change a field or write key=value")
    return {"set": sets, "live": bool(live), "message": "edited in the desktop panel"}


def build_dialog(tk: Any, top: Any, form: dict[str, Any] | None, doc: dict[str, Any],
                 apply: Callable[[dict[str, Any]], None], say: Callable[[str], None]) -> dict[str, Any]:
    """Fill `top` with the form; `apply(body)` gets the edit once the user presses Apply (errors go to `say`).
    Returns the widgets by name (field:<path>, free, live, apply, cancel) for panel.json."""
    fields = (form or {}).get("fields") or parameter_fields(doc)
    allowed = doc.get("allowed") or []
    can_live = (form or {}).get("can_apply_live", "edit-live" in allowed)
    tk.Label(top, text=f"{(form or {}).get('solver', 'solver')} options; (live): taken by the running solver",
             fg="#555").grid(row=0, column=0, columnspan=2, sticky="w", padx=4, pady=(4, 2))
    values: dict[str, Any] = {}
    widgets: dict[str, Any] = {}
    for row, field in enumerate(fields, start=1):
        label = field["label"] + (" (live)" if field.get("live") else "")
        tk.Label(top, text=label, anchor="e").grid(row=row, column=0, sticky="e", padx=4, pady=1)
        if field.get("kind") == "boolean":
            var = tk.StringVar(value=shown(bool(field.get("value"))))
            widget = tk.Checkbutton(top, variable=var, onvalue="true", offvalue="false")
        elif field.get("kind") == "choice":
            var = tk.StringVar(value=shown(field.get("value")))
            widget = tk.OptionMenu(top, var, *[str(c) for c in field.get("choices", [])])
        else:
            var = tk.StringVar(value=shown(field.get("value")))
            widget = tk.Entry(top, width=28, textvariable=var)
        widget.grid(row=row, column=1, sticky="w", padx=4, pady=1)
        values[field["path"]], widgets[f"field:{field['path']}"] = var, widget
    row = len(fields) + 1
    tk.Label(top, text="key=value; ...", anchor="e").grid(row=row, column=0, sticky="e", padx=4)
    free = tk.Entry(top, width=28)
    free.grid(row=row, column=1, padx=4, pady=1)
    tk.Label(top, text=(form or {}).get("free") or "spec paths, e.g. solver.parameters.endTime=0.7", fg="#555",
             wraplength=360, justify="left").grid(row=row + 1, column=0, columnspan=2, sticky="w", padx=4)
    live = tk.BooleanVar(value=bool(can_live) and "edit" not in allowed)  # running: only live edits
    box = tk.Checkbutton(top, text="apply live (to the running solver)", variable=live,
                         state="normal" if can_live else "disabled")
    box.grid(row=row + 2, column=0, columnspan=2, sticky="w", padx=4)

    def pressed() -> None:
        try:
            body = edit_body(fields, {p: v.get() for p, v in values.items()}, free.get(), live.get())
        except ValueError as exc:
            say(str(exc))
            return
        apply(body)

    buttons = tk.Frame(top)
    buttons.grid(row=row + 3, column=0, columnspan=2, pady=6)
    ok = tk.Button(buttons, text="Apply", command=pressed)
    cancel = tk.Button(buttons, text="Cancel")
    ok.pack(side="left", padx=6)
    cancel.pack(side="left", padx=6)
    return {"apply": ok, "cancel": cancel, "free": free, "live": box, **widgets}
