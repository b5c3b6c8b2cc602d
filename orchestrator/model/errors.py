"""The engine's error tree, organised by who can fix the problem."""

from __future__ import annotations


class E2EError(Exception):
    """Root of every error the engine raises on purpose; `message` is written for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(E2EError):
    """The user can fix it: bad input, an unknown job, an action the job's state does not allow."""


class SpecError(UserError):
    """A job spec (or an edit) is invalid; `problems` holds one (field, message) pair per problem."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "spec") -> None:
        self.problems = problems
        lines = [f"{source} is invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
        lines += [f"  - {field}: {msg}" if field else f"  - {msg}" for field, msg in problems]
        super().__init__("\n".join(lines))


class NotFound(UserError):
    """The named job, run or file does not exist (or is not visible to this user)."""


class InvalidState(UserError):
    """The action is not allowed in the job's or run's current state."""


class PluginError(E2EError):
    """A solver plugin is broken or misregistered: its author can fix it."""


class InfrastructureError(E2EError):
    """The operator can fix it: Redis unreachable, a node gone, a binary missing."""


class BackendError(InfrastructureError):
    """A cluster backend could not do what was asked on a node."""


class StackError(InfrastructureError):
    """The embedded stack (Redis, workers, reconcile loop) could not start or is not running."""
