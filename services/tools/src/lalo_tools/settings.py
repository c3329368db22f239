"""Typed settings of the tools service (``LALO_TOOLS_*``), read lazily through get_settings()."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from lalo_common.settings import ServiceSettings
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

KNOWN_TOOLS = ("calculator", "http_fetch", "sql_query", "python")


def _split_csv(value: Any) -> Any:
    """Accept ``a,b`` as well as a JSON list from the environment."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class ToolsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LALO_TOOLS_", extra="ignore", env_file=None)

    # The internal credential is shared by every service: LALO_SERVICE_TOKEN, unprefixed.
    service_token: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("LALO_SERVICE_TOKEN", "service_token")
    )
    listen_address: str = "0.0.0.0:50071"
    # `python` is off by default: see services/tools/README.md ("python: why it is off").
    # `sql_query` is only registered when sql_database_url is set.
    enabled_tools: Annotated[list[str], NoDecode] = ["calculator", "http_fetch", "sql_query"]

    # Ceilings shared by every tool (per-call limits can only lower them).
    max_arguments_bytes: int = Field(default=64 * 1024, gt=0)
    max_output_bytes: int = Field(default=64 * 1024, gt=0)

    calculator_timeout_s: float = Field(default=2.0, gt=0)
    calculator_max_expression_chars: int = Field(default=1000, gt=0)
    # Size of any intermediate numerator/denominator (10k bits is about 3k digits; Python
    # refuses int->str beyond 4300 digits, hence the ceiling).
    calculator_max_bits: int = Field(default=10_000, gt=0, le=13_000)

    # Host patterns: "example.com" (exact), "*.example.com" (subdomains only), "*" (any
    # public host). Empty refuses every URL.
    http_allowed_hosts: Annotated[list[str], NoDecode] = []
    # Empty allows any port.
    http_allowed_ports: Annotated[list[int], NoDecode] = [80, 443]
    http_timeout_s: float = Field(default=10.0, gt=0)
    http_max_redirects: int = Field(default=5, ge=0)
    # Bytes read from a body at most; the text returned is further cut to max_output_bytes.
    http_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    http_user_agent: str = "lalo-tools/0.1 (+http_fetch)"
    # TEST ONLY: let http_fetch reach 127.0.0.0/8 and ::1 (never other private ranges), so a
    # test can run a local server. Refused in production.
    http_test_allow_loopback: bool = False

    sql_database_url: SecretStr = SecretStr("")
    sql_statement_timeout_ms: int = Field(default=5000, gt=0)
    sql_max_rows: int = Field(default=1000, gt=0)
    sql_max_query_chars: int = Field(default=10_000, gt=0)
    # Refuse to run unless the connected role is provably read-only (no superuser, no
    # write privilege on any table). Turn off only for tests of the other defences.
    sql_require_readonly_role: bool = True

    python_cpu_s: int = Field(default=5, gt=0)
    python_wall_timeout_s: float = Field(default=10.0, gt=0)
    python_memory_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    python_max_file_bytes: int = Field(default=1024 * 1024, gt=0)
    # Size of the snippet's /work (a tmpfs of its own): all files together.
    python_scratch_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    python_max_open_files: int = Field(default=32, gt=3)
    python_max_processes: int = Field(default=8, gt=0)
    python_max_code_chars: int = Field(default=20_000, gt=0)
    python_max_concurrent: int = Field(default=2, gt=0)
    # Where scratch directories are made (empty: the system temp dir).
    python_scratch_root: str = ""
    # Interpreter for snippets (empty: the one running this service).
    python_executable: str = ""
    # uid/gid the snippet runs as when the service runs as root.
    python_sandbox_uid: int = 65534
    python_sandbox_gid: int = 65534
    # Fail closed when a network namespace cannot be made.
    python_require_network_isolation: bool = True

    @field_validator("enabled_tools", "http_allowed_hosts", "http_allowed_ports", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("enabled_tools")
    @classmethod
    def _known_tools(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(KNOWN_TOOLS))
        if unknown:
            raise ValueError(f"unknown tools {unknown}; known: {list(KNOWN_TOOLS)}")
        return value

    @field_validator("http_allowed_hosts")
    @classmethod
    def _lower_hosts(cls, value: list[str]) -> list[str]:
        return [host.strip().lower().rstrip(".") for host in value if host.strip()]

    @model_validator(mode="after")
    def _production_rules(self) -> ToolsSettings:
        self.require_real_secret("LALO_SERVICE_TOKEN", self.service_token)
        if self.environment == "production" and self.http_test_allow_loopback:
            raise ValueError("http_test_allow_loopback is for tests only")
        return self


@lru_cache(maxsize=1)
def get_settings() -> ToolsSettings:
    return ToolsSettings()
