"""The openai-upstream backend against a local OpenAI-compatible server, over real gRPC."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo.inference.v1 import inference_pb2_grpc
from lalo_common.errors import error_param
from lalo_inference_large.server import InferenceLargeServer, build_server
from lalo_inference_large.settings import InferenceLargeSettings
from lalo_testing.asgi import serve_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

pytestmark = pytest.mark.integration

API_KEY = "sk-upstream-test"


class FakeOpenAI:
    """Just enough of the OpenAI API to check what the backend sends and how it reads."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.disconnected = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.models),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/tokenize", self.tokenize, methods=["POST"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "up-model"}, {"id": "up-other"}]})

    async def tokenize(self, request: Request) -> Response:
        return JSONResponse({"tokens": [5, 6, 7], "count": 3, "max_model_len": 4096})

    def _sse(self, events: list[dict[str, Any]], *, slow: bool = False) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            try:
                for event in events:
                    yield f"data: {json.dumps(event)}\n\n"
                    if slow:
                        await asyncio.sleep(0.02)
                yield "data: [DONE]\n\n"
            except asyncio.CancelledError:
                self.disconnected.set()
                raise

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.bodies.append(body)
        self.auth.append(request.headers.get("authorization", ""))
        prompt = body["messages"][-1]["content"]
        if "too long" in prompt:
            error = {"message": "This model's maximum context length is 8 tokens", "type": "x"}
            return JSONResponse({"error": error}, status_code=400)
        if "explode" in prompt:
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if "use the tool" in prompt:
            return self._sse(self._tool_call_stream())
        pieces = ["Hel", "lo", " there"]
        if "forever" in prompt:
            pieces = ["x"] * 5000
        events: list[dict[str, Any]] = []
        for piece in pieces:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {"content": piece},
                "finish_reason": None,
            }
            if body.get("logprobs"):
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": piece,
                            "logprob": -0.5,
                            "bytes": list(piece.encode()),
                            "top_logprobs": [
                                {"token": piece, "logprob": -0.5, "bytes": list(piece.encode())},
                                {"token": "?", "logprob": -1.5, "bytes": [63]},
                            ][: body.get("top_logprobs", 0)],
                        }
                    ]
                }
            events.append({"choices": [choice]})
        if "midway" in prompt:
            events = [*events[:1], {"error": {"message": "upstream worker died"}}]
        else:
            events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            events.append({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}})
        return self._sse(events, slow="forever" in prompt)

    @staticmethod
    def _tool_call_stream() -> list[dict[str, Any]]:
        """Two calls as OpenAI streams them: id and name first, arguments in pieces."""

        def delta(**fields: Any) -> dict[str, Any]:
            return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}

        def call(index: int, **fields: Any) -> dict[str, Any]:
            return delta(tool_calls=[{"index": index, **fields}])

        return [
            delta(role="assistant", content=None),
            call(0, id="call_up0", type="function", function={"name": "add", "arguments": ""}),
            call(0, function={"arguments": '{"a": '}),
            call(1, id="call_up1", type="function", function={"name": "add", "arguments": "{"}),
            call(0, function={"arguments": "2}"}),
            call(1, function={"arguments": '"a": 3}'}),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 12}},
        ]

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.bodies.append(body)
        events = [
            {"choices": [{"index": 0, "text": "and then", "finish_reason": None}]},
            {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
            {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 2}},
        ]
        return self._sse(events)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
async def fake_openai() -> AsyncIterator[tuple[FakeOpenAI, int]]:
    fake = FakeOpenAI()
    async with serve_app(fake.app) as port:
        yield fake, port


@pytest.fixture(scope="module")
async def upstream_server(
    fake_openai: tuple[FakeOpenAI, int], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[InferenceLargeServer, int]]:
    key_file = tmp_path_factory.mktemp("secrets") / "upstream-key"
    key_file.write_text(API_KEY + "\n")
    settings = InferenceLargeSettings(
        backend="openai-upstream",
        upstream_base_url=f"http://127.0.0.1:{fake_openai[1]}/v1",
        upstream_api_key_file=str(key_file),
        listen_address="127.0.0.1:0",
    )
    server = build_server(settings)
    port = await server.start()
    await server.load()
    yield server, port
    await server.stop()


@pytest.fixture
async def stub(
    upstream_server: tuple[InferenceLargeServer, int],
) -> AsyncIterator[inference_pb2_grpc.InferenceServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{upstream_server[1]}") as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def chat(text: str, model: str = "up-model", **sampling: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        model=model,
        chat=pb.ChatInput(messages=[pb.ChatMessage(role="user", content=text)]),
        sampling=pb.SamplingParams(**sampling),
    )


async def events_of(
    stub: inference_pb2_grpc.InferenceServiceStub, request: pb.GenerateRequest
) -> list[pb.GenerateResponse]:
    return [event async for event in stub.Generate(request)]


