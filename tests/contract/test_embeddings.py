"""POST /v1/embeddings through gateway -> router -> inference-small, with the official SDK.

The stack serves a real embedding model (all-MiniLM-L6-v2, converted to GGUF from the
installed package), so unlike the chat tests these check what the vectors mean too."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
from lalo_testing.openai_wire import assert_openai_error
from lalo_testing.stack import Stack

pytestmark = pytest.mark.contract

EMBED_MODEL = "all-minilm-l6-v2"


def test_sdk_embeds_a_list_in_order_with_usage(client: openai.OpenAI) -> None:
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
    ]
    # The SDK asks for base64 unless told otherwise, and decodes it.
    reply = client.embeddings.create(model=EMBED_MODEL, input=texts)
    assert reply.object == "list"
    assert reply.model == EMBED_MODEL
    assert [item.index for item in reply.data] == [0, 1, 2]
    vectors = np.array([item.embedding for item in reply.data])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > 0.7 > 0.1 > vectors[0] @ vectors[2]
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == 8 + 11 + 9


def test_float_and_base64_encodings_carry_the_same_vector(http: httpx.Client) -> None:
    body = {"model": EMBED_MODEL, "input": "Hello there"}
    as_float = http.post("/v1/embeddings", json={**body, "encoding_format": "float"})
    as_base64 = http.post("/v1/embeddings", json={**body, "encoding_format": "base64"})
    assert as_float.status_code == as_base64.status_code == 200
    assert as_float.headers["x-lalo-model"] == EMBED_MODEL
    assert as_float.headers["x-lalo-route"]
    floats = as_float.json()["data"][0]["embedding"]
    packed = as_base64.json()["data"][0]["embedding"]
    assert isinstance(floats, list)
    assert isinstance(packed, str)
    decoded = np.frombuffer(base64.b64decode(packed), dtype="<f4")
    np.testing.assert_allclose(decoded, np.array(floats, dtype=np.float32), atol=1e-6)


def test_dimensions_equal_to_the_models_is_accepted(client: openai.OpenAI) -> None:
    reply = client.embeddings.create(model=EMBED_MODEL, input="hi", dimensions=384)
    assert len(reply.data[0].embedding) == 384


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": EMBED_MODEL, "input": ""}, "input"),
        ({"model": EMBED_MODEL, "input": []}, "input"),
        ({"model": EMBED_MODEL, "input": [1, 2, 3]}, "input"),
        ({"model": EMBED_MODEL, "input": [[1, 2], [3]]}, "input"),
        ({"model": EMBED_MODEL, "input": "hi", "encoding_format": "int8"}, "encoding_format"),
        ({"model": EMBED_MODEL, "input": "hi", "dimensions": 128}, "dimensions"),
        ({"model": EMBED_MODEL, "input": "word " * 600}, "input"),
    ],
)
def test_bad_requests_say_what_is_wrong(http: httpx.Client, body: dict, param: str) -> None:
    response = http.post("/v1/embeddings", json=body)
    assert_openai_error(response, 400, param=param)


def test_a_chat_model_or_auto_is_not_an_embedding_model(http: httpx.Client, stack: Stack) -> None:
    for model in (stack.model_id, "auto"):
        response = http.post("/v1/embeddings", json={"model": model, "input": "hi"})
        assert_openai_error(response, 400)
        assert EMBED_MODEL in response.json()["error"]["message"]


def test_an_unknown_model_is_404(http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", json={"model": "no-such-model", "input": "hi"})
    assert_openai_error(response, 404, code="model_not_found")


def test_chat_with_the_embedding_model_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=EMBED_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert "embedding model" in str(caught.value)


def test_auto_chat_never_lands_on_the_embedding_model(client: openai.OpenAI) -> None:
    for text in ("Hello!", "What is the capital of France?", "Write a haiku about rain."):
        reply = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": text}], max_tokens=4
        )
        assert reply.model != EMBED_MODEL


def test_embeddings_need_credentials(anonymous: httpx.Client) -> None:
    response = anonymous.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": "hi"})
    assert_openai_error(response, 401)


def test_models_lists_the_embedding_model(client: openai.OpenAI) -> None:
    assert EMBED_MODEL in [model.id for model in client.models.list().data]
