"""The orchestrator's settings (``LALO_ORCHESTRATOR_*``), read once through ``get_settings()``."""

from __future__ import annotations

from functools import lru_cache

from lalo_common.settings import ServiceSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict


class OrchestratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LALO_ORCHESTRATOR_", extra="ignore")

    # The internal credential presented to, and required from, other services.
    service_token: SecretStr = Field(default=SecretStr(""), validation_alias="LALO_SERVICE_TOKEN")

    # State: Postgres in clusters, SQLite in embedded mode.
    database_url: str = "sqlite:///.lalo/orchestrator.sqlite"
    # Celery broker: Redis in clusters; kombu's SQLAlchemy transport on SQLite when empty.
    broker_url: str = ""
    # Redis for event pub/sub; empty means followers poll the events table.
    redis_url: str = ""
    # Prefix of the Celery queue, the Redis pub/sub channels and kombu's Redis keys,
    # so several deployments (or test runs) can share one Redis.
    key_prefix: str = "lalo-orch"
    # Seconds before kombu's Redis transport re-delivers an unacknowledged task (its
    # worker died). Longer than any task or retry countdown; a re-delivery that comes
    # while the task still runs is harmless (lease and dispatch token).
    visibility_timeout_s: float = 300.0
    # Polling interval of the SQLite broker (kombu's default of 1 s is too slow).
    sqlite_broker_poll_s: float = 0.02

    # gRPC API.
    host: str = "0.0.0.0"  # noqa: S104 - a service listens on all interfaces in a pod
    port: int = 50091

    # Workers.
    worker_concurrency: int = 2
    worker_pool: str = "prefork"
    # A worker holds a lease on the workflow it works on and renews it while a step
    # runs; a lease not renewed for this long belongs to a dead worker.
    lease_ttl_s: float = 15.0
    # Every worker looks this often for workflows that nothing has moved for
    # stall_after_s (no live lease, no retry due) and restarts their task chain: this
    # resumes a workflow whose task was lost (a worker gone before the broker re-delivers,
    # a crash between commit and enqueue). A backlog longer than stall_after_s costs one
    # extra message per workflow, never duplicate work (see ``dispatch``).
    sweep_interval_s: float = 5.0
    stall_after_s: float = 60.0

    # Backends.
    inference_target: str = "127.0.0.1:50061"
    tools_target: str = "127.0.0.1:50071"
    # Model for planning and model steps when the request names none.
    default_model: str = ""
    call_timeout_s: float = 120.0

    # Planning.
    plan_max_tokens: int = 768
    plan_temperature: float = 0.0
    step_max_tokens: int = 256
    # Bounds written into the plan's JSON schema (a random-weight model still yields
    # a valid, finite plan under them).
    plan_max_steps: int = 6
    plan_max_text_chars: int = 400
    # Tools that do not fit the step schema are described but bounded by this.
    plan_max_argument_chars: int = 200

    # Default budgets (a request may lower them, never raise them above the ceilings).
    max_steps: int = 12
    max_wall_time_s: float = 600.0
    max_tokens: int = 8192
    max_replans: int = 2
    ceiling_steps: int = 64
    ceiling_wall_time_s: float = 3600.0
    ceiling_tokens: int = 131072
    ceiling_replans: int = 5

    # Transient failures (backend unavailable, upstream timeouts) are retried with
    # exponential backoff, then count as a failed step.
    step_max_attempts: int = 4
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 30.0

    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        if self.database_url.startswith("sqlite"):
            path = self.database_url.split("///", 1)[1] if "///" in self.database_url else ""
            broker_path = (path.rsplit(".", 1)[0] if "." in path else path) + "-broker.sqlite"
            return f"sqla+sqlite:///{broker_path}"
        raise ValueError("LALO_ORCHESTRATOR_BROKER_URL is required with a non-SQLite database")


@lru_cache(maxsize=1)
def get_settings() -> OrchestratorSettings:
    return OrchestratorSettings()
