"""Engine configuration from environment variables (E2E_*), with the embedded stack's defaults."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, PositiveFloat, PositiveInt, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from orchestrator.model.errors import InfrastructureError, StackError


class Settings(BaseSettings):
    """Every knob of the engine; each field is read from E2E_<NAME> (REDIS_URL also works)."""

    model_config = SettingsConfigDict(env_prefix="E2E_", extra="ignore")

    home: Path = Field(default=Path("~/.e2e"), description="state directory: jobs, results, logs, embedded Redis")
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("E2E_REDIS_URL", "REDIS_URL"),
        description="use this Redis instead of starting the embedded one",
    )
    redis_role: Literal["api", "worker", "beat"] = Field(
        "api", description="the Redis ACL user this process logs in as, when its URL comes from stack.json or "
                           "E2E_REDIS_URLS_FILE (the stack sets it for its workers and beat)")
    redis_urls_file: Path | None = Field(
        None, description="a JSON file (0600) of each role's Redis URL, {\"redis_urls\": {role: url}}, for an "
                          "external Redis with ACL users (`e2e admin redis-acl --urls-file`); the stack's "
                          "workers and beat find theirs there even when E2E_REDIS_URL is this process's")
    reconcile_interval: PositiveFloat = Field(
        1.0, description="seconds between reconcile sweeps: how often the safety net looks at a job the host's run "
                         "watcher does not follow (queued, launching, stopping, with a desktop, on ssh/slurm nodes)")
    safety_interval: PositiveFloat = Field(
        10.0, description="seconds between the safety net's looks at a running job the run watcher follows (its "
                          "log writes and its end ring the engine at once; limits are still checked on time)")
    local_nodes: PositiveInt = Field(4, description="virtual nodes of the local backend")
    local_cores_per_node: PositiveInt = Field(
        default_factory=lambda: os.cpu_count() or 1, description="slots of each local virtual node"
    )
    launch_timeout: PositiveFloat = Field(10.0, description="seconds a launch may take before reconcile re-drives it")
    stop_grace: PositiveFloat = Field(30.0, description="seconds a graceful stop may take before SIGTERM")
    kill_grace: PositiveFloat = Field(10.0, description="seconds after SIGTERM before SIGKILL")
    visibility_timeout: PositiveInt = Field(600, description="Celery/Redis redelivery timeout (s) for unacked tasks")
    worker_concurrency: PositiveInt = Field(2, description="processes per Celery worker")
    events_maxlen: PositiveInt = Field(10_000, description="events kept per job stream (approximate)")
    inventory: Path | None = Field(None, description="YAML inventory of the ssh backend's nodes (see `e2e nodes`)")
    slurm_partition: str | None = Field(
        None, description="partition the slurm backend allocates from (default: Slurm's)")
    api_host: str = Field("127.0.0.1", description="address `e2e serve` listens on (0.0.0.0 behind a proxy)")
    api_port: PositiveInt = Field(8765, description="port `e2e serve` listens on")
    api_url: str | None = Field(
        None, description="the API's address as the head nodes see it (the desktop session's E2E_SERVER, the "
                          "API URL `e2e desktop` prints); default http://127.0.0.1:E2E_API_PORT")
    api_max_body: PositiveInt = Field(1 << 20, description="largest JSON request body the API accepts (bytes)")
    api_max_upload: PositiveInt = Field(1 << 30, description="largest input upload (tar.gz) the API accepts (bytes)")
    upload_max_extracted: PositiveInt | None = Field(
        None, description="most bytes one upload may unpack to (default: 4x E2E_API_MAX_UPLOAD)")
    upload_quota: PositiveInt | None = Field(
        None, description="most unpacked bytes one user's uploads may hold together (default: 10x "
                          "E2E_API_MAX_UPLOAD); `e2e uploads rm` frees space")
    api_rate: PositiveFloat = Field(50.0, description="API requests per second per user (sustained)")
    api_burst: PositiveInt = Field(200, description="API requests per user allowed in a burst above the rate")
    api_max_streams: PositiveInt = Field(8, description="live streams (events, log follow) one user may hold open "
                                                        "at once in each API process; more get 429")
    api_max_desktop_waits: PositiveInt = Field(4, description="desktop requests with ?wait one user may have "
                                                              "waiting at once in each API process; more get 429")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For/-Proto the API "
                    "believes; unset: none, the client address is the connection's")
    run_as: str = Field(
        "", description="OS account that jobs without an API owner (the engine host's own CLI) run as when the "
                        "engine runs as root; unset, such a submit is refused (the engine runs no job as root)")
    job_path: str = Field(
        "", description="PATH every job process starts with (default: the system directories); jobs inherit "
                        "nothing else of the engine's environment")
    solver_env: dict[str, str] = Field(
        default_factory=dict,
        description="cluster-wide solver settings exported in every run, as JSON "
                    '(e.g. {"ANSYSLMD_LICENSE_FILE": "1055@lic1"}); never logged',
    )

    public_url: str = Field(
        "", description="the monitor's address as users reach it, for the links in notifications "
                        "(default http://API_HOST:API_PORT)")
    notify_allow_private: bool = Field(
        True, description="webhooks may target loopback and private addresses (on-prem receivers); false on a "
                          "shared engine, so a user cannot make it POST into its own network (SSRF)")
    notify_attempts: PositiveInt = Field(5, description="attempts per notification before it is given up")
    notify_backoff: PositiveFloat = Field(
        1.0, description="seconds before a notification's first retry; doubled each attempt (1, 2, 4, 8 s...)")
    notify_timeout: PositiveFloat = Field(5.0, description="seconds one webhook POST or SMTP session may take")
    smtp_host: str = Field("", description="SMTP server for email notifications; unset: email is not sent")
    smtp_port: PositiveInt = Field(25, description="SMTP server port")
    smtp_from: str = Field("e2e@localhost", description="sender address of email notifications")
    smtp_user: str = Field("", description="SMTP login (with E2E_SMTP_PASSWORD); unset: no login")
    smtp_password: SecretStr = Field(SecretStr(""), description="SMTP password; never logged")
    smtp_starttls: bool = Field(False, description="upgrade the SMTP session with STARTTLS before logging in")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: object) -> list[str]:
        """A comma/space-separated list, a JSON list (how the embedded stack passes settings on to its
        processes) or a list: every entry an IP address or a network, named when bad."""
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text) if text.startswith("[") else re.split(r"[\s,]+", text)
            except ValueError:
                raise ValueError(f"{text!r} is not a list of IP addresses or CIDRs") from None
        if not isinstance(value, (list, tuple)):
            raise ValueError("a list of IP addresses or CIDRs (comma-separated)")
        items = value
        networks = []
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            try:
                networks.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR "
                                 "(like 10.0.0.5 or 10.0.0.0/24)") from None
        return networks

    @property
    def root(self) -> Path:
        """The state directory, expanded and absolute (resolved once per absolute home: every step of a job asks,
        dozens of times, and each resolve is a stat of every folder on the way)."""
        home = self.home.expanduser()
        return _resolved(home) if home.is_absolute() else home.resolve()

    @property
    def max_extracted(self) -> int:
        """The cap on one upload's unpacked bytes (E2E_UPLOAD_MAX_EXTRACTED, else 4x the upload limit)."""
        return self.upload_max_extracted or 4 * self.api_max_upload

    @property
    def quota(self) -> int:
        """The cap on one user's uploads' unpacked bytes together (E2E_UPLOAD_QUOTA, else 10x the upload limit)."""
        return self.upload_quota or 10 * self.api_max_upload

    @property
    def monitor_url(self) -> str:
        """The monitor's base address for links sent out (E2E_PUBLIC_URL, else the API's own)."""
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @property
    def stack_file(self) -> Path:
        return self.root / "stack.json"

    def resolved_api_url(self) -> str:
        """The API's base URL as the head nodes (and a browser on this machine) reach it, no trailing slash."""
        return (self.api_url or f"http://127.0.0.1:{self.api_port}").rstrip("/")

    def resolved_redis_url(self) -> str:
        """REDIS_URL if set, else this process's role's URL from E2E_REDIS_URLS_FILE or the embedded stack's
        stack.json (an older stack.json has one URL for all), else a clear error."""
        if self.redis_url:
            return self.redis_url
        source = self.redis_urls_file.expanduser() if self.redis_urls_file else self.stack_file
        try:
            data = json.loads(source.read_text())
        except (OSError, ValueError):
            if self.redis_urls_file:
                raise StackError(f"E2E_REDIS_URLS_FILE: cannot read {source} (a JSON file of role URLs)") from None
            raise StackError(
                f"no engine is running for {self.root}: start one with `e2e up --detach`, or set REDIS_URL"
            ) from None
        urls = data.get("redis_urls") if isinstance(data, dict) else None
        if urls or self.redis_urls_file:  # never another role's URL (the admin's least of all) for a missing one
            url = (urls or {}).get(self.redis_role)
        else:  # an older stack.json: one URL for every process
            url = data.get("redis_url") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise StackError(f"{source} holds no Redis URL for the {self.redis_role!r} role "
                             "(E2E_REDIS_ROLE); regenerate it with `e2e admin redis-acl`")
        return url


class SettingsError(InfrastructureError):
    """An E2E_* setting is invalid: the operator fixes it (one line per variable, never its value)."""


def load_settings() -> Settings:
    """Settings from the environment; a bad value is a SettingsError naming each variable (no traceback)."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = [f"  - {_variable(err['loc'])}: {err['msg'].removeprefix('Value error, ')}" for err in exc.errors()]
        raise SettingsError("the engine's settings are invalid:\n" + "\n".join(lines)) from None


def _variable(loc: tuple) -> str:
    name = str(loc[0]) if loc else ""
    field = Settings.model_fields.get(name)
    alias = getattr(field, "validation_alias", None) if field else None
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    return f"E2E_{name.upper()}" if name else "E2E_*"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()


@lru_cache(maxsize=64)
def _resolved(home: Path) -> Path:
    return home.resolve()
