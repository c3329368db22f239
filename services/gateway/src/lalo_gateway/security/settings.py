"""Security settings shared by the gateway's settings class, the CLI and the tests.

``GatewaySettings`` derives from :class:`SecuritySettings`, so every field here is read from
``LALO_GATEWAY_<NAME>``. Validators refuse placeholder secrets outside development and
embedded mode (the FastAPI full-stack template's rule, applied at start-up rather than at
import time).
"""

from __future__ import annotations

from typing import Literal, Self

from lalo_common.settings import PLACEHOLDER_SECRETS, ServiceSettings
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

JwtMode = Literal["off", "jwks", "pem", "hs256"]

DEV_PEPPER = "lalo-development-pepper"
DEV_DATABASE_URL = "sqlite:///.lalo/gateway.db"


def _is_placeholder(value: SecretStr) -> bool:
    secret = value.get_secret_value()
    return secret in PLACEHOLDER_SECRETS or secret == DEV_PEPPER or len(secret) < 16


class SecuritySettings(ServiceSettings):
    """Persistence, credentials, quotas, audit and request limits of the gateway."""

    # A validation error must never echo the environment it was given: it holds secrets.
    model_config = SettingsConfigDict(extra="ignore", env_file=None, hide_input_in_errors=True)

    # Persistence: Postgres in clusters, SQLite in embedded mode.
    database_url: str = DEV_DATABASE_URL
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout_s: float = Field(default=10.0, gt=0)
    db_connect_retries: int = Field(default=30, ge=0)
    db_connect_backoff_max_s: float = Field(default=5.0, gt=0)
    migrate_on_start: bool = True

    # Rate-limit counters and revocation fan-out; empty means in-process (embedded mode).
    redis_url: str = ""

    # API keys: HMAC-SHA256(pepper, key) is what is stored.
    key_pepper: SecretStr = SecretStr(DEV_PEPPER)
    # How long a verified key is trusted without looking at the database again. Revocation
    # reaches every replica within this bound (plus one database round trip).
    key_cache_ttl_s: float = Field(default=0.5, ge=0, le=0.9)
    default_role_for_static_keys: str = "developer"

    # JWT / OIDC.
    jwt_mode: JwtMode = "off"
    jwt_jwks_url: str = ""
    jwt_public_key_pem: str = ""
    jwt_hs256_secret: SecretStr = SecretStr("")
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    # Dotted path to the claim holding role names (e.g. ``realm_access.roles``), and an
    # optional mapping from the identity provider's names to LALO roles.
    jwt_roles_claim: str = "roles"
    jwt_role_map: dict[str, str] = Field(default_factory=dict)
    jwt_subject_claim: str = "sub"
    jwt_leeway_s: int = Field(default=0, ge=0, le=300)
    jwt_jwks_cache_s: int = Field(default=300, ge=0)

    # Quotas for principals that carry none of their own: JWT subjects, keys from
    # LALO_API_KEYS, and keys created without rpm/tpm. 0 means unlimited.
    default_rpm: int = Field(default=0, ge=0)
    default_tpm: int = Field(default=0, ge=0)

    # Audit buffer.
    audit_flush_interval_s: float = Field(default=0.2, gt=0)
    audit_batch_size: int = Field(default=200, ge=1)
    audit_retry_max_s: float = Field(default=10.0, gt=0)
    # Where records that could not be written by shutdown are kept for the next start.
    audit_spool_path: str = ".lalo/gateway-audit-spool.jsonl"

    # Fernet keys for stored secrets, newest first (comma-separated in the environment).
    secret_keys: SecretStr = SecretStr("")

    # Request limits at the edge.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_messages: int = Field(default=512, ge=1)
    max_tokens_limit: int = Field(default=32_768, ge=1)
    # Inputs per /v1/embeddings request (OpenAI's own limit by default).
    max_embedding_inputs: int = Field(default=2048, ge=1)

    @property
    def is_relaxed(self) -> bool:
        """Development and embedded mode accept placeholder secrets."""
        return self.environment in ("development", "embedded")

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Self:
        if not self.is_relaxed:
            if _is_placeholder(self.key_pepper):
                raise ValueError(
                    "LALO_GATEWAY_KEY_PEPPER must be a real secret (16+ characters) "
                    f"outside development; environment is {self.environment!r}"
                )
            if not self.service_token.get_secret_value():
                raise ValueError(
                    "LALO_SERVICE_TOKEN is required outside development and embedded mode: "
                    "internal gRPC calls must carry a service credential"
                )
            if self.service_token.get_secret_value() in PLACEHOLDER_SECRETS:
                raise ValueError("LALO_SERVICE_TOKEN must not be a placeholder outside development")
            if self.jwt_mode == "hs256" and (
                self.jwt_hs256_secret.get_secret_value() in PLACEHOLDER_SECRETS
                or len(self.jwt_hs256_secret.get_secret_value()) < 32
            ):
                raise ValueError(
                    "LALO_GATEWAY_JWT_HS256_SECRET is a placeholder or shorter than 32 characters; "
                    "HS256 (demo) tokens are refused outside development: use jwks or pem"
                )
        if self.jwt_mode == "hs256" and not self.jwt_hs256_secret.get_secret_value():
            raise ValueError("LALO_GATEWAY_JWT_HS256_SECRET is required when JWT_MODE=hs256")
        if self.jwt_mode == "jwks" and not self.jwt_jwks_url:
            raise ValueError("LALO_GATEWAY_JWT_JWKS_URL is required when JWT_MODE=jwks")
        if self.jwt_mode == "pem" and not self.jwt_public_key_pem:
            raise ValueError("LALO_GATEWAY_JWT_PUBLIC_KEY_PEM is required when JWT_MODE=pem")
        needs_claims = self.jwt_mode in ("jwks", "pem") and not self.is_relaxed
        if needs_claims and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError(
                "LALO_GATEWAY_JWT_ISSUER and LALO_GATEWAY_JWT_AUDIENCE are required for "
                "JWT verification outside development"
            )
        if self.jwt_mode in ("jwks", "pem"):
            bad = [a for a in self.jwt_algorithms if a not in ("RS256", "ES256", "PS256", "EdDSA")]
            if bad:
                raise ValueError(
                    f"LALO_GATEWAY_JWT_ALGORITHMS allows only asymmetric algorithms, got {bad}"
                )
        return self
