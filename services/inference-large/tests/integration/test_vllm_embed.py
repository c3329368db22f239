"""Sentence embeddings on vLLM's pooling runner: all-MiniLM-L6-v2 from its installed package,
over real gRPC, and through router and gateway with the official SDK (real processes)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import openai
import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.errors import error_param
from lalo_inference_large.server import build_server
from lalo_inference_large.vllm_backend import VllmBackend, vllm_available

from .conftest import SKIP_REASON, engine_settings

if not vllm_available():
    pytest.skip(SKIP_REASON, allow_module_level=True)

from lalo_testing.embedding_model import (
    REFERENCE_SENTENCES,
    REFERENCE_TOKEN_COUNTS,
    check_reference_vectors,
    minilm_dir,
)
from lalo_testing.stack import start_relay

pytestmark = pytest.mark.integration

EMBED_MODEL = "minilm-vllm"
SENTENCES = REFERENCE_SENTENCES

Stub = inference_pb2_grpc.InferenceServiceStub


# Lengths the served copy declares it was trained for (Matryoshka); all-MiniLM-L6-v2 was not,
# so shortened vectors only show that the length reaches vLLM and comes back normalised.
MATRYOSHKA = [384, 256, 128]


@pytest.fixture(scope="module")
async def embed_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[int, VllmBackend]]:
    """inference-large serving the sentence-transformers folder as it is installed (vLLM's
    "auto" runner picks pooling for a BERT encoder), its config declaring Matryoshka lengths."""
    model_dir = tmp_path_factory.mktemp("models") / "minilm"
    shutil.copytree(minilm_dir(), model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(
        json.dumps(config | {"matryoshka_dimensions": MATRYOSHKA})
    )
    settings = engine_settings(
        model_dir, served_model_name=EMBED_MODEL, model_aliases=[], max_model_len=0
    )
    server = build_server(settings)
    port = await server.start()
    try:
        # Inside the try: a gRPC server left running when the engine fails to start keeps
        # the test process alive after the session ends (it hangs instead of failing).
        backend = await VllmBackend.create(settings)
        await server.attach(backend)
        yield port, backend
    finally:
        await server.stop()


@pytest.fixture
def embed_port(embed_server: tuple[int, VllmBackend]) -> int:
    return embed_server[0]


@pytest.fixture
async def stub(embed_port: int) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{embed_port}") as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def vectors(reply: pb.EmbedResponse) -> np.ndarray:
    return np.array([list(e.values) for e in reply.embeddings], dtype=np.float32)


async def embed(stub: Stub, inputs: list[str], model: str = EMBED_MODEL) -> pb.EmbedResponse:
    return await stub.Embed(pb.EmbedRequest(model=model, inputs=inputs), timeout=120)


async def test_embeddings_are_the_real_models_normalised_and_in_order(stub: Stub) -> None:
    reply = await embed(stub, SENTENCES)
    assert reply.model == EMBED_MODEL
    check_reference_vectors(vectors(reply))
    # [CLS] + WordPiece tokens + [SEP] per input, as inference-small counts them.
    assert reply.prompt_tokens == sum(REFERENCE_TOKEN_COUNTS)


async def test_an_input_embeds_the_same_alone_in_a_batch_and_concurrently(stub: Stub) -> None:
    many = [f"Sentence number {i} talks about the weather in town." for i in range(24)]
    batched = vectors(await embed(stub, many))
    alone = vectors(await embed(stub, [many[17]]))
    np.testing.assert_allclose(batched[17], alone[0], atol=1e-4)
    assert not np.allclose(batched[16], batched[17], atol=1e-3)
    replies = await asyncio.gather(*(embed(stub, [s]) for s in many[:6]))
    for index, reply in enumerate(replies):
        np.testing.assert_allclose(vectors(reply)[0], batched[index], atol=1e-4)


async def test_an_input_over_the_context_is_refused_not_cut(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await embed(stub, ["fine", "word " * 300])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input[1] has 302 tokens" in caught.value.details()
    assert "context length of 256" in caught.value.details()


async def test_a_passed_deadline_aborts_every_input_in_the_engine(
    stub: Stub, embed_server: tuple[int, VllmBackend]
) -> None:
    backend = embed_server[1]
    # ~200 tokens each: well over a minute of work on this CPU if nothing were aborted.
    inputs = [f"{i} " + "word " * 200 for i in range(1500)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(model=EMBED_MODEL, inputs=inputs), timeout=1.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while backend.unfinished_requests() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert backend.unfinished_requests() == 0
    assert len((await embed(stub, ["still serving"])).embeddings) == 1


async def test_a_matryoshka_model_gives_the_lengths_it_was_trained_for(stub: Stub) -> None:
    full = vectors(await embed(stub, SENTENCES[:2]))
    short = vectors(
        await stub.Embed(
            pb.EmbedRequest(model=EMBED_MODEL, inputs=SENTENCES[:2], dimensions=128), timeout=60
        )
    )
    assert short.shape == (2, 128)
    # The first 128 values of the pooled vector, normalised again.
    head = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(short, head, atol=1e-4)
    own = await stub.Embed(
        pb.EmbedRequest(model=EMBED_MODEL, inputs=SENTENCES[:2], dimensions=384), timeout=60
    )
    np.testing.assert_allclose(vectors(own), full, atol=1e-6)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(model=EMBED_MODEL, inputs=["hi"], dimensions=100))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "384, 256, 128 dimensions, not 100" in caught.value.details()
    assert error_param(caught.value) == "dimensions"


@pytest.mark.parametrize("inputs", [[], [""], ["ok", "   "]])
async def test_empty_input_is_refused(stub: Stub, inputs: list[str]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await embed(stub, inputs)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_embedding_model_does_not_generate_and_is_listed_as_one(stub: Stub) -> None:
    generate = stub.Generate(
        pb.GenerateRequest(
            model=EMBED_MODEL, prompt="hello", sampling=pb.SamplingParams(max_tokens=4)
        ),
        timeout=30,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in generate:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "embedding model" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await embed(stub, ["hi"], model="nope")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    (model,) = (await stub.ListModels(pb.ListModelsRequest(), timeout=10)).models
    assert (model.id, model.backend, model.context_length) == (EMBED_MODEL, "vllm", 256)
    assert model.embeddings
    assert model.embedding_dimensions == 384
    assert not model.supports_json_schema


async def test_a_text_generator_does_not_embed(large_server) -> None:
    """The session's tiny generative engine refuses Embed with a 400 that says why."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{large_server[2]}") as channel:
        chat_stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await chat_stub.Embed(pb.EmbedRequest(inputs=["hi"]), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not make embeddings" in caught.value.details()
        (model,) = (await chat_stub.ListModels(pb.ListModelsRequest(), timeout=10)).models
        assert not model.embeddings


async def test_embeddings_through_router_and_gateway_with_the_sdk(
    stub: Stub, embed_port: int, tmp_path: Path
) -> None:
    """The router sends Embed to inference-large because it lists the model as an embedding
    model; the SDK's default base64 and explicit floats decode to the engine's vectors."""
    api_key = f"sk-test-{secrets.token_hex(16)}"
    # Started off the event loop: the engine serves the router's health checks meanwhile.
    relay = await asyncio.to_thread(
        start_relay,
        pool="large",
        backend_target=f"127.0.0.1:{embed_port}",
        api_key=api_key,
        log_dir=tmp_path,
    )
    try:
        async with openai.AsyncOpenAI(
            base_url=f"{relay.gateway_url}/v1", api_key=api_key, max_retries=0, timeout=120
        ) as client:
            direct = vectors(await embed(stub, SENTENCES[:2]))
            response = await client.embeddings.with_raw_response.create(
                model=EMBED_MODEL, input=SENTENCES[:2]
            )
            assert response.headers["x-lalo-model"] == EMBED_MODEL
            assert response.headers["x-lalo-route"] == "large"
            result = response.parse()
            got = np.array([item.embedding for item in result.data], dtype=np.float32)
            np.testing.assert_allclose(got, direct, atol=1e-6)
            assert result.usage.prompt_tokens == sum(REFERENCE_TOKEN_COUNTS[:2])
            raw = await client.embeddings.create(
                model=EMBED_MODEL, input="A man is eating food.", encoding_format="base64"
            )
            decoded = np.frombuffer(base64.b64decode(str(raw.data[0].embedding)), "<f4")
            np.testing.assert_allclose(decoded, direct[0], atol=1e-6)
            short = await client.embeddings.create(
                model=EMBED_MODEL, input="A man is eating food.", dimensions=256
            )
            assert len(short.data[0].embedding) == 256
            with pytest.raises(openai.BadRequestError) as bad_length:
                await client.embeddings.create(model=EMBED_MODEL, input="hi", dimensions=300)
            assert bad_length.value.body["param"] == "dimensions"  # type: ignore[index]
            with pytest.raises(openai.BadRequestError) as chat:
                await client.chat.completions.create(
                    model=EMBED_MODEL, messages=[{"role": "user", "content": "hi"}]
                )
            assert "embedding model" in str(chat.value)
            models = [m.id async for m in client.models.list()]
            assert EMBED_MODEL in models
    finally:
        await asyncio.to_thread(relay.stop)
