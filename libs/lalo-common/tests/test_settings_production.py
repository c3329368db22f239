"""Every service refuses to start in production without an internal credential."""

from __future__ import annotations

import pytest
from lalo_common.settings import ServiceSettings
from pydantic import ValidationError


@pytest.mark.parametrize("token", ["", "changeme", "secret"])
def test_production_needs_a_real_service_token(token: str) -> None:
    with pytest.raises(ValidationError, match="LALO_SERVICE_TOKEN"):
        ServiceSettings(environment="production", service_token=token)


def test_production_with_a_token_and_development_without_are_fine() -> None:
    assert ServiceSettings(environment="production", service_token="a" * 32)
    assert ServiceSettings(environment="development").service_token.get_secret_value() == ""
    assert ServiceSettings(environment="embedded").service_token.get_secret_value() == ""
