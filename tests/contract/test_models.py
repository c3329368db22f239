"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

import httpx
import openai
import pytest
from lalo_testing.openai_wire import assert_openai_error
from lalo_testing.stack import Stack

pytestmark = pytest.mark.contract


def test_list_models(client: openai.OpenAI, stack: Stack) -> None:
    models = client.models.list()
    ids = [model.id for model in models.data]
    assert "auto" in ids
    assert stack.model_id in ids
    assert len(ids) == len(set(ids))
    for model in models.data:
        assert model.object == "model"
        assert isinstance(model.created, int)
        assert model.owned_by


def test_list_models_wire_format(http: httpx.Client) -> None:
    response = http.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert all(set(m) >= {"id", "object", "created", "owned_by"} for m in body["data"])


def test_retrieve_model(client: openai.OpenAI, stack: Stack) -> None:
    model = client.models.retrieve(stack.model_id)
    assert model.id == stack.model_id
    assert model.object == "model"
    assert client.models.retrieve("auto").id == "auto"


def test_retrieve_unknown_model(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    assert_openai_error(
        http.get("/v1/models/no-such-model"), 404, code="model_not_found", param="model"
    )


def test_models_need_a_key(anonymous: httpx.Client) -> None:
    assert_openai_error(anonymous.get("/v1/models"), 401, code="invalid_api_key")
