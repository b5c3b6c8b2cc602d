"""The static inventory of an ssh cluster (YAML): head node, compute nodes, keys, validated with pydantic."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

from orchestrator.model.errors import InfrastructureError
from orchestrator.model.spec import yaml_problem

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# A host name or an IPv4/IPv6 literal: nothing a shell or an ssh option parser could misread.
_ADDRESS = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]{2,45})$")
_USER = r"^[a-z_][a-z0-9_.-]{0,31}$"


class InventoryError(InfrastructureError):
    """The inventory file is missing or invalid; the operator fixes it (each problem names its field)."""

    def __init__(self, problems: list[tuple[str, str]], source: str) -> None:
        self.problems = problems
        lines = [f"inventory {source} is invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
        lines += [f"  - {field}: {msg}" if field else f"  - {msg}" for field, msg in problems]
        super().__init__("\n".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _address(value: str) -> str:
    if not _ADDRESS.match(value) or value.startswith("-"):
        raise ValueError(f"{value!r} is not a host name or IP address")
    return value


class HeadNode(_Strict):
    """Where the engine runs and results land; compute nodes reach it at `address`."""

    name: str = Field(pattern=_NAME)
    address: str

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return _address(value)


class ComputeNode(_Strict):
    """One compute node reached over ssh."""

    name: str = Field(pattern=_NAME)
    address: str
    port: int = Field(22, ge=1, le=65535)
    user: str = Field("root", pattern=_USER)
    key_file: Path = Field(description="private key the engine logs in with")
    cores: int = Field(ge=1, le=4096)
    shared_storage: bool = Field(True, description="the head node's state directory is mounted at the same path")
    scratch: Path = Field(Path("/var/tmp/e2e"), description="the node's own directory for per-node state")

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return _address(value)

    @field_validator("key_file", "scratch")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{str(value)!r} must be an absolute path")
        return value


class Inventory(_Strict):
    """The whole cluster: what `e2e nodes` shows and the ssh backend leases."""

    head: HeadNode
    nodes: list[ComputeNode] = Field(min_length=1)
    known_hosts: Path | None = Field(None, description="managed known_hosts file; default: next to the inventory")
    connect_timeout: PositiveFloat = 10.0
    command_timeout: PositiveFloat = 30.0
    keepalive: int = Field(5, ge=0, le=3600, description="seconds between ssh keepalives (0: none)")

    @model_validator(mode="after")
    def _unique(self) -> Inventory:
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen or node.name == self.head.name:
                raise ValueError(f"node name {node.name!r} is used twice")
            seen.add(node.name)
        return self

    def node(self, name: str) -> ComputeNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


_CACHE: dict[Path, tuple[tuple[int, int], Inventory]] = {}


def load_inventory(path: Path) -> Inventory:
    """Read and validate the inventory (cached until the file changes); InventoryError names each bad field."""
    path = Path(path).expanduser().resolve()
    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = _CACHE.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        text = path.read_text()
    except OSError as exc:
        raise InventoryError([("", f"cannot read it: {exc.strerror or exc}")], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InventoryError([("", yaml_problem(exc))], str(path)) from None
    inventory = parse_inventory(data, str(path), base_dir=path.parent)
    _CACHE[path] = (stamp, inventory)
    return inventory


def parse_inventory(data: Any, source: str = "inventory", base_dir: Path | None = None) -> Inventory:
    """Validate an inventory mapping; relative known_hosts resolves against base_dir."""
    if not isinstance(data, dict):
        raise InventoryError([("", f"must be a mapping of fields, got {type(data).__name__}")], source)
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryError([(_field(err["loc"], data), _message(err)) for err in exc.errors()], source) from None
    base = base_dir or Path(os.getcwd())
    known = inventory.known_hosts or Path("known_hosts")
    return inventory.model_copy(update={"known_hosts": known if known.is_absolute() else base / known})


def _field(loc: tuple, data: dict) -> str:
    """nodes[1].port, with the node's name when the file gives one: nodes[1] (node-b).port."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            label = f"[{part}]"
            try:
                name = data[loc[0]][part].get("name") if i == 1 else None
            except (AttributeError, IndexError, KeyError, TypeError):
                name = None
            parts.append(label + (f" ({name})" if isinstance(name, str) else ""))
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts)


def _message(err: dict) -> str:
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    msg = err.get("msg", "invalid")
    return msg.removeprefix("Value error, ")
