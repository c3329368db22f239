"""Helpers for tests that speak lalo.inference.v1: collecting a Generate stream, polling
for a condition, and a scriptable fake InferenceService for testing its callers.

The fake serves in-process on a loopback port through the same GrpcServer factory as the
real services, so callers see real statuses, deadlines and cancellations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.auth import REQUEST_ID_METADATA
from lalo_common.errors import PARAM_METADATA
from lalo_common.grpc_server import GrpcServer


@dataclass
class GenerateResult:
    """Everything one Generate (or router Chat) stream produced."""

    text: str = ""
    chunks: list[pb.GenerateChunk] = field(default_factory=list)
    complete: pb.GenerateComplete | None = None
    error: pb.GenerateError | None = None
    route: Any = None

    @property
    def tokens(self) -> list[pb.TokenInfo]:
        return [token for chunk in self.chunks for token in chunk.tokens]

    @property
    def finish_reason(self) -> int:
        assert self.complete is not None, f"stream did not complete: {self.error}"
        return int(self.complete.finish_reason)


async def collect(stream: AsyncIterable[Any]) -> GenerateResult:
    """Reads a GenerateResponse or router ChatResponse stream to its end."""
    result = GenerateResult()
    async for event in stream:
        kind = event.WhichOneof("event")
        if kind == "chunk":
            result.chunks.append(event.chunk)
            result.text += event.chunk.text
        elif kind == "complete":
            result.complete = event.complete
        elif kind == "error":
            result.error = event.error
        elif kind == "route":
            result.route = event.route
    return result


async def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Polls until ``condition()`` holds; fails only after a generous bound."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.01)


@dataclass
class FakeCall:
    """What the fake saw of one Generate call."""

    request: pb.GenerateRequest
    metadata: dict[str, str]
    time_remaining: float | None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False


@dataclass
class FakeEmbedCall:
    """What the fake saw of one Embed call."""

    request: pb.EmbedRequest
    metadata: dict[str, str]
    time_remaining: float | None


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {
        item.key: item.value if isinstance(item.value, str) else item.value.decode()
        for item in context.invocation_metadata() or ()
    }


class FakeInference(inference_pb2_grpc.InferenceServiceServicer):
    """A scriptable InferenceService.

    ``behaviour`` decides what Generate does: ``"ok"`` streams ``tokens`` chunks and a
    complete; ``"fail_before"`` aborts with ``fail_code`` before any output; ``"fail_after"``
    streams two chunks and then aborts; ``"hang"`` streams one chunk and waits until the
    caller goes away (recording the cancellation); ``"echo"`` answers the raw prompt (or
    the last message) as one chunk.

    ``embedding`` (model id -> dimensions) marks some of ``models`` as embedding models:
    ListModels says so and Embed answers for them (vectors of the input's length), with
    ``"fail_before"`` aborting with ``fail_code`` (and ``fail_param`` as the error's param)
    and ``"hang"`` never answering.
    """

    def __init__(
        self, name: str, models: list[str], embedding: dict[str, int] | None = None
    ) -> None:
        self.name = name
        self.models = models
        self.embedding = embedding or {}
        self.behaviour = "ok"
        self.tokens = 3
        self.fail_code = grpc.StatusCode.UNAVAILABLE
        self.fail_param = ""
        self.calls: list[FakeCall] = []
        self.embed_calls: list[FakeEmbedCall] = []
        self.list_calls = 0

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        call = FakeCall(request, _metadata(context), context.time_remaining())
        self.calls.append(call)
        if request.model not in self.models:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{request.model!r} not served")
        if self.behaviour == "fail_before":
            await context.abort(self.fail_code, f"{self.name} failed before output")
        try:
            count = 1 if self.behaviour == "hang" else self.tokens
            if self.behaviour == "fail_after":
                count = 2
            if self.behaviour == "echo":
                count = 1
                said = request.chat.messages[-1].content if request.HasField("chat") else ""
                yield pb.GenerateResponse(chunk=pb.GenerateChunk(text=said or request.prompt))
            for i in range(count if self.behaviour != "echo" else 0):
                yield pb.GenerateResponse(chunk=pb.GenerateChunk(text=f"{self.name}-{i} "))
            if self.behaviour == "fail_after":
                await context.abort(self.fail_code, f"{self.name} died mid-stream")
            if self.behaviour == "hang":
                await asyncio.Event().wait()
            yield pb.GenerateResponse(
                complete=pb.GenerateComplete(
                    finish_reason=pb.FINISH_REASON_LENGTH,
                    usage=pb.Usage(prompt_tokens=1, completion_tokens=count),
                    model=request.model,
                )
            )
            call.finished = True
        except asyncio.CancelledError:
            call.cancelled.set()
            raise

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        self.list_calls += 1
        return pb.ListModelsResponse(
            models=[
                pb.ModelInfo(
                    id=m,
                    backend="fake",
                    context_length=256,
                    embeddings=m in self.embedding,
                    embedding_dimensions=self.embedding.get(m, 0),
                )
                for m in self.models
            ]
        )

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        self.embed_calls.append(
            FakeEmbedCall(request, _metadata(context), context.time_remaining())
        )
        if request.model not in self.embedding:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{request.model!r} not served")
        if self.behaviour == "fail_before":
            trailing = ((PARAM_METADATA, self.fail_param),) if self.fail_param else ()
            await context.abort(
                self.fail_code, f"{self.name} failed to embed", trailing_metadata=trailing
            )
        if self.behaviour == "hang":
            await asyncio.Event().wait()
        dimensions = self.embedding[request.model]
        return pb.EmbedResponse(
            model=request.model,
            embeddings=[
                pb.Embedding(values=[float(len(text))] * dimensions) for text in request.inputs
            ],
            prompt_tokens=sum(len(text.split()) for text in request.inputs),
        )

    async def GetLoad(
        self, request: pb.GetLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoadReport:
        return pb.LoadReport(running=sum(not c.finished for c in self.calls), max_sequences=4)

    def request_ids(self) -> list[str]:
        return [c.metadata.get(REQUEST_ID_METADATA, "") for c in self.calls]


@dataclass
class FakeServer:
    servicer: FakeInference
    server: GrpcServer
    target: str

    async def stop(self) -> None:
        await self.server.stop()


async def start_fake_inference(
    name: str,
    models: list[str],
    *,
    service_token: str = "",
    address: str = "127.0.0.1:0",
    embedding: dict[str, int] | None = None,
) -> FakeServer:
    servicer = FakeInference(name, models, embedding)
    server = GrpcServer(
        service_names=[pb.DESCRIPTOR.services_by_name["InferenceService"].full_name],
        service_token=service_token,
        grace_period_s=0,
    )
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server.server)
    port = await server.start(address)
    await server.set_serving(True)
    return FakeServer(servicer, server, f"127.0.0.1:{port}")
