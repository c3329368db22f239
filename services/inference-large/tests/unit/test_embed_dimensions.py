"""Which vector lengths inference-large asks vLLM for, and which pooling models it refuses to
serve (no engine needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from lalo_common.errors import InvalidArgument
from lalo_inference_large.vllm_backend import VllmBackend


def backend(is_matryoshka: bool, trained: list[int] | None = None) -> Any:
    fake: Any = VllmBackend.__new__(VllmBackend)
    fake.name = "embedder"
    fake.embedding_dimensions = 1024
    fake.engine = SimpleNamespace(
        model_config=SimpleNamespace(is_matryoshka=is_matryoshka, matryoshka_dimensions=trained)
    )
    return fake


def test_the_models_own_length_or_none_asks_for_nothing() -> None:
    assert backend(False)._dimensions(None) is None
    assert backend(False)._dimensions(1024) is None


def test_a_model_not_trained_for_shorter_vectors_refuses_them() -> None:
    with pytest.raises(InvalidArgument, match="returns 1024-dimensional vectors and cannot") as e:
        backend(False)._dimensions(512)
    assert e.value.param == "dimensions"


def test_a_matryoshka_model_gives_its_trained_lengths_only() -> None:
    assert backend(True, [1024, 512, 256])._dimensions(256) == 256
    with pytest.raises(InvalidArgument, match="1024, 512, 256 dimensions, not 300"):
        backend(True, [1024, 512, 256])._dimensions(300)
    # Without a list, any length up to the model's own.
    assert backend(True)._dimensions(300) == 300
    with pytest.raises(InvalidArgument, match="1 to 1024 dimensions, not 2048"):
        backend(True)._dimensions(2048)


class ClassifierEngine:
    """A pooling engine whose model classifies (no "embed" task)."""

    def __init__(self) -> None:
        self.stopped = False

    async def get_supported_tasks(self) -> tuple[str, ...]:
        return ("classify", "token_classify")

    def shutdown(self) -> None:
        self.stopped = True


async def test_a_pooling_model_that_cannot_embed_is_refused_at_start() -> None:
    engine = ClassifierEngine()
    fake: Any = VllmBackend.__new__(VllmBackend)
    fake.name = "a-classifier"
    fake.engine = engine
    with pytest.raises(RuntimeError, match=r"cannot make sentence embeddings.*classify"):
        await fake._check_embedding_model()
    assert engine.stopped
    assert fake.engine is None
