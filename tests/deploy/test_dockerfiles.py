"""Every service has a Dockerfile, and every Dockerfile passes the basic checks (pinned bases,
non-root user, health check, no secrets, sources inside the build context); the linter itself
is held to catching each of those mistakes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.parent for p in REPO_ROOT.glob("services/*/pyproject.toml"))
DOCKERFILES = sorted(REPO_ROOT.glob("services/*/Dockerfile"))


def test_every_service_has_a_dockerfile() -> None:
    missing = [s.name for s in SERVICES if not (s / "Dockerfile").is_file()]
    assert missing == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_lint(lint_dockerfiles: ModuleType, dockerfile: Path) -> None:
    assert lint_dockerfiles.lint(dockerfile) == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dependencies_layer_comes_before_the_project(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    package = f"lalo-{dockerfile.parent.name}"
    deps = text.index(f"--package {package} --no-install-workspace")
    project_copy = text.index(f"COPY services/{dockerfile.parent.name}/")
    project = text.index(f"--package {package} --no-editable")
    assert text.index("COPY pyproject.toml uv.lock") < deps < project_copy < project
    assert "--frozen" in text
    assert "--no-dev" in text


def test_inference_small_is_portable_by_default() -> None:
    text = (REPO_ROOT / "services/inference-small/Dockerfile").read_text()
    assert "ARG LLAMA_NATIVE=false" in text
    assert "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF" in text
    assert "build-essential cmake" in text


def test_inference_small_native_build_leaves_out_amx() -> None:
    # scikit-build-core splits CMAKE_ARGS with shlex: each flag list must stay one define.
    text = (REPO_ROOT / "services/inference-small/Dockerfile").read_text()
    value = re.search(r'^ARG LLAMA_NATIVE_CMAKE_ARGS="(.*)"$', text, re.MULTILINE)
    assert value is not None
    args = shlex.split(value.group(1))
    assert "-DGGML_NATIVE=ON" in args
    for language in ("C", "CXX"):
        define = next(a for a in args if a.startswith(f"-DCMAKE_{language}_FLAGS="))
        flags = define.split("=", 1)[1].split()
        assert {"-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"} <= set(flags)


def test_inference_large_starts_from_vllm() -> None:
    text = (REPO_ROOT / "services/inference-large/Dockerfile").read_text()
    assert "ARG VLLM_IMAGE=vllm/vllm-openai:v" in text


def test_dockerignore_keeps_weights_and_envs_out(lint_dockerfiles: ModuleType) -> None:
    rules = lint_dockerfiles.load_dockerignore(REPO_ROOT)
    for path in (
        ".venv",
        "services/router/.venv/lib",
        ".venv-vllm-gpu/lib",
        "models/x.gguf",
        "a/b.safetensors",
        ".env",
        ".git",
        ".lalo/models/tiny.gguf",
        "services/gateway/tests",
    ):
        assert lint_dockerfiles.ignored(path, rules), path
    for path in (
        "uv.lock",
        "libs/lalo-common",
        "services/gateway/src",
        ".env.example",
        "deploy/docker/healthcheck.py",
        "deploy/docker/fetch_models.py",
    ):
        assert not lint_dockerfiles.ignored(path, rules), path


GOOD_TAIL = 'HEALTHCHECK CMD true\nENTRYPOINT ["x"]\n'
SLIM = "FROM python:3.11.14-slim\n"
BAD = {
    "FROM python\nUSER 10001\n" + GOOD_TAIL: "has no tag",
    "FROM python:latest\nUSER 10001\n" + GOOD_TAIL: "latest",
    "FROM python:3\nUSER 10001\n" + GOOD_TAIL: "not a specific version",
    SLIM + GOOD_TAIL: "has no USER",
    SLIM + "USER root\n" + GOOD_TAIL: "runs as root",
    SLIM + 'USER 1\nENTRYPOINT ["x"]\n': "no HEALTHCHECK",
    SLIM + "ENV API_TOKEN=abc\nUSER 1\n" + GOOD_TAIL: "bakes a secret",
    SLIM + "ADD https://x/y /y\nUSER 1\n" + GOOD_TAIL: "ADD of a URL",
    SLIM + "RUN curl -s https://x | sh\nUSER 1\n" + GOOD_TAIL: "piped into a shell",
    SLIM + "COPY no/such/dir /x\nUSER 1\n" + GOOD_TAIL: "does not exist",
    SLIM + "COPY .env /x\nUSER 1\n" + GOOD_TAIL: "environment files",
    SLIM + "COPY deploy/helm /x\nUSER 1\n" + GOOD_TAIL: "excluded by .dockerignore",
    "ARG BASE=python:latest\nFROM ${BASE}\nUSER 1\n" + GOOD_TAIL: "latest",
    "FROM python:3.11.14-slim AS b\nUSER 1\nFROM b\n" + GOOD_TAIL: "has no USER",
}


@pytest.mark.parametrize(("text", "expected"), list(BAD.items()), ids=list(BAD.values()))
def test_linter_catches(
    lint_dockerfiles: ModuleType, tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    problems = " | ".join(lint_dockerfiles.lint(path))
    assert expected in problems
