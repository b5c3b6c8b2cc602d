"""Engine configuration from environment variables (E2E_*), with the embedded stack's defaults."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, PositiveFloat, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.model.errors import StackError


class Settings(BaseSettings):
    """Every knob of the engine; each field is read from E2E_<NAME> (REDIS_URL also works)."""

    model_config = SettingsConfigDict(env_prefix="E2E_", extra="ignore")

    home: Path = Field(default=Path("~/.e2e"), description="state directory: jobs, results, logs, embedded Redis")
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("E2E_REDIS_URL", "REDIS_URL"),
        description="use this Redis instead of starting the embedded one",
    )
    reconcile_interval: PositiveFloat = Field(1.0, description="seconds between reconcile passes")
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
    api_max_body: PositiveInt = Field(1 << 20, description="largest JSON request body the API accepts (bytes)")
    api_max_upload: PositiveInt = Field(1 << 30, description="largest input upload (tar.gz) the API accepts (bytes)")
    api_rate: PositiveFloat = Field(50.0, description="API requests per second per user (sustained)")
    api_burst: PositiveInt = Field(200, description="API requests per user allowed in a burst above the rate")
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

    @property
    def root(self) -> Path:
        """The state directory, expanded and absolute."""
        return self.home.expanduser().resolve()

    @property
    def stack_file(self) -> Path:
        return self.root / "stack.json"

    def resolved_redis_url(self) -> str:
        """REDIS_URL if set, else the embedded stack's URL from stack.json, else a clear error."""
        if self.redis_url:
            return self.redis_url
        try:
            return json.loads(self.stack_file.read_text())["redis_url"]
        except (OSError, ValueError, KeyError):
            raise StackError(
                f"no engine is running for {self.root}: start one with `e2e up --detach`, or set REDIS_URL"
            ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
