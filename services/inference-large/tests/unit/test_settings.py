"""Settings, engine arguments and the start-up message without vLLM."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from lalo_inference_large.settings import InferenceLargeSettings
from lalo_inference_large.vllm_backend import engine_args, vllm_available


def test_engine_args_carry_every_engine_setting() -> None:
    settings = InferenceLargeSettings(
        model="/models/m",
        served_model_name="big",
        dtype="bfloat16",
        quantization="fp8",
        tensor_parallel_size=8,
        pipeline_parallel_size=2,
        enable_expert_parallel=True,
        distributed_executor_backend="ray",
        max_model_len=4096,
        gpu_memory_utilization=0.92,
        max_num_seqs=64,
        enable_prefix_caching=False,
        kv_cache_dtype="fp8",
        enforce_eager=True,
        runner="pooling",
    )
    args = engine_args(settings)
    assert args["model"] == "/models/m"
    assert args["served_model_name"] == ["big"]
    assert args["quantization"] == "fp8"
    assert args["tensor_parallel_size"] == 8
    assert args["pipeline_parallel_size"] == 2
    assert args["enable_expert_parallel"] is True
    assert args["distributed_executor_backend"] == "ray"
    assert args["max_model_len"] == 4096
    assert args["gpu_memory_utilization"] == 0.92
    assert args["max_num_seqs"] == 64
    assert args["enable_prefix_caching"] is False
    assert args["kv_cache_dtype"] == "fp8"
    assert args["enforce_eager"] is True
    assert args["structured_outputs_config"]["disable_any_whitespace"] is True
    # Unset optional values are left to vLLM rather than passed as empty strings or zeros.
    assert "kv_cache_memory_bytes" not in args
    assert "tokenizer" not in args
    assert args["runner"] == "pooling"
    # Prefix caching is vLLM's call unless set: an encoder-only embedding model fails to start
    # when it is forced on.
    defaults = engine_args(InferenceLargeSettings(model="/models/m"))
    assert "enable_prefix_caching" not in defaults
    assert defaults["runner"] == "auto"


def test_env_prefix_and_shared_service_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LALO_INFERENCE_LARGE_MODEL", "org/model")
    monkeypatch.setenv("LALO_INFERENCE_LARGE_KV_CACHE_MEMORY_BYTES", "268435456")
    monkeypatch.setenv("LALO_INFERENCE_LARGE_MODEL_ALIASES", "a,b")
    monkeypatch.setenv("LALO_SERVICE_TOKEN", "tok")
    settings = InferenceLargeSettings()
    assert settings.model_name == "org/model"
    assert settings.kv_cache_memory_bytes == 268435456
    assert settings.model_aliases == ["a", "b"]
    assert settings.service_token.get_secret_value() == "tok"


def test_stream_hold_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from lalo_inference_large.server import InferenceLargeServer

    assert InferenceLargeSettings(model="m").stream_hold_ms == 40.0
    monkeypatch.setenv("LALO_INFERENCE_LARGE_STREAM_HOLD_MS", "0")
    settings = InferenceLargeSettings(model="m")
    assert settings.stream_hold_ms == 0.0
    assert (
        InferenceLargeServer(
            InferenceLargeSettings(model="m", stream_hold_ms=25)
        ).servicer.stream_hold_s
        == 0.025
    )
    with pytest.raises(ValueError, match="stream_hold_ms"):
        InferenceLargeSettings(model="m", stream_hold_ms=-1)


def test_a_model_is_required_for_vllm() -> None:
    with pytest.raises(ValueError, match="LALO_INFERENCE_LARGE_MODEL"):
        InferenceLargeSettings(model="")


def test_upstream_needs_a_url_and_reads_the_key_file(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="UPSTREAM_BASE_URL"):
        InferenceLargeSettings(backend="openai-upstream")
    from pathlib import Path

    key = Path(str(tmp_path)) / "key"
    key.write_text("sk-secret\n")
    settings = InferenceLargeSettings(
        backend="openai-upstream", upstream_base_url="http://h/v1", upstream_api_key_file=str(key)
    )
    assert settings.upstream_key() == "sk-secret"
    with pytest.raises(ValueError, match="does not exist"):
        InferenceLargeSettings(
            backend="openai-upstream",
            upstream_base_url="http://h/v1",
            upstream_api_key_file="/nope",
        )


def test_production_refuses_a_placeholder_service_token() -> None:
    with pytest.raises(ValueError, match="LALO_SERVICE_TOKEN"):
        InferenceLargeSettings(model="m", environment="production", service_token="changeme")


def run_service(**env: str) -> subprocess.CompletedProcess[str]:
    """``python -m lalo_inference_large`` with ``env`` added, to its exit."""
    return subprocess.run(
        [sys.executable, "-m", "lalo_inference_large"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here; this checks its absence")
def test_without_vllm_the_service_says_so_and_exits() -> None:
    result = run_service(LALO_INFERENCE_LARGE_MODEL="/models/m")
    assert result.returncode == 3
    assert "vLLM is not installed" in result.stderr


def test_a_backend_that_cannot_start_ends_the_service_with_a_clear_reason() -> None:
    """A process that cannot serve exits (status 4) so its supervisor restarts it and says
    why, instead of staying up NOT_SERVING or dying on a bare traceback."""
    result = run_service(
        LALO_INFERENCE_LARGE_BACKEND="openai-upstream",
        # Nothing listens on port 1.
        LALO_INFERENCE_LARGE_UPSTREAM_BASE_URL="http://127.0.0.1:1/v1",
        LALO_INFERENCE_LARGE_SERVED_MODEL_NAME="remote-model",
        LALO_INFERENCE_LARGE_LISTEN_ADDRESS="127.0.0.1:0",
    )
    assert result.returncode == 4, result.stderr
    assert "inference-large: could not load 'remote-model': upstream unreachable" in result.stderr
