"""docker-compose.yml: the compose specification (strict), cross-references compose itself
only checks at run time, and the single-box promises (an OpenAI endpoint on 8000, Postgres,
Redis, migrations before the gateway, vLLM only under the gpu profile with a GPU reservation,
no secret without a value from .env)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(check_compose: ModuleType) -> dict[str, Any]:
    loaded: dict[str, Any] = check_compose.load()
    return loaded


def test_compose_file_is_valid(check_compose: ModuleType) -> None:
    assert check_compose.check() == []


def test_checker_catches_broken_references(
    check_compose: ModuleType, model: dict[str, Any]
) -> None:
    broken = copy.deepcopy(model)
    broken["services"]["gateway"]["depends_on"]["ghost"] = {"condition": "service_started"}
    broken["services"]["router"]["volumes"] = ["nowhere:/data", "./no/such/file:/etc/x:ro"]
    broken["services"]["router"]["depends_on"] = {
        "inference-large": {"condition": "service_healthy"}
    }
    broken["services"]["tools"]["depends_on"] = {
        "redis": {"condition": "service_completed_successfully"}
    }
    del broken["services"]["router"]["healthcheck"]
    problems = " | ".join(check_compose.cross_reference_errors(broken))
    assert "depends_on unknown service 'ghost'" in problems
    assert "volume 'nowhere' is not declared" in problems
    assert "bind mount source ./no/such/file does not exist" in problems
    assert "only runs with profile(s) ['gpu']" in problems
    assert "waits for 'router' to be healthy but it has no healthcheck" in problems
    assert "waits for 'redis' to complete but it restarts" in problems


def test_checker_catches_spec_violations(check_compose: ModuleType, model: dict[str, Any]) -> None:
    broken = copy.deepcopy(model)
    broken["services"]["gateway"]["helthcheck"] = {"test": ["CMD", "true"]}
    assert check_compose.spec_errors(broken)


def test_required_secrets_have_no_default(check_compose: ModuleType) -> None:
    env = check_compose.example_env()
    for secret in (
        "POSTGRES_PASSWORD",
        "LALO_SERVICE_TOKEN",
        "LALO_API_KEYS",
        "LALO_GATEWAY_KEY_PEPPER",
    ):
        missing = {k: v for k, v in env.items() if k != secret}
        with pytest.raises(check_compose.InterpolationError, match=secret):
            check_compose.load(env=missing)
    example = check_compose.read_env_file(check_compose.ENV_EXAMPLE)
    assert all(
        example[s] == "" for s in ("POSTGRES_PASSWORD", "LALO_SERVICE_TOKEN", "LALO_API_KEYS")
    )


def test_interpolation_follows_compose_rules(check_compose: ModuleType) -> None:
    interpolate = check_compose.interpolate
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    assert interpolate("$$A ${B}", {"B": "b"}) == "$A b"
    with pytest.raises(check_compose.InterpolationError, match="A: say why"):
        interpolate("${A:?say why}", {})


def test_single_box_serves_openai_on_8000(model: dict[str, Any]) -> None:
    services = model["services"]
    assert {"postgres", "redis", "migrate-gateway", "gateway", "router", "inference-small"} <= set(
        services
    )
    gateway = services["gateway"]
    assert "8000:8000" in gateway["ports"]
    assert gateway["depends_on"]["migrate-gateway"]["condition"] == "service_completed_successfully"
    assert gateway["depends_on"]["router"]["condition"] == "service_healthy"
    assert services["router"]["depends_on"]["inference-small"]["condition"] == "service_healthy"
    assert (
        services["inference-small"]["depends_on"]["models"]["condition"]
        == "service_completed_successfully"
    )
    assert "models:/models:ro" in services["inference-small"]["volumes"]
    for name, service in services.items():
        assert "profiles" in service or name not in ("inference-large", "models-large")


def test_gpu_service_reserves_nvidia_devices(model: dict[str, Any]) -> None:
    large = model["services"]["inference-large"]
    assert large["profiles"] == ["gpu"]
    devices = large["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert large["shm_size"]


def test_lalo_containers_are_hardened(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        if name in ("postgres", "redis"):
            continue
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_every_service_image_is_built_here(model: dict[str, Any]) -> None:
    built = {
        service["build"]["dockerfile"]
        for service in model["services"].values()
        if isinstance(service.get("build"), dict)
    }
    dockerfiles = {str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("services/*/Dockerfile")}
    assert dockerfiles <= built, f"services missing from docker-compose.yml: {dockerfiles - built}"
