"""Settings refuse placeholder secrets and a missing service token outside development."""

from __future__ import annotations

import pytest
from lalo_gateway.security.settings import SecuritySettings
from pydantic import ValidationError


def test_development_defaults_work() -> None:
    settings = SecuritySettings()
    assert settings.is_relaxed
    assert settings.database_url.startswith("sqlite")


def test_production_refuses_the_development_pepper() -> None:
    with pytest.raises(ValidationError, match="KEY_PEPPER"):
        SecuritySettings(environment="production", service_token="a-real-service-token-123")


def test_production_requires_a_service_token() -> None:
    with pytest.raises(ValidationError, match="LALO_SERVICE_TOKEN is required"):
        SecuritySettings(environment="production", key_pepper="a-real-pepper-value-012345")


def test_production_refuses_a_placeholder_service_token() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        SecuritySettings(
            environment="production",
            key_pepper="a-real-pepper-value-012345",
            service_token="changeme",
        )


def test_embedded_mode_needs_no_service_token() -> None:
    assert SecuritySettings(environment="embedded").service_token.get_secret_value() == ""


def test_production_with_real_secrets() -> None:
    settings = SecuritySettings(
        environment="production",
        key_pepper="a-real-pepper-value-012345",
        service_token="a-real-service-token-123",
    )
    assert not settings.is_relaxed


def test_validation_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ValidationError) as error:
        SecuritySettings(
            environment="production",
            key_pepper="short",
            service_token="a-real-service-token-123",
            jwt_hs256_secret="hs-secret-value",
        )
    assert "a-real-service-token-123" not in str(error.value)
    assert "hs-secret-value" not in str(error.value)
