"""The base every service's settings class derives from.

Each service declares one pydantic-settings class with its own ``LALO_<SVC>_`` prefix and
reads it through a cached ``get_settings()``; nothing is built at import time.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "embedded", "production"]

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "password", "dev", "test"})


class ServiceSettings(BaseSettings):
    """Fields common to every service."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    environment: Environment = "development"
    log_level: str = "INFO"
    log_json: bool = False
    # Shared credential that internal gRPC callers present; empty disables the check
    # (development and embedded mode only: see validate_service_token).
    service_token: SecretStr = SecretStr("")
    grace_period_s: float = 5.0

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _internal_credential_in_production(self) -> Self:
        # Internal servers must not accept anonymous callers in production; development and
        # embedded mode (everything on one machine, loopback only) may run without one.
        token = self.service_token.get_secret_value()
        if self.environment == "production" and token in PLACEHOLDER_SECRETS:
            raise ValueError(
                "LALO_SERVICE_TOKEN is required in production and must not be a placeholder: "
                "internal gRPC servers reject callers without it"
            )
        return self

    def require_real_secret(self, name: str, value: SecretStr) -> None:
        """Refuse placeholder secrets outside development."""
        if self.environment == "production" and value.get_secret_value() in PLACEHOLDER_SECRETS:
            raise ValueError(f"{name} must be set to a real secret in production")