async def test_streams_chat_with_the_credential_from_the_secret_file(
    stub: inference_pb2_grpc.InferenceServiceStub, fake_openai: tuple[FakeOpenAI, int]
) -> None:
    events = await events_of(stub, chat("hi", max_tokens=5, temperature=0.0, seed=4))
    texts = [e.chunk.text for e in events if e.WhichOneof("event") == "chunk"]
    # The first chunk goes alone; the fast ones after it may travel together (stream hold).
    assert texts[0] == "Hel"
    assert "".join(texts) == "Hello there"
    complete = events[-1].complete
    assert complete.finish_reason == pb.FINISH_REASON_STOP
    assert (complete.usage.prompt_tokens, complete.usage.completion_tokens) == (11, 3)
    assert complete.model == "up-model"
    fake = fake_openai[0]
    assert fake.auth[-1] == f"Bearer {API_KEY}"
    assert fake.bodies[-1]["max_tokens"] == 5
    assert fake.bodies[-1]["seed"] == 4
    assert fake.bodies[-1]["stream"] is True


async def test_logprobs_are_carried(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    events = await events_of(stub, chat("hi", logprobs=True, top_logprobs=2))
    tokens = [t for e in events if e.WhichOneof("event") == "chunk" for t in e.chunk.tokens]
    assert [t.token for t in tokens] == ["Hel", "lo", " there"]
    assert tokens[0].logprob == -0.5
    assert tokens[0].token_bytes == b"Hel"
    assert [a.token for a in tokens[0].top_logprobs] == ["Hel", "?"]


async def test_plain_prompt_uses_completions(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    request = pb.GenerateRequest(prompt="once", sampling=pb.SamplingParams(max_tokens=2))
    events = await events_of(stub, request)
    assert events[0].chunk.text == "and then"
    assert events[-1].complete.finish_reason == pb.FINISH_REASON_LENGTH


async def test_echo_is_refused_by_name(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    request = pb.GenerateRequest(prompt="once", sampling=pb.SamplingParams(echo=True))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await events_of(stub, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_param(caught.value) == "echo"


async def test_token_id_prompts_are_refused_by_name(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    request = pb.GenerateRequest(prompt_token_ids=pb.TokenIds(ids=[1, 2, 3]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await events_of(stub, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_param(caught.value) == "prompt"
    assert "token-id prompts are not supported" in (caught.value.details() or "")


async def test_upstream_refusal_is_a_status_before_any_event(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await events_of(stub, chat("this is too long"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "maximum context length is 8" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await events_of(stub, chat("explode"))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_unknown_model_is_not_found(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await events_of(stub, chat("hi", model="gpt-nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "gpt-nope" in (caught.value.details() or "")


async def test_error_after_the_first_event_arrives_in_band(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    events = await events_of(stub, chat("fail midway"))
    assert events[0].chunk.text == "Hel"
    assert events[-1].WhichOneof("event") == "error"
    assert events[-1].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "worker died" in events[-1].error.message


async def test_cancel_closes_the_upstream_request(
    stub: inference_pb2_grpc.InferenceServiceStub, fake_openai: tuple[FakeOpenAI, int]
) -> None:
    fake = fake_openai[0]
    fake.disconnected.clear()
    call = stub.Generate(chat("go forever"))
    async for event in call:
        if event.WhichOneof("event") == "chunk":
            break
    load = await stub.GetLoad(pb.GetLoadRequest())
    assert load.running == 1
    call.cancel()
    await asyncio.wait_for(fake.disconnected.wait(), timeout=10)


async def test_models_and_tokens_come_from_the_upstream(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    models = (await stub.ListModels(pb.ListModelsRequest())).models
    assert [m.id for m in models] == ["up-model", "up-other"]
    assert all(m.backend == "openai-upstream" for m in models)
    counted = await stub.Tokenize(pb.TokenizeRequest(model="up-model", prompt="abc"))
    assert list(counted.token_ids) == [5, 6, 7]
    assert counted.context_length == 4096


async def test_unreachable_upstream_is_unavailable(tmp_path: Path) -> None:
    settings = InferenceLargeSettings(
        backend="openai-upstream",
        upstream_base_url=f"http://127.0.0.1:{_free_port()}/v1",
        upstream_models=["m"],
        listen_address="127.0.0.1:0",
    )
    server = build_server(settings)
    port = await server.start()
    await server.load()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await events_of(stub, chat("hi", model="m"))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop()


async def test_an_upstreams_streamed_tool_calls_arrive_whole(
    stub: inference_pb2_grpc.InferenceServiceStub, fake_openai: tuple[FakeOpenAI, int]
) -> None:
    request = chat("please use the tool", max_tokens=50)
    request.chat.tools.add(name="add", parameters_json='{"type": "object"}')
    request.chat.messages.add(
        role="assistant",
        tool_calls=[pb.ToolCall(id="call_old", name="add", arguments_json='{"a": 1}')],
    )
    request.chat.messages.add(role="tool", content="1", tool_call_id="call_old")
    request.chat.messages.add(role="user", content="again, use the tool")
    events = await events_of(stub, request)
    calls = [c for e in events if e.WhichOneof("event") == "chunk" for c in e.chunk.tool_calls]
    assert [(c.id, c.name, c.arguments_json) for c in calls] == [
        ("call_up0", "add", '{"a": 2}'),
        ("call_up1", "add", '{"a": 3}'),
    ]
    assert events[-1].complete.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    sent = fake_openai[0].bodies[-1]
    assert sent["tools"][0]["function"]["name"] == "add"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_old"
