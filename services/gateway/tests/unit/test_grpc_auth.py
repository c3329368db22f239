"""Credentials in gRPC metadata get the same checks as the REST API, and the public gRPC
API's Embed applies them (real gRPC servers on localhost: the public API in front of a fake
router)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo.router.v1 import router_pb2_grpc
from lalo_common.errors import PARAM_METADATA, error_param
from lalo_common.grpc_server import GrpcServer
from lalo_gateway.errors import APIError
from lalo_gateway.grpc_api import SERVICE_NAME, start_public_grpc
from lalo_gateway.router_client import RouterClient
from lalo_gateway.security.audit import AuditRecord
from lalo_gateway.security.errors import AuthenticationFailed, Forbidden, RateLimited
from lalo_gateway.security.grpc_auth import authorize_call
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.ratelimit import InProcessRateLimiter
from lalo_gateway.security.rbac import Permission, Role

EMBED_MODEL = "tiny-embed"
CHAT_MODEL = "tiny-chat"
# Credentials the fake authenticator knows, by the bearer value that presents them.
PRINCIPALS = {
    "dev": Principal(subject="d", role=Role.DEVELOPER, kind="api_key", key_id="d", rpm=1),
    "embedder": Principal(
        subject="team-e",
        role=Role.DEVELOPER,
        kind="api_key",
        key_id="e",
        key_prefix="lalo-e",
        allowed_models=frozenset({EMBED_MODEL}),
        tpm=100,
    ),
    "chatter": Principal(
        subject="team-c", role=Role.DEVELOPER, kind="api_key", key_id="c", tpm=100
    ),
    "viewer": Principal(subject="v", role=Role.VIEWER, kind="api_key", key_id="v"),
}


class FakeAuthenticator:
    async def authenticate_header(self, header: str | None) -> Principal:
        kind, _, credential = (header or "").partition(" ")
        if kind == "Bearer" and credential in PRINCIPALS:
            return PRINCIPALS[credential]
        raise AuthenticationFailed("Incorrect API key provided.")


class Context:
    def __init__(self, metadata: list[tuple[str, Any]]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> list[tuple[str, Any]]:
        return self._metadata


RUNTIME: Any = SimpleNamespace(authenticator=FakeAuthenticator(), limiter=InProcessRateLimiter())


async def test_metadata_credentials_are_checked() -> None:
    with pytest.raises(AuthenticationFailed):
        await authorize_call(RUNTIME, Context([]), Permission.INFERENCE)
    with pytest.raises(AuthenticationFailed):
        await authorize_call(
            RUNTIME, Context([("authorization", "Bearer x")]), Permission.INFERENCE
        )
    principal = await authorize_call(
        RUNTIME, Context([("authorization", b"Bearer dev")]), Permission.INFERENCE
    )
    assert principal.subject == "d"
    with pytest.raises(RateLimited):
        await authorize_call(
            RUNTIME, Context([("authorization", "Bearer dev")]), Permission.INFERENCE
        )


async def test_permissions_apply() -> None:
    with pytest.raises(Forbidden, match="admin:keys"):
        await authorize_call(
            RUNTIME, Context([("authorization", "Bearer dev")]), Permission.KEYS_ADMIN
        )


@dataclass
class AuditRecorder:
    records: list[AuditRecord] = field(default_factory=list)

    def record(self, record: AuditRecord) -> None:
        self.records.append(record)


class FakeRouterService(router_pb2_grpc.RouterServiceServicer):
    """The router's Embed over gRPC: a unit vector per input and 4 tokens per input, or the
    status in ``failure``; every request is kept."""

    def __init__(self) -> None:
        self.requests: list[rpb.EmbedRequest] = []
        self.chat_requests: list[rpb.ChatRequest] = []
        self.failure: tuple[grpc.StatusCode, str] | None = None
        self.failure_param = ""

    async def Chat(
        self, request: rpb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.ChatResponse]:
        """The route, then per choice one chunk and a complete of 7 + p prompt tokens (p:
        the choice's prompt, for a list of them) and choice + 1 completion tokens."""
        self.chat_requests.append(request)
        yield rpb.ChatResponse(route=rpb.RouteDecision(pool="small", model=CHAT_MODEL))
        per_prompt = max(1, request.n)
        prompts = len(request.prompts.prompts) if request.HasField("prompts") else 1
        for choice in range(per_prompt * prompts):
            yield rpb.ChatResponse(chunk=ipb.GenerateChunk(text=f"c{choice}"), choice=choice)
            yield rpb.ChatResponse(
                complete=ipb.GenerateComplete(
                    usage=ipb.Usage(
                        prompt_tokens=7 + choice // per_prompt, completion_tokens=choice + 1
                    )
                ),
                choice=choice,
            )

    async def Embed(
        self, request: rpb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> rpb.EmbedResponse:
        self.requests.append(request)
        if self.failure is not None:
            trailing = ((PARAM_METADATA, self.failure_param),) if self.failure_param else ()
            await context.abort(*self.failure, trailing_metadata=trailing)
        return rpb.EmbedResponse(
            result=ipb.EmbedResponse(
                model=request.model,
                embeddings=[ipb.Embedding(values=[0.6, 0.8]) for _ in request.inputs],
                prompt_tokens=4 * len(request.inputs),
            ),
            pool="embed",
            replica="embed-0",
        )


@dataclass
class PublicApi:
    stub: router_pb2_grpc.RouterServiceStub
    router: FakeRouterService
    client: RouterClient
    audit: AuditRecorder
    limiter: InProcessRateLimiter


@pytest.fixture
async def public_api() -> AsyncIterator[PublicApi]:
    fake = FakeRouterService()
    router_server = GrpcServer(service_names=[SERVICE_NAME], grace_period_s=0)
    router_pb2_grpc.add_RouterServiceServicer_to_server(fake, router_server.server)
    port = await router_server.start("127.0.0.1:0")
    client = RouterClient(f"127.0.0.1:{port}", timeout_s=10)
    audit = AuditRecorder()
    limiter = InProcessRateLimiter()
    runtime: Any = SimpleNamespace(
        authenticator=FakeAuthenticator(),
        limiter=limiter,
        audit=audit,
        settings=SimpleNamespace(max_embedding_inputs=2, max_messages=2, max_tokens_limit=50),
    )
    public = await start_public_grpc(client, runtime, "127.0.0.1:0", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{public.port}")
    try:
        yield PublicApi(router_pb2_grpc.RouterServiceStub(channel), fake, client, audit, limiter)
    finally:
        await channel.close()
        await public.stop()
        await client.close()
        await router_server.stop()


def embed_request(**fields: Any) -> rpb.EmbedRequest:
    return rpb.EmbedRequest(**{"model": EMBED_MODEL, "inputs": ["a", "b"], **fields})


async def embed_status(api: PublicApi, request: rpb.EmbedRequest, key: str | None) -> Any:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await api.stub.Embed(request, metadata=metadata)
    return failed.value.code()


async def test_grpc_embed_stamps_the_verified_caller_and_charges_tokens(
    public_api: PublicApi,
) -> None:
    forged = embed_request(request_id="rid-g", principal="admin@evil", tenant="evil")
    call = public_api.stub.Embed(forged, metadata=(("authorization", "Bearer embedder"),))
    reply = await call
    assert [list(e.values) for e in reply.result.embeddings] == [
        [pytest.approx(0.6), pytest.approx(0.8)]
    ] * 2
    assert (reply.result.prompt_tokens, reply.pool) == (8, "embed")
    (sent,) = public_api.router.requests
    assert (sent.principal, sent.tenant, sent.request_id) == ("team-e", "team-e", "rid-g")
    assert list(sent.inputs) == ["a", "b"]
    assert ("x-request-id", "rid-g") in tuple(await call.initial_metadata())
    (record,) = public_api.audit.records
    assert (record.path, record.status, record.request_id) == (
        "/" + SERVICE_NAME + "/Embed",
        200,
        "rid-g",
    )
    assert (record.subject, record.key_prefix, record.model) == ("team-e", "lalo-e", EMBED_MODEL)
    assert (record.tokens_in, record.tokens_out) == (8, 0)
    admission = await public_api.limiter.admit(PRINCIPALS["embedder"])
    assert admission.remaining_tokens == 100 - 8


async def test_grpc_embed_needs_credentials_inference_and_an_allowed_model(
    public_api: PublicApi,
) -> None:
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert await embed_status(public_api, embed_request(), None) == unauthenticated
    assert await embed_status(public_api, embed_request(), "forged") == unauthenticated
    assert await embed_status(public_api, embed_request(), "viewer") == denied
    other_model = embed_request(model="tiny-chat")
    assert await embed_status(public_api, other_model, "embedder") == denied
    too_many = embed_request(inputs=["a", "b", "c"])
    assert await embed_status(public_api, too_many, "embedder") == grpc.StatusCode.INVALID_ARGUMENT
    assert public_api.router.requests == []
    assert [r.status for r in public_api.audit.records] == [401, 401, 403, 403, 400]
    assert public_api.audit.records[3].error_code == "permission_denied"


async def test_grpc_embed_relays_the_routers_status_and_charges_nothing(
    public_api: PublicApi,
) -> None:
    public_api.router.failure = (grpc.StatusCode.NOT_FOUND, "no embedding model 'tiny-embed'")
    metadata = (("authorization", "Bearer embedder"),)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await public_api.stub.Embed(embed_request(), metadata=metadata)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert failed.value.details() == "no embedding model 'tiny-embed'"
    (record,) = public_api.audit.records
    assert (record.status, record.error_code) == (404, "not_found")
    admission = await public_api.limiter.admit(PRINCIPALS["embedder"])
    assert admission.remaining_tokens == 100
    assert error_param(failed.value) is None


async def test_grpc_relays_the_field_the_router_named(public_api: PublicApi) -> None:
    """A public gRPC caller learns which field was wrong, as a REST caller reads ``param``."""
    public_api.router.failure = (grpc.StatusCode.INVALID_ARGUMENT, "input[1] is too long")
    public_api.router.failure_param = "input"
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await public_api.stub.Embed(
            embed_request(), metadata=(("authorization", "Bearer embedder"),)
        )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_param(failed.value) == "input"
    (record,) = public_api.audit.records
    assert (record.status, record.error_code) == (400, "invalid_argument")


async def test_router_client_embed(public_api: PublicApi) -> None:
    """The REST side's call: the reply as the router sent it, a failure as OpenAI's error."""
    reply = await public_api.client.embed(embed_request(request_id="rid-c"))
    assert len(reply.result.embeddings) == 2
    assert public_api.router.requests[0].request_id == "rid-c"
    public_api.router.failure = (grpc.StatusCode.NOT_FOUND, "The model 'x' does not exist")
    with pytest.raises(APIError) as missing:
        await public_api.client.embed(embed_request())
    assert (missing.value.status, missing.value.code, missing.value.param) == (
        404,
        "model_not_found",
        "model",
    )
    public_api.router.failure = (grpc.StatusCode.UNAVAILABLE, "no replica")
    with pytest.raises(APIError) as down:
        await public_api.client.embed(embed_request())
    assert (down.value.status, down.value.code) == (503, "backend_unavailable")


def chat_request(**fields: Any) -> rpb.ChatRequest:
    request = rpb.ChatRequest(model=CHAT_MODEL, **fields)
    request.chat.messages.add(role="user", content="hi")
    return request


async def test_grpc_chat_with_several_choices_charges_the_prompt_once(
    public_api: PublicApi,
) -> None:
    metadata = (("authorization", "Bearer chatter"),)
    events = [e async for e in public_api.stub.Chat(chat_request(n=3), metadata=metadata)]
    completes = [e.choice for e in events if e.WhichOneof("event") == "complete"]
    assert completes == [0, 1, 2]
    assert public_api.router.chat_requests[0].n == 3
    (record,) = public_api.audit.records
    assert (record.tokens_in, record.tokens_out) == (7, 1 + 2 + 3)
    admission = await public_api.limiter.admit(PRINCIPALS["chatter"])
    assert admission.remaining_tokens == 100 - 13


async def test_grpc_chat_with_a_list_of_prompts_charges_each_prompt_once(
    public_api: PublicApi,
) -> None:
    metadata = (("authorization", "Bearer chatter"),)
    request = rpb.ChatRequest(model=CHAT_MODEL, n=2, prompts=rpb.PromptList(prompts=["a", "b"]))
    events = [e async for e in public_api.stub.Chat(request, metadata=metadata)]
    completes = [e.choice for e in events if e.WhichOneof("event") == "complete"]
    assert completes == [0, 1, 2, 3]
    (record,) = public_api.audit.records
    # Prompt 0 (7 tokens) and prompt 1 (8) once each; completions 1 + 2 + 3 + 4.
    assert (record.tokens_in, record.tokens_out) == (15, 10)
    admission = await public_api.limiter.admit(PRINCIPALS["chatter"])
    assert admission.remaining_tokens == 100 - 25


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (chat_request(n=129), "n"),
        (
            rpb.ChatRequest(model=CHAT_MODEL, n=2, prompts=rpb.PromptList(prompts=["x"] * 65)),
            "prompt",
        ),
        (
            rpb.ChatRequest(
                model=CHAT_MODEL,
                n=2,
                prompts=rpb.PromptList(token_prompts=[ipb.TokenIds(ids=[1, 2])] * 65),
            ),
            "prompt",
        ),
        (chat_request(sampling=ipb.SamplingParams(max_tokens=51)), "max_tokens"),
        (
            rpb.ChatRequest(
                model=CHAT_MODEL,
                chat=ipb.ChatInput(messages=[ipb.ChatMessage(role="user", content="x")] * 3),
            ),
            "messages",
        ),
    ],
    ids=["n", "prompts", "token-prompts", "max_tokens", "messages"],
)
async def test_grpc_chat_meets_the_rest_apis_limits(
    public_api: PublicApi, request_: rpb.ChatRequest, param: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await anext(
            aiter(public_api.stub.Chat(request_, metadata=(("authorization", "Bearer chatter"),)))
        )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_param(failed.value) == param
    assert public_api.router.chat_requests == []
    (record,) = public_api.audit.records
    assert record.status == 400
