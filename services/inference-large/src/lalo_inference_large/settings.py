"""Typed settings of inference-large (``LALO_INFERENCE_LARGE_*``), read lazily via get_settings().

Engine fields map one to one onto vLLM's engine arguments (see ``vllm_backend.engine_args``);
README.md has a worked configuration for each seed model.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from lalo_common.settings import ServiceSettings
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

Backend = Literal["vllm", "openai-upstream"]


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class InferenceLargeSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="LALO_INFERENCE_LARGE_", extra="ignore", env_file=None
    )

    service_token: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("LALO_SERVICE_TOKEN", "service_token")
    )
    listen_address: str = "0.0.0.0:50062"
    # Longest a generated token may wait to be sent with the next ones (stream_hold.py says
    # why); 0 sends each engine output as it comes.
    stream_hold_ms: float = Field(default=40.0, ge=0.0, le=1000.0)
    # "vllm": the model runs in this process on vLLM's engine. "openai-upstream": requests are
    # forwarded to an OpenAI-compatible endpoint elsewhere (off unless chosen here).
    backend: Backend = "vllm"

    # --- vLLM engine -------------------------------------------------------------------
    # A local folder or a Hugging Face repo id (downloaded into download_dir unless offline).
    model: str = ""
    # The name callers use; empty means the model path/id. Aliases are accepted too.
    served_model_name: str = ""
    model_aliases: Annotated[list[str], NoDecode] = []
    tokenizer: str = ""
    # "pooling" serves the model as a sentence-embedding model (Embed, /v1/embeddings);
    # "generate" as a text generator; "auto" lets vLLM decide from the architecture (BERT-like
    # encoders pool, causal LMs generate). A causal LM trained for embeddings (Qwen3-Embedding,
    # e5-mistral) needs "pooling".
    runner: Literal["auto", "generate", "pooling"] = "auto"
    revision: str = ""
    download_dir: str = ""
    # "auto" follows the checkpoint; "bfloat16" on GPUs, "float32" on CPU.
    dtype: str = "auto"
    # e.g. "fp8" (online FP8 for a bf16 checkpoint); empty lets vLLM read the checkpoint's
    # own quantization config (DeepSeek-V3 ships block-wise FP8).
    quantization: str = ""
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    data_parallel_size: int = Field(default=1, ge=1)
    enable_expert_parallel: bool = False
    # "mp" (one node, worker processes) or "ray" (several nodes); empty lets vLLM choose.
    distributed_executor_backend: Literal["", "mp", "ray"] = ""
    # 0 uses the model's own context length.
    max_model_len: int = Field(default=0, ge=0)
    gpu_memory_utilization: float = Field(default=0.90, gt=0, le=1)
    # KV-cache size in bytes; required on CPU (otherwise the worker wants 92 % of RAM free).
    kv_cache_memory_bytes: int = Field(default=0, ge=0)
    max_num_seqs: int = Field(default=256, ge=1)
    max_num_batched_tokens: int = Field(default=0, ge=0)
    # Unset: vLLM's default for the model (on for text generators; off for encoder-only
    # embedding models, whose attention keeps no KV cache to share).
    enable_prefix_caching: bool | None = None
    kv_cache_dtype: str = "auto"
    # Skips CUDA-graph capture / torch.compile: faster start, slower decode.
    enforce_eager: bool = False
    # False sets TORCHDYNAMO_DISABLE=1 before vLLM loads (on CPU the first logprobs request
    # otherwise compiles C++ at run time and needs a compiler).
    torch_compile: bool = True
    # "auto" reads weights; "dummy" initialises random ones (tests, benchmarks).
    load_format: str = "auto"
    trust_remote_code: bool = False
    seed: int = 0
    max_logprobs: int = Field(default=20, ge=0)
    # xgrammar or guidance: the two that honour disable_any_whitespace.
    structured_outputs_backend: str = "xgrammar"
    # Keeps a random or weak model from padding JSON with whitespace until max_tokens.
    json_disable_any_whitespace: bool = True
    # Seconds to wait for the engine to load before the service gives up.
    startup_timeout_s: float = Field(default=1800.0, gt=0)
    # How often the engine is checked; a dead engine turns health to NOT_SERVING.
    health_check_interval_s: float = Field(default=10.0, gt=0)

    # --- openai-upstream -----------------------------------------------------------------
    # Base URL up to and including /v1, e.g. https://api.example.com/v1.
    upstream_base_url: str = ""
    # The credential comes from the secrets store: a mounted secret file (preferred) or the
    # environment variable LALO_INFERENCE_LARGE_UPSTREAM_API_KEY.
    upstream_api_key: SecretStr = SecretStr("")
    upstream_api_key_file: str = ""
    # Models offered through the upstream; empty asks the upstream's /models.
    upstream_models: Annotated[list[str], NoDecode] = []
    upstream_context_length: int = Field(default=0, ge=0)
    upstream_timeout_s: float = Field(default=600.0, gt=0)
    upstream_connect_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("model_aliases", "upstream_models", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @model_validator(mode="after")
    def _consistent(self) -> InferenceLargeSettings:
        self.require_real_secret("LALO_SERVICE_TOKEN", self.service_token)
        if self.backend == "vllm" and not self.model:
            raise ValueError("LALO_INFERENCE_LARGE_MODEL must name a model folder or repo id")
        if self.backend == "openai-upstream":
            if not self.upstream_base_url:
                raise ValueError(
                    "the openai-upstream backend needs LALO_INFERENCE_LARGE_UPSTREAM_BASE_URL"
                )
            if self.upstream_api_key_file and not Path(self.upstream_api_key_file).is_file():
                raise ValueError(
                    f"upstream_api_key_file {self.upstream_api_key_file!r} does not exist"
                )
        return self

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model

    def upstream_key(self) -> str:
        if self.upstream_api_key_file:
            return Path(self.upstream_api_key_file).read_text().strip()
        return self.upstream_api_key.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> InferenceLargeSettings:
    return InferenceLargeSettings()
