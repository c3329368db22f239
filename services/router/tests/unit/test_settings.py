"""Router settings: backends parsing and environment names."""

from __future__ import annotations

import pytest
from lalo_router.settings import RouterSettings, is_target, parse_backends
from pydantic import ValidationError


def test_bare_targets_join_the_small_pool() -> None:
    assert parse_backends("127.0.0.1:50061") == [("small", "127.0.0.1:50061")]


def test_pools_and_spacing() -> None:
    assert parse_backends(" small=a:1 , large = b:2,,small=c:3 ") == [
        ("small", "a:1"),
        ("large", "b:2"),
        ("small", "c:3"),
    ]


def test_empty_value_means_no_backends() -> None:
    assert parse_backends("") == []
    assert parse_backends(" , ") == []


def test_ipv6_and_dns_targets() -> None:
    assert parse_backends("small=[::1]:50061,dns:///inference:50061") == [
        ("small", "[::1]:50061"),
        ("small", "dns:///inference:50061"),
    ]


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("127.0.0.1:50061", True),
        ("inference-small:50061", True),
        ("[::1]:50061", True),
        ("dns:///inference:50061", True),
        ("unix:/run/lalo/small.sock", True),
        ("localhost", False),
        ("host:", False),
        (":50061", False),
        ("host:port", False),
        ("unix:", False),
    ],
)
def test_is_target(target: str, ok: bool) -> None:
    assert is_target(target) is ok


@pytest.mark.parametrize("value", ["small=localhost", "nohost", "large=", "small=host:"])
def test_targets_need_a_port(value: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_backends(value)


def test_settings_refuse_bad_backends() -> None:
    with pytest.raises(ValidationError, match="host:port"):
        RouterSettings(backends="small=localhost")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LALO_ROUTER_BACKENDS", "small=a:1,large=b:2")
    monkeypatch.setenv("LALO_ROUTER_LISTEN", "0.0.0.0:6000")
    monkeypatch.setenv("LALO_ROUTER_BACKEND_TIMEOUT_S", "30")
    monkeypatch.setenv("LALO_SERVICE_TOKEN", "tok")
    settings = RouterSettings()
    assert settings.backend_list() == [("small", "a:1"), ("large", "b:2")]
    assert settings.listen == "0.0.0.0:6000"
    assert settings.backend_timeout_s == 30.0
    assert settings.service_token.get_secret_value() == "tok"


def test_defaults() -> None:
    settings = RouterSettings.model_validate({})
    assert settings.default_pool == "small"
    assert settings.refresh_interval_s > 0
