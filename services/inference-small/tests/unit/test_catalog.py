"""Which models the server loads: a YAML catalog and/or one model from settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from lalo_inference_small.catalog import CatalogError, ModelSpec, load_specs
from lalo_inference_small.settings import InferenceSmallSettings


def _settings(**values: object) -> InferenceSmallSettings:
    return InferenceSmallSettings.model_validate(values)


def test_nothing_configured_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LALO_INFERENCE_SMALL_MODEL_PATH", "LALO_INFERENCE_SMALL_MODELS_PATH"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CatalogError, match="no model configured"):
        load_specs(_settings())


def test_single_model_from_settings() -> None:
    (spec,) = load_specs(
        _settings(model_path="/m/qwen.gguf", n_ctx=1024, parallel=2, threads=3, n_batch=64)
    )
    assert spec == ModelSpec(
        id="qwen", path=Path("/m/qwen.gguf"), n_ctx=1024, parallel=2, threads=3, n_batch=64
    )
    (named,) = load_specs(_settings(model_path="/m/qwen.gguf", model_id="small"))
    assert named.id == "small"


def test_an_embedding_model_beside_the_chat_model_from_settings() -> None:
    chat, embedding = load_specs(
        _settings(
            model_path="/m/qwen.gguf",
            embedding_model_path="/m/all-minilm-l6-v2.gguf",
            n_ctx=1024,
        )
    )
    assert (chat.id, embedding.id) == ("qwen", "all-minilm-l6-v2")
    assert embedding.path == Path("/m/all-minilm-l6-v2.gguf")
    assert embedding.n_ctx == 1024  # the engine caps it at the model's own (512 for MiniLM)
    (alone,) = load_specs(_settings(embedding_model_path="/m/e.gguf", embedding_model_id="emb"))
    assert alone.id == "emb"


def test_catalog_resolves_relative_paths(tmp_path: Path) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "models:\n"
        "  - id: a\n    path: weights/a.gguf\n    n_ctx: 512\n    parallel: 2\n"
        "  - id: b\n    path: /abs/b.gguf\n"
    )
    a, b = load_specs(_settings(models_path=catalog))
    assert a.path == tmp_path / "weights" / "a.gguf"
    assert (a.n_ctx, a.parallel) == (512, 2)
    assert b.path == Path("/abs/b.gguf")
    assert b.n_ctx == 2048


def test_catalog_and_single_model_combine(tmp_path: Path) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text("models:\n  - id: a\n    path: a.gguf\n")
    specs = load_specs(_settings(models_path=catalog, model_path="/m/b.gguf"))
    assert [s.id for s in specs] == ["a", "b"]


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text("models:\n  - id: a\n    path: a.gguf\n")
    with pytest.raises(CatalogError, match="unique"):
        load_specs(_settings(models_path=catalog, model_path="/m/a.gguf"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: {}\n", "expected a list under 'models'"),
        ("- id: a\n", "expected a list under 'models'"),
        ("", "expected a list under 'models'"),
        ("models: [\n", "cannot read model catalog"),
        ("models:\n  - path: a.gguf\n", "invalid model entry"),
        ("models:\n  - id: a\n    path: a.gguf\n    n_ctx: 8\n", "invalid model entry"),
    ],
)
def test_bad_catalogs(tmp_path: Path, text: str, message: str) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(text)
    with pytest.raises(CatalogError, match=message):
        load_specs(_settings(models_path=catalog))


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read model catalog"):
        load_specs(_settings(models_path=tmp_path / "absent.yaml"))


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LALO_INFERENCE_SMALL_PARALLEL", "8")
    monkeypatch.setenv("LALO_INFERENCE_SMALL_LISTEN", "0.0.0.0:1234")
    monkeypatch.setenv("LALO_SERVICE_TOKEN", "tok")
    settings = InferenceSmallSettings()
    assert settings.parallel == 8
    assert settings.listen == "0.0.0.0:1234"
    assert settings.service_token.get_secret_value() == "tok"
