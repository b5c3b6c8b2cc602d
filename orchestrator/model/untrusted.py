"""Reading what users send: YAML without anchors or aliases, and their values quoted at a bounded length.

Why: a few hundred bytes of YAML aliases expand into millions of nodes (each level multiplies the last), and
an error message that quotes such a value whole answers a 455-byte request with tens of megabytes. A spec never
needs an alias, so user YAML refuses them outright; every value an error message quotes goes through `quoted`,
which never builds more than a few hundred characters, however large the value is.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

MAX_QUOTED = 200  # characters of a user's value an error message shows, at most
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = MAX_QUOTED
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8
_SHORT.maxlevel = 3


def quoted(value: Any, limit: int = MAX_QUOTED) -> str:
    """repr(value) for an error message: at most `limit` characters, cut with an ellipsis. Built with
    reprlib, so a huge (or deeply shared) value costs no more than its first few items."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class AliasError(yaml.YAMLError):
    """User YAML used an anchor (&name) or an alias (*name)."""

    def __init__(self, mark: Any) -> None:
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        super().__init__(f"anchors and aliases (&name, *name, <<: merges) are not allowed{where}; "
                         "write the values out")
        self.problem_mark = mark


class NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that raises AliasError on the first anchor or alias event, before any node is composed
    from it (so nothing is ever expanded)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise AliasError(event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """Parse one YAML (or JSON) document a user wrote: safe types only, no anchors or aliases.
    Raises yaml.YAMLError (AliasError for an alias; nesting too deep to parse is one too)."""
    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """What is wrong with a user's YAML, and where, in a bounded number of characters (a parser's own
    message quotes the offending line, which may be the whole document)."""
    if isinstance(exc, AliasError):
        return str(exc)
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"not valid YAML{where}: {problem[:MAX_QUOTED]}"
