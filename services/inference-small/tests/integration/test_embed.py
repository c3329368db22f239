"""Embed over real gRPC with a real embedding model: all-MiniLM-L6-v2 converted to GGUF from
the installed package, served beside the tiny chat model by one inference-small server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.errors import FailedPrecondition, error_param
from lalo_common.grpc_client import create_channel
from lalo_inference_small.catalog import ModelSpec
from lalo_inference_small.embedding import EmbeddingEngine
from lalo_inference_small.llama_model import LlamaModel
from lalo_inference_small.server import build_server, load_any_engine
from lalo_inference_small.servicer import Engine
from lalo_inference_small.settings import InferenceSmallSettings
from lalo_testing.embedding_model import (
    REFERENCE_SENTENCES,
    REFERENCE_TOKEN_COUNTS,
    check_reference_vectors,
    write_bert_gguf,
)

from .conftest import MODEL_ID, SERVICE_TOKEN

EMBED_ID = "all-minilm-l6-v2"
SENTENCES = REFERENCE_SENTENCES


@pytest.fixture(scope="module")
async def engines(
    tiny_model_path: Path, embedding_model_path: Path
) -> AsyncIterator[dict[str, Engine]]:
    loaded = {
        model_id: await asyncio.to_thread(
            load_any_engine,
            ModelSpec(id=model_id, path=path, n_ctx=512, parallel=4, threads=1),
        )
        for model_id, path in ((MODEL_ID, tiny_model_path), (EMBED_ID, embedding_model_path))
    }
    assert isinstance(loaded[EMBED_ID], EmbeddingEngine)
    try:
        yield loaded
    finally:
        for engine in loaded.values():
            await asyncio.to_thread(engine.close)


@pytest.fixture(scope="module")
async def stub(
    engines: dict[str, Engine],
) -> AsyncIterator[inference_pb2_grpc.InferenceServiceStub]:
    settings = InferenceSmallSettings.model_validate(
        {"LALO_SERVICE_TOKEN": SERVICE_TOKEN, "grace_period_s": 0.1}
    )
    server = build_server(settings, engines)
    port = await server.start("127.0.0.1:0")
    await server.set_serving(True)
    channel = create_channel(f"127.0.0.1:{port}", service_token=SERVICE_TOKEN)
    try:
        yield inference_pb2_grpc.InferenceServiceStub(channel)
    finally:
        await channel.close()
        await server.stop()


def vectors(reply: pb.EmbedResponse) -> np.ndarray:
    return np.array([list(e.values) for e in reply.embeddings], dtype=np.float32)


async def embed(
    stub: inference_pb2_grpc.InferenceServiceStub, inputs: list[str]
) -> pb.EmbedResponse:
    return await stub.Embed(pb.EmbedRequest(model=EMBED_ID, inputs=inputs), timeout=60)


async def test_embeddings_are_the_real_models_normalised_and_in_order(stub) -> None:
    reply = await embed(stub, SENTENCES)
    assert reply.model == EMBED_ID
    check_reference_vectors(vectors(reply))
    # [CLS] + WordPiece tokens + [SEP] per input.
    tokenized = [
        (await stub.Tokenize(pb.TokenizeRequest(model=EMBED_ID, prompt=s), timeout=10)).count
        for s in SENTENCES
    ]
    assert reply.prompt_tokens == sum(tokenized) == sum(REFERENCE_TOKEN_COUNTS)


async def test_an_input_embeds_the_same_alone_and_in_a_batch(stub) -> None:
    many = [f"Sentence number {i} talks about the weather in town." for i in range(30)]
    batched = vectors(await embed(stub, many))
    alone = vectors(await embed(stub, [many[17]]))
    np.testing.assert_allclose(batched[17], alone[0], atol=1e-4)
    assert not np.allclose(batched[16], batched[17], atol=1e-3)


async def test_concurrent_calls_each_get_their_own_vectors(stub) -> None:
    replies = await asyncio.gather(*(embed(stub, [s]) for s in SENTENCES))
    together = vectors(await embed(stub, SENTENCES))
    for index, reply in enumerate(replies):
        np.testing.assert_allclose(vectors(reply)[0], together[index], atol=1e-4)


async def test_an_input_over_the_context_is_refused_not_cut(stub) -> None:
    long_text = "word " * 600
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await embed(stub, ["fine", long_text])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input[1]" in caught.value.details()
    assert "context length of 512" in caught.value.details()


async def test_dimensions_are_the_models_own_or_refused(stub) -> None:
    """llama.cpp gives the whole vector; a shorter one is refused (param: dimensions), never
    cut from a model not trained for it."""
    same = await stub.Embed(
        pb.EmbedRequest(model=EMBED_ID, inputs=["hi"], dimensions=384), timeout=60
    )
    assert len(same.embeddings[0].values) == 384
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(model=EMBED_ID, inputs=["hi"], dimensions=128), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "returns 384-dimensional vectors and cannot shorten them" in caught.value.details()
    assert error_param(caught.value) == "dimensions"


@pytest.mark.parametrize("inputs", [[], [""], ["ok", "   "]])
async def test_empty_input_is_refused(stub, inputs: list[str]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await embed(stub, inputs)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_models_are_used_for_what_they_are(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(model=MODEL_ID, inputs=["hi"]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "generates text" in caught.value.details()
    assert EMBED_ID in caught.value.details()

    generate = stub.Generate(
        pb.GenerateRequest(
            model=EMBED_ID,
            prompt="hello",
            sampling=pb.SamplingParams(max_tokens=4),
        ),
        timeout=10,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in generate:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "embedding model" in caught.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(model="nope", inputs=["hi"]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_models_says_which_model_embeds(stub) -> None:
    models = {m.id: m for m in (await stub.ListModels(pb.ListModelsRequest(), timeout=10)).models}
    assert models[EMBED_ID].embeddings
    assert models[EMBED_ID].embedding_dimensions == 384
    assert models[EMBED_ID].context_length == 512
    assert not models[MODEL_ID].embeddings
    assert models[MODEL_ID].supports_json_schema
    load = await stub.GetLoad(pb.GetLoadRequest(), timeout=10)
    assert load.running == 0


def test_a_text_generator_cannot_be_loaded_as_an_embedding_model(tiny_model_path: Path) -> None:
    model = LlamaModel(tiny_model_path)
    try:
        assert not model.pools_embeddings
        with pytest.raises(FailedPrecondition, match="not a sentence-embedding model"):
            EmbeddingEngine(model, MODEL_ID)
    finally:
        model.close()


def test_the_converter_refuses_what_is_not_a_mean_pooled_bert(tmp_path: Path) -> None:
    source = tmp_path / "not-bert"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="not BERT"):
        write_bert_gguf(source, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


async def test_queued_embeddings_do_not_hold_the_threads_chat_requests_need(
    stub, engines: dict[str, Engine]
) -> None:
    embedder = engines[EMBED_ID]
    assert isinstance(embedder, EmbeddingEngine)
    # More queued calls than asyncio's default pool has threads (2 cores: 6).
    queued = 12
    embedder._lock.acquire()  # the context is busy with a long batch
    try:
        calls = [asyncio.ensure_future(embed(stub, [f"sentence {i}"])) for i in range(queued)]
        load = pb.LoadReport()
        for _ in range(200):
            load = await stub.GetLoad(pb.GetLoadRequest(), timeout=10)
            if load.waiting == queued:
                break
            await asyncio.sleep(0.01)
        assert load.waiting == queued
        # A chat model's tokenization (asyncio's default pool) still answers at once.
        counted = await stub.Tokenize(
            pb.TokenizeRequest(model=MODEL_ID, prompt="still served"), timeout=5
        )
        assert counted.count > 0
        assert not any(call.done() for call in calls)
    finally:
        embedder._lock.release()
    replies = await asyncio.gather(*calls)
    assert [len(r.embeddings) for r in replies] == [1] * queued
    load = await stub.GetLoad(pb.GetLoadRequest(), timeout=10)
    assert (load.waiting, load.running) == (0, 0)
