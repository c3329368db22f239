"""ToolsSettings: environment parsing and the rules that protect production."""

from __future__ import annotations

import pytest
from lalo_tools.build import build_registry
from lalo_tools.settings import ToolsSettings
from pydantic import ValidationError


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("LALO_TOOLS_ENABLED_TOOLS", "LALO_TOOLS_SQL_DATABASE_URL", "LALO_SERVICE_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    settings = ToolsSettings()
    assert settings.listen_address == "0.0.0.0:50071"
    assert settings.enabled_tools == ["calculator", "http_fetch", "sql_query"]
    assert "python" not in settings.enabled_tools
    # sql_query is offered only with a database URL.
    assert build_registry(settings).names == ["calculator", "http_fetch"]


def test_environment_lists_accept_commas_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LALO_TOOLS_ENABLED_TOOLS", "calculator, python")
    monkeypatch.setenv("LALO_TOOLS_HTTP_ALLOWED_HOSTS", '["Example.COM.", "*.docs.org"]')
    monkeypatch.setenv("LALO_TOOLS_HTTP_ALLOWED_PORTS", "443,8443")
    monkeypatch.setenv("LALO_SERVICE_TOKEN", "s3cr3t-token")
    settings = ToolsSettings()
    assert settings.enabled_tools == ["calculator", "python"]
    assert settings.http_allowed_hosts == ["example.com", "*.docs.org"]
    assert settings.http_allowed_ports == [443, 8443]
    assert settings.service_token.get_secret_value() == "s3cr3t-token"
    assert build_registry(settings).names == ["calculator", "python"]


def test_unknown_tool_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="keyboard"):
        ToolsSettings(enabled_tools=["calculator", "keyboard"])


def test_production_refuses_the_loopback_test_switch_and_placeholder_token() -> None:
    with pytest.raises(ValidationError, match="tests only"):
        ToolsSettings(
            environment="production",
            service_token="a-real-token-1234",
            http_test_allow_loopback=True,
        )
    with pytest.raises(ValidationError, match="LALO_SERVICE_TOKEN"):
        ToolsSettings(environment="production", service_token="changeme")


def test_python_is_not_offered_when_its_sandbox_cannot_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = ToolsSettings(
        enabled_tools=["calculator", "python"], python_executable="/nonexistent/python3"
    )
    assert build_registry(settings).names == ["calculator"]
    assert "NOT offered" in caplog.text
