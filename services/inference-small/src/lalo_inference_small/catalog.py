"""Which GGUF models this server loads: a YAML catalog, or one model from settings.

Catalog format (a list under ``models``)::

    models:
      - id: qwen2.5-0.5b-instruct
        path: /models/qwen2.5-0.5b-instruct-q4_0.gguf
        n_ctx: 4096
        threads: 4
        parallel: 4
      - id: all-minilm-l6-v2        # an embedding model (found from its GGUF metadata):
        path: all-minilm-l6-v2.gguf  # served by Embed (/v1/embeddings), not Generate
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

from lalo_inference_small.settings import InferenceSmallSettings


class ModelSpec(BaseModel):
    id: str = Field(min_length=1)
    path: Path
    n_ctx: int = Field(default=2048, ge=64)
    threads: int = Field(default=2, ge=1)
    parallel: int = Field(default=4, ge=1, le=64)
    n_batch: int = Field(default=512, ge=16)
    use_mmap: bool = False


class CatalogError(ValueError):
    pass


def load_specs(settings: InferenceSmallSettings) -> list[ModelSpec]:
    specs: list[ModelSpec] = []
    if settings.models_path is not None:
        try:
            raw = yaml.safe_load(settings.models_path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CatalogError(f"cannot read model catalog {settings.models_path}: {exc}") from exc
        entries = (raw or {}).get("models") if isinstance(raw, dict) else None
        if not isinstance(entries, list):
            raise CatalogError(f"{settings.models_path}: expected a list under 'models'")
        base = settings.models_path.parent
        for entry in entries:
            try:
                spec = ModelSpec.model_validate(entry)
            except ValidationError as exc:
                raise CatalogError(f"{settings.models_path}: invalid model entry: {exc}") from exc
            if not spec.path.is_absolute():
                spec = spec.model_copy(update={"path": base / spec.path})
            specs.append(spec)
    # One chat model and one embedding model can come from settings, beside a catalog.
    for path, model_id in (
        (settings.model_path, settings.model_id),
        (settings.embedding_model_path, settings.embedding_model_id),
    ):
        if path is not None:
            specs.append(
                ModelSpec(
                    id=model_id or path.stem,
                    path=path,
                    n_ctx=settings.n_ctx,
                    threads=settings.threads,
                    parallel=settings.parallel,
                    n_batch=settings.n_batch,
                    use_mmap=settings.use_mmap,
                )
            )
    if not specs:
        raise CatalogError(
            "no model configured: set LALO_INFERENCE_SMALL_MODEL_PATH (one GGUF file) or "
            "LALO_INFERENCE_SMALL_MODELS_PATH (a YAML catalog)"
        )
    ids = [spec.id for spec in specs]
    if len(set(ids)) != len(ids):
        raise CatalogError(f"model ids must be unique, got {ids}")
    return specs
