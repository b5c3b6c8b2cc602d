"""Typed events of a job's stream: what happened, when; the CLI, API and monitor all read these."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from pydantic import BaseModel


class EventKind(str, Enum):
    JOB_CREATED = "job.created"
    JOB_STATE = "job.state"
    RUN_CREATED = "run.created"
    RUN_STATE = "run.state"
    PROGRESS = "run.progress"
    CONTROL = "control"      # a user or a guard asked for something (terminate, ...)
    NODE_FAILED = "node.failed"      # a node of the job stopped answering
    NODE_REPLACED = "node.replaced"  # restart_on_node_failure leased another node in its place
    DESKTOP = "desktop"      # the desktop's state: starting, ready (with URL), failed (with reason), stopped
    ACCESS_REFUSED = "access.refused"  # a connection from outside the job's CIDR rules, or without its token
    SERIES = "run.series"            # new points of a run's monitored series, one read of its monitor files
    RULE_FIRED = "rule.fired"        # a monitor rule's condition held: {rule, action, values, reason}
    WARNING = "warning"
    ERROR = "error"
    SYNC_FILE = "sync.file"          # a file added, updated, appended or deleted by the live sync
    SYNC_CONFLICT = "sync.conflict"  # both sides changed: both versions kept
    SYNC_SKIP = "sync.skip"          # a path the sync refuses (escaping symlink, permissions)
    SYNC_STATS = "sync.stats"        # one sync pass: files, bytes, lag
    SYNC_STATE = "sync.state"        # the sync process started, stopped, was restarted


class Event(BaseModel):
    """One entry of a job's event stream; `id` is the Redis stream id, usable to resume from."""

    id: str
    kind: EventKind
    ts: float
    data: dict[str, Any]

    @classmethod
    def from_stream(cls, entry_id: str, fields: dict[str, str]) -> Event:
        return cls(id=entry_id, kind=EventKind(fields["kind"]), ts=float(fields["ts"]), data=json.loads(fields["data"]))
