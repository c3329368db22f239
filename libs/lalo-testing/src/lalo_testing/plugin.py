"""pytest plugin: fixtures shared by every LALO test suite (registered via entry point)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from lalo_testing.embedding_model import write_minilm
from lalo_testing.stack import Stack, start_stack
from lalo_testing.tiny_model import write_model

REPO_ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight chat GGUF (seed 0), written once per test session."""
    path = tmp_path_factory.mktemp("models") / "tiny-chat.gguf"
    return write_model(path, "tiny", seed=0)


@pytest.fixture(scope="session")
def embedding_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 (real weights, from the installed package) as a GGUF embedding
    model, written once per test session (~45 MB, about a second)."""
    return write_minilm(tmp_path_factory.mktemp("models") / "all-minilm-l6-v2.gguf")


@pytest.fixture(scope="session")
def test_database_url() -> str:
    return os.environ.get("LALO_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def test_redis_url() -> str:
    return os.environ.get("LALO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def stack_role_keys() -> dict[str, str]:
    """Extra API keys of ``lalo_stack`` by role (the main key is a developer's)."""
    return {
        "viewer": f"sk-viewer-{secrets.token_hex(16)}",
        "admin": f"sk-admin-{secrets.token_hex(16)}",
    }


@pytest.fixture(scope="session")
def lalo_stack(
    tiny_model_path: Path,
    embedding_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    stack_role_keys: dict[str, str],
) -> Iterator[Stack]:
    """gateway + router + inference-small as real processes serving the tiny chat model and
    the all-MiniLM-L6-v2 embedding model."""
    log_dir = tmp_path_factory.mktemp("stack-logs")
    stack = start_stack(
        tiny_model_path,
        api_key=f"sk-test-{secrets.token_hex(16)}",
        log_dir=log_dir,
        threads=1,  # the tiny model is faster on one thread than on two contended ones
        parallel=4,
        n_ctx=1024,
        service_token=secrets.token_hex(16),
        extra_api_keys=tuple(f"{key}:{role}:{role}-user" for role, key in stack_role_keys.items()),
        embedding_model_path=embedding_model_path,
    )
    try:
        yield stack
    finally:
        stack.stop()
