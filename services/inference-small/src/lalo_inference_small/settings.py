"""inference-small settings (``LALO_INFERENCE_SMALL_*``), read once through get_settings()."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from lalo_common.settings import ServiceSettings
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict


class InferenceSmallSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LALO_INFERENCE_SMALL_", extra="ignore")

    listen: str = "127.0.0.1:50061"
    # A YAML catalog of models (see catalog.py); or one model through the fields below.
    models_path: Path | None = None
    model_path: Path | None = None
    model_id: str = ""
    # An embedding model served beside it (a GGUF sentence-embedding model such as
    # all-MiniLM-L6-v2 or nomic-embed-text), for /v1/embeddings.
    embedding_model_path: Path | None = None
    embedding_model_id: str = ""
    n_ctx: int = Field(default=2048, ge=64)
    parallel: int = Field(default=4, ge=1, le=64)
    n_batch: int = Field(default=512, ge=16)
    threads: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1)
    use_mmap: bool = False
    max_waiting: int = Field(default=256, ge=1)
    # Longest a generated token may wait to be sent with the next ones (engine.EngineConfig
    # says why); 0 sends each token alone.
    stream_hold_ms: float = Field(default=40.0, ge=0.0, le=1000.0)
    service_token: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("LALO_SERVICE_TOKEN")
    )


@lru_cache(maxsize=1)
def get_settings() -> InferenceSmallSettings:
    return InferenceSmallSettings()
