"""Gateway settings (``LALO_GATEWAY_*``), read once through get_settings()."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from lalo_gateway.security.settings import SecuritySettings


class GatewaySettings(SecuritySettings):
    model_config = SettingsConfigDict(env_prefix="LALO_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    router_target: str = "127.0.0.1:50051"
    # The public gRPC API (lalo.router.v1.RouterService with the REST API's auth); 0 disables.
    grpc_port: int = Field(default=50050, ge=0, le=65535)
    # Comma-separated bearer keys accepted as-is (provisioned at start-up).
    api_keys: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("LALO_API_KEYS")
    )
    request_timeout_s: float = Field(default=600.0, gt=0)
    # Responses API answers are kept in the database (OpenAI's default, "store": true) so
    # previous_response_id can continue them; false keeps none, and requests asking for it
    # get a 400. `lalo-gateway responses purge --older-than-days N` deletes old ones.
    store_responses: bool = True
    readiness_timeout_s: float = Field(default=2.0, gt=0)
    service_token: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("LALO_SERVICE_TOKEN")
    )

    def static_keys(self) -> list[str]:
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]


@lru_cache(maxsize=1)
def get_settings() -> GatewaySettings:
    return GatewaySettings()
