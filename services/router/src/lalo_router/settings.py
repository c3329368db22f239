"""Router settings (``LALO_ROUTER_*``), read once through get_settings()."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from lalo_common.settings import ServiceSettings
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict


class RouterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LALO_ROUTER_", extra="ignore")

    listen: str = "127.0.0.1:50051"
    # Comma-separated ``pool=host:port`` entries; a bare ``host:port`` joins pool "small".
    # A pool whose replicas the routing policy lists takes them from the policy instead
    # (the policy wins, pool by pool; see policy.merge_backends).
    backends: str = "small=127.0.0.1:50061"
    # The YAML routing policy (pools and their replicas, categories, thresholds); optional.
    policy_path: Path | None = None
    default_pool: str = "small"
    # How "auto" requests are classified. "embedding": the trained classifier (CPU, ~0.2 ms
    # p50, up to ~5 ms when unsure); "llm": a small instruction model asked over
    # lalo.inference.v1 Generate, falling back
    # to the embedding classifier when it is slow or fails (llm_classifier.py); "none":
    # "auto" goes to the default pool.
    classifier: Literal["embedding", "llm", "none"] = "embedding"
    # The LLM strategy: the router model's id as the inference server lists it, e.g.
    # "lfm2-1.2b-tool"; and where to ask it: one host:port, or empty for the replicas (any
    # pool) that serve that model, least busy first.
    llm_model: str = ""
    llm_target: str = ""
    # Deadline of one classification call (capped by the caller's own); on expiry the
    # request is routed by the embedding classifier instead.
    llm_timeout_s: float = Field(default=2.0, gt=0)
    llm_max_tokens: int = Field(default=16, ge=1, le=64)
    # Prometheus metrics (routes per pool/category, classification latency); 0 disables.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # How often backends are asked for their models and health.
    refresh_interval_s: float = Field(default=5.0, gt=0)
    backend_timeout_s: float = Field(default=600.0, gt=0)
    orchestrator_target: str = ""
    service_token: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("LALO_SERVICE_TOKEN")
    )

    @field_validator("backends")
    @classmethod
    def _check_backends(cls, value: str) -> str:
        parse_backends(value)
        return value

    @field_validator("llm_target")
    @classmethod
    def _check_llm_target(cls, value: str) -> str:
        if value and not is_target(value):
            raise ValueError(f"LALO_ROUTER_LLM_TARGET {value!r} must be host:port")
        return value

    @model_validator(mode="after")
    def _llm_needs_a_model(self) -> Self:
        if self.classifier == "llm" and not self.llm_model:
            raise ValueError("LALO_ROUTER_LLM_MODEL is required when LALO_ROUTER_CLASSIFIER=llm")
        return self

    def backend_list(self) -> list[tuple[str, str]]:
        return parse_backends(self.backends)


def is_target(value: str) -> bool:
    """A gRPC target the router can dial: ``host:port`` (also ``[::1]:port`` and
    ``dns:///host:port``) or a ``unix:`` socket path."""
    if value.startswith("unix:"):
        return len(value) > len("unix:")
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit())


def parse_backends(value: str) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        pool, _, target = item.rpartition("=")
        pool = pool.strip() or "small"
        target = target.strip()
        if not is_target(target):
            raise ValueError(f"backend {item!r} must be host:port (optionally pool=host:port)")
        entries.append((pool, target))
    return entries


@lru_cache(maxsize=1)
def get_settings() -> RouterSettings:
    return RouterSettings()
