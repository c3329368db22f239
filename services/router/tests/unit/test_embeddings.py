"""Embeddings against fake inference servers on loopback ports: replica choice across pools,
one retry on another replica, errors that name the embedding models, pass-through of the
backend's errors, metrics, and the RPCs through a real router server (Embed, ListModels,
and Chat refusing an embedding model)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc
from lalo_common.auth import REQUEST_ID_METADATA
from lalo_common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from lalo_router.embeddings import Embedder
from lalo_router.replicas import FAILURES_TO_OPEN, ReplicaSet
from lalo_testing.inference import FakeInference, FakeServer, collect, start_fake_inference
from prometheus_client import REGISTRY

TOKEN = "router-embed-test-token"
EMBED_MODEL = "mini-embed"
DIMENSIONS = 4


@dataclass
class Fleet:
    # a and b (pool small) serve the chat model "tiny" beside the embedding model, which a
    # lists first; c (pool embed) serves only the embedding model. With no request in
    # flight, a is asked first, then b, then c.
    a: FakeInference
    b: FakeInference
    c: FakeInference
    servers: list[FakeServer]
    replicas: ReplicaSet
    embedder: Embedder

    async def embed(
        self, model: str = EMBED_MODEL, time_remaining: float | None = None, **fields: object
    ) -> rpb.EmbedResponse:
        return await self.embedder.embed(request(model, **fields), time_remaining)


def request(
    model: str = EMBED_MODEL, inputs: tuple[str, ...] = ("hello world",), request_id: str = ""
) -> rpb.EmbedRequest:
    return rpb.EmbedRequest(request_id=request_id, model=model, inputs=inputs)


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    embedding = {EMBED_MODEL: DIMENSIONS}
    server_a, server_b, server_c = [
        await start_fake_inference(name, models, service_token=TOKEN, embedding=embedding)
        for name, models in (
            ("a", [EMBED_MODEL, "tiny"]),
            ("b", ["tiny", EMBED_MODEL]),
            ("c", [EMBED_MODEL]),
        )
    ]
    a, b, c = server_a.servicer, server_b.servicer, server_c.servicer
    servers = [server_a, server_b, server_c]
    replicas = ReplicaSet(
        [("small", server_a.target), ("small", server_b.target), ("embed", server_c.target)],
        service_token=TOKEN,
    )
    await replicas.refresh()
    yield Fleet(a, b, c, servers, replicas, Embedder(replicas, timeout_s=30))
    await replicas.close()
    for server in servers:
        await server.stop()


def embed_count(model: str, pool: str, outcome: str) -> float:
    labels = {"model": model, "pool": pool, "outcome": outcome}
    return REGISTRY.get_sample_value("lalo_router_embed_requests_total", labels) or 0.0


async def test_embed_answers_from_a_replica_serving_the_model(fleet: Fleet) -> None:
    before = embed_count(EMBED_MODEL, "small", "ok")
    response = await fleet.embed(inputs=("one", "three"), request_id="req-7")
    assert (response.pool, response.replica) == ("small", fleet.servers[0].target)
    assert response.result.model == EMBED_MODEL
    assert [list(e.values) for e in response.result.embeddings] == [[3.0] * 4, [5.0] * 4]
    assert response.result.prompt_tokens == 2
    (call,) = fleet.a.embed_calls
    assert (call.request.model, list(call.request.inputs)) == (EMBED_MODEL, ["one", "three"])
    assert call.request.request_id == "req-7"
    assert call.metadata[REQUEST_ID_METADATA] == "req-7"
    assert not call.request.HasField("dimensions")
    assert not [*fleet.b.embed_calls, *fleet.c.embed_calls]
    assert fleet.replicas.replicas[0].outstanding == 0
    assert embed_count(EMBED_MODEL, "small", "ok") == before + 1


async def test_the_length_asked_for_reaches_the_replica(fleet: Fleet) -> None:
    """``dimensions`` is the replica's to honour or refuse (only it knows whether the model
    can shorten its vectors); the router passes it on unchanged."""
    shorter = request(inputs=("one",))
    shorter.dimensions = 2
    await fleet.embedder.embed(shorter, None)
    (call,) = fleet.a.embed_calls
    assert call.request.HasField("dimensions")
    assert call.request.dimensions == 2


async def test_embed_goes_to_the_least_busy_replica_in_any_pool(fleet: Fleet) -> None:
    fleet.replicas.replicas[0].outstanding = 2
    fleet.replicas.replicas[1].outstanding = 1
    response = await fleet.embed()
    assert (response.pool, response.replica) == ("embed", fleet.servers[2].target)
    assert len(fleet.c.embed_calls) == 1


async def test_a_replica_listing_the_id_as_a_text_model_is_not_asked(fleet: Fleet) -> None:
    fleet.replicas.replicas[0].models[EMBED_MODEL] = ipb.ModelInfo(id=EMBED_MODEL)
    response = await fleet.embed()
    assert response.replica == fleet.servers[1].target
    assert not fleet.a.embed_calls


async def test_a_dead_replica_is_replaced_by_another_once(fleet: Fleet) -> None:
    await fleet.servers[0].stop()  # a: nothing listens on its port any more
    response = await fleet.embed()
    assert response.replica == fleet.servers[1].target
    assert len(fleet.b.embed_calls) == 1
    assert fleet.replicas.replicas[0].consecutive_failures == 1
    assert fleet.replicas.replicas[1].consecutive_failures == 0


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    ],
    ids=["unavailable", "busy", "replica-stopping"],
)
async def test_a_failing_replica_is_replaced_by_another(
    fleet: Fleet, code: grpc.StatusCode
) -> None:
    fleet.a.behaviour = "fail_before"
    fleet.a.fail_code = code
    response = await fleet.embed()
    assert response.replica == fleet.servers[1].target
    assert len(fleet.a.embed_calls) == len(fleet.b.embed_calls) == 1


async def test_a_replica_past_the_routers_timeout_is_replaced(fleet: Fleet) -> None:
    fleet.a.behaviour = "hang"
    embedder = Embedder(fleet.replicas, timeout_s=0.3)
    response = await embedder.embed(request())
    assert response.replica == fleet.servers[1].target
    assert fleet.replicas.replicas[0].consecutive_failures == 1


async def test_only_one_other_replica_is_tried(fleet: Fleet) -> None:
    before = embed_count(EMBED_MODEL, "small", "unavailable")
    for fake in (fleet.a, fleet.b, fleet.c):
        fake.behaviour = "fail_before"
    with pytest.raises(Unavailable, match=r"no replica serving 'mini-embed' answered \(2 tried\)"):
        await fleet.embed()
    assert len(fleet.a.embed_calls) == len(fleet.b.embed_calls) == 1
    assert not fleet.c.embed_calls
    assert embed_count(EMBED_MODEL, "small", "unavailable") == before + 1


async def test_the_only_replica_failing_is_unavailable(fleet: Fleet) -> None:
    for replica in fleet.replicas.replicas[1:]:
        replica.healthy = False
    fleet.a.behaviour = "fail_before"
    with pytest.raises(Unavailable, match=r"\(1 tried\): a failed to embed"):
        await fleet.embed()


async def test_repeated_failures_open_the_circuit(fleet: Fleet) -> None:
    fleet.a.behaviour = "fail_before"
    for _ in range(FAILURES_TO_OPEN):
        assert (await fleet.embed()).replica == fleet.servers[1].target
    for _ in range(3):
        await fleet.embed()
    # Open: a is no longer asked at all.
    assert len(fleet.a.embed_calls) == FAILURES_TO_OPEN


async def test_the_backends_errors_pass_through_unretried(fleet: Fleet) -> None:
    fleet.a.behaviour = "fail_before"
    fleet.a.fail_code = grpc.StatusCode.INVALID_ARGUMENT
    fleet.a.fail_param = "input"
    with pytest.raises(InvalidArgument, match="a failed to embed") as info:
        await fleet.embed()
    assert info.value.param == "input"
    assert not [*fleet.b.embed_calls, *fleet.c.embed_calls]
    # The caller's mistake says nothing about the replica's health.
    assert fleet.replicas.replicas[0].consecutive_failures == 0


@pytest.mark.parametrize("model", ["", "auto", "workflow"])
async def test_routes_are_not_embedding_models(fleet: Fleet, model: str) -> None:
    with pytest.raises(
        InvalidArgument, match=r"name an embedding model \(embedding models: mini-embed\)"
    ) as info:
        await fleet.embed(model)
    assert info.value.param == "model"
    assert not fleet.a.embed_calls


async def test_a_text_model_does_not_make_embeddings(fleet: Fleet) -> None:
    before = embed_count("tiny", "", "invalid_argument")
    with pytest.raises(InvalidArgument) as info:
        await fleet.embed("tiny")
    assert info.value.message == (
        "'tiny' generates text, it does not make embeddings; embedding models: mini-embed"
    )
    assert embed_count("tiny", "", "invalid_argument") == before + 1


async def test_an_unknown_model_is_not_found(fleet: Fleet) -> None:
    before = embed_count("", "", "not_found")
    with pytest.raises(
        NotFound, match=r"'text-embedding-3-small' does not exist.*embedding models: mini-embed"
    ):
        await fleet.embed("text-embedding-3-small")
    # A caller's model name that no replica lists is not a label value.
    assert embed_count("", "", "not_found") == before + 1
    assert embed_count("text-embedding-3-small", "", "not_found") == 0


async def test_no_inputs_is_invalid(fleet: Fleet) -> None:
    with pytest.raises(InvalidArgument, match="'input' is empty") as info:
        await fleet.embed(inputs=())
    assert info.value.param == "input"
    assert not fleet.a.embed_calls


async def test_a_known_embedding_model_without_a_healthy_replica_is_unavailable(
    fleet: Fleet,
) -> None:
    for replica in fleet.replicas.replicas:
        replica.healthy = False
    with pytest.raises(Unavailable, match="no healthy replica serves 'mini-embed'"):
        await fleet.embed()


async def test_replicas_at_their_cap_are_resource_exhausted(fleet: Fleet) -> None:
    for replica in fleet.replicas.replicas:
        replica.max_outstanding = 1
        replica.outstanding = 1
    with pytest.raises(ResourceExhausted, match="'mini-embed' is at its limit"):
        await fleet.embed()
    assert not fleet.a.embed_calls


async def test_the_callers_deadline_bounds_the_backend_call(fleet: Fleet) -> None:
    await fleet.embed(time_remaining=5.0)
    await fleet.embed()
    bounded, default = fleet.a.embed_calls
    assert bounded.time_remaining is not None
    assert 0 < bounded.time_remaining <= 5.5  # the wire rounds deadlines up a little
    assert default.time_remaining is not None
    assert 10.0 < default.time_remaining <= 31.0


async def test_the_callers_deadline_is_not_the_replicas_fault(fleet: Fleet) -> None:
    fleet.a.behaviour = "hang"
    for _ in range(FAILURES_TO_OPEN + 1):
        with pytest.raises(DeadlineExceeded):
            await fleet.embed(time_remaining=0.2)
    # Not retried elsewhere (the caller has no time left) and not counted against a.
    assert not fleet.b.embed_calls
    assert fleet.replicas.replicas[0].consecutive_failures == 0


# ---- through a real router server ----


@pytest.fixture
async def router(
    fleet: Fleet, start_router: Callable[..., Awaitable[router_pb2_grpc.RouterServiceStub]]
) -> router_pb2_grpc.RouterServiceStub:
    return await start_router(fleet.replicas, TOKEN)


async def test_router_server_embeds(
    router: router_pb2_grpc.RouterServiceStub, fleet: Fleet
) -> None:
    response = await router.Embed(request(inputs=("a", "bb", "ccc")), timeout=10)
    assert (response.pool, response.replica) == ("small", fleet.servers[0].target)
    assert [e.values[0] for e in response.result.embeddings] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("model", "inputs", "code", "details"),
    [
        ("tiny", ("x",), grpc.StatusCode.INVALID_ARGUMENT, "'tiny' generates text"),
        ("auto", ("x",), grpc.StatusCode.INVALID_ARGUMENT, "name an embedding model"),
        ("nope", ("x",), grpc.StatusCode.NOT_FOUND, "embedding models: mini-embed"),
        (EMBED_MODEL, (), grpc.StatusCode.INVALID_ARGUMENT, "'input' is empty"),
    ],
)
async def test_router_server_maps_embed_errors_to_statuses(
    router: router_pb2_grpc.RouterServiceStub,
    model: str,
    inputs: tuple[str, ...],
    code: grpc.StatusCode,
    details: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.Embed(request(model, inputs=inputs), timeout=10)
    assert info.value.code() is code
    assert details in (info.value.details() or "")


async def test_router_server_passes_backend_errors_through(
    router: router_pb2_grpc.RouterServiceStub, fleet: Fleet
) -> None:
    fleet.a.behaviour = "fail_before"
    fleet.a.fail_code = grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.Embed(request(), timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "a failed to embed"


async def test_router_server_lists_embedding_fields(
    router: router_pb2_grpc.RouterServiceStub,
) -> None:
    reply = await router.ListModels(ipb.ListModelsRequest(), timeout=10)
    models = {m.id: m for m in reply.models}
    assert set(models) == {EMBED_MODEL, "tiny"}
    assert models[EMBED_MODEL].embeddings
    assert models[EMBED_MODEL].embedding_dimensions == DIMENSIONS
    assert not models["tiny"].embeddings
    assert models["tiny"].embedding_dimensions == 0


def chat_request(model: str) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model=model, chat=ipb.ChatInput(messages=[ipb.ChatMessage(role="user", content="hi")])
    )


async def test_chat_refuses_an_embedding_model(
    router: router_pb2_grpc.RouterServiceStub, fleet: Fleet
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(router.Chat(chat_request(EMBED_MODEL), timeout=10))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "'mini-embed' is an embedding model: use /v1/embeddings"
    assert not [*fleet.a.calls, *fleet.b.calls, *fleet.c.calls]


async def test_auto_chat_gets_the_text_model_beside_an_embedding_model(
    router: router_pb2_grpc.RouterServiceStub, fleet: Fleet
) -> None:
    """Replica a lists the embedding model first; an "auto" chat still gets "tiny"."""
    result = await collect(router.Chat(chat_request("auto"), timeout=10))
    assert (result.route.pool, result.route.model) == ("small", "tiny")
    assert result.complete is not None
    assert [call.request.model for call in [*fleet.a.calls, *fleet.b.calls]] == ["tiny"]
