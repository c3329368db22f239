"""A classifier that cannot load stops the router with one readable line, not a traceback."""

from __future__ import annotations

import logging

import pytest
from lalo_router import server
from lalo_router.classify import model
from lalo_router.classify.model import ArtifactError, load_classifier
from lalo_router.settings import RouterSettings


def test_slow_path_that_cannot_load_is_an_artifact_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*_args: object) -> None:
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(model.QuantizedMiniLM, "load", unavailable)
    with pytest.raises(ArtifactError, match="slow path's MiniLM: No module named 'onnxruntime'"):
        load_classifier()


async def test_router_exits_2_with_a_hint_when_the_classifier_cannot_load(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise ArtifactError("cannot read classifier artifact /x.npz: truncated")

    monkeypatch.setattr(server, "load_classifier", broken)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        await server.serve(RouterSettings(listen="127.0.0.1:0"))
    assert exit_info.value.code == 2
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "cannot read classifier artifact /x.npz" in record.getMessage()
    assert "LALO_ROUTER_CLASSIFIER=none" in record.getMessage()
