"""The OpenAI routes end to end inside the process: the real app from create_app, a fake
router on app.state (no network), FastAPI's TestClient. The security runtime runs on a
throw-away SQLite file with one static key."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
from fastapi.testclient import TestClient
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_gateway.app import create_app
from lalo_gateway.db.repositories import AuditQuery
from lalo_gateway.errors import from_grpc
from lalo_gateway.security.audit import AuditRecord
from lalo_gateway.settings import GatewaySettings
from lalo_testing.openai_wire import assert_openai_error, parse_sse

API_KEY = "sk-unit-openai-routes-0123456789"
MODEL = "tiny-chat"

Event = rpb.ChatResponse | Exception


def route() -> rpb.ChatResponse:
    return rpb.ChatResponse(
        route=rpb.RouteDecision(pool="small", model=MODEL, reason="named", category="chat")
    )


def chunk(text: str, *token_texts: str) -> rpb.ChatResponse:
    tokens = [
        ipb.TokenInfo(
            token_id=i,
            token=t,
            logprob=-0.5 - i,
            token_bytes=t.encode(),
            top_logprobs=[ipb.TopLogprob(token_id=99, token="alt", logprob=-0.1)],
        )
        for i, t in enumerate(token_texts)
    ]
    return rpb.ChatResponse(chunk=ipb.GenerateChunk(text=text, tokens=tokens))


def complete(
    reason: int = ipb.FINISH_REASON_STOP, prompt: int = 7, completion: int = 2
) -> rpb.ChatResponse:
    return rpb.ChatResponse(
        complete=ipb.GenerateComplete(
            finish_reason=reason,
            usage=ipb.Usage(prompt_tokens=prompt, completion_tokens=completion),
            model=MODEL,
        )
    )


def error_event(code: grpc.StatusCode, message: str) -> rpb.ChatResponse:
    return rpb.ChatResponse(error=ipb.GenerateError(code=code.value[0], message=message))


def status_error(code: grpc.StatusCode, message: str, param: str | None = None) -> Exception:
    """What RouterClient raises for a failed gRPC call (``param``: the field the service that
    failed named, as its trailing metadata carries it)."""
    return from_grpc(code, message, param)


HELLO = [route(), chunk("Hel", "Hel"), chunk("lo", "lo"), complete()]
EMBED_MODEL = "tiny-embed"
EMBED_POOL = "embed"


def unit_vector(position: int) -> list[float]:
    """The fake router's embedding of the input at ``position``: a unit vector whose angle
    is the position, so each input's vector is told apart from the others."""
    return [math.cos(position), math.sin(position), 0.0]


def embedded(request: rpb.EmbedRequest) -> rpb.EmbedResponse:
    """What the router answers: one vector per input, a token per character."""
    return rpb.EmbedResponse(
        result=ipb.EmbedResponse(
            model=request.model,
            embeddings=[ipb.Embedding(values=unit_vector(i)) for i in range(len(request.inputs))],
            prompt_tokens=sum(len(text) for text in request.inputs),
        ),
        pool=EMBED_POOL,
        replica="embed-0",
    )


@dataclass
class FakeRouter:
    """Stands in for RouterClient: replays a script of events (an exception in the script
    is raised at that point, as a gRPC failure would be) and records every request."""

    script: list[Event] = field(default_factory=lambda: list(HELLO))
    models: list[ipb.ModelInfo] = field(
        default_factory=lambda: [ipb.ModelInfo(id=MODEL, owned_by="lalo")]
    )
    requests: list[rpb.ChatRequest] = field(default_factory=list)
    closed: int = 0
    # Embed: an exception here is raised instead of answering.
    embed_failure: Exception | None = None
    embed_requests: list[rpb.EmbedRequest] = field(default_factory=list)

    async def chat(self, request: rpb.ChatRequest) -> AsyncIterator[rpb.ChatResponse]:
        self.requests.append(request)
        try:
            for event in self.script:
                if isinstance(event, Exception):
                    raise event
                yield event
        finally:
            self.closed += 1

    async def embed(self, request: rpb.EmbedRequest) -> rpb.EmbedResponse:
        self.embed_requests.append(request)
        if self.embed_failure is not None:
            raise self.embed_failure
        return embedded(request)

    async def list_models(self, timeout_s: float = 5.0) -> list[ipb.ModelInfo]:
        return list(self.models)

    async def ready(self, timeout_s: float) -> tuple[bool, str]:
        return True, "fake"

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp: Path = tmp_path_factory.mktemp("gateway-openai")
    env = {
        "LALO_API_KEYS": API_KEY,
        "LALO_GATEWAY_DATABASE_URL": f"sqlite:///{tmp / 'gateway.db'}",
        "LALO_GATEWAY_AUDIT_SPOOL_PATH": str(tmp / "audit-spool.jsonl"),
        "LALO_GATEWAY_REDIS_URL": "",
        "LALO_GATEWAY_ROUTER_TARGET": "127.0.0.1:9",  # never dialled: replaced below
        "LALO_ENVIRONMENT": "development",
        "LALO_GATEWAY_GRPC_PORT": "0",  # no fixed port: a running `make up` must not fail this
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        app = create_app(GatewaySettings())
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client


@pytest.fixture
def router(app_client: TestClient) -> FakeRouter:
    fake = FakeRouter()
    state = app_client.app.state  # type: ignore[attr-defined]
    state.router = fake
    state.serving_chat.router = fake
    state.serving_completions.router = fake
    state.serving_embeddings.router = fake
    return fake


@pytest.fixture
def post(app_client: TestClient, router: FakeRouter) -> Callable[..., Any]:
    def _post(path: str, body: dict[str, Any], **headers: str) -> Any:
        return app_client.post(
            path, json=body, headers={"Authorization": f"Bearer {API_KEY}", **headers}
        )

    return _post


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **extra}


def sse_events(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text.split("\n"))


# --- chat, not streamed -----------------------------------------------------------------


def test_chat_completion(post: Callable[..., Any], router: FakeRouter) -> None:
    response = post("/v1/chat/completions", chat_body(max_tokens=5), **{"x-request-id": "rid-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert response.headers["x-request-id"] == "rid-1"
    assert response.headers["x-lalo-model"] == MODEL
    assert response.headers["x-lalo-route"] == "small"
    assert response.headers["x-lalo-category"] == "chat"
    assert response.headers["x-lalo-escalated"] == "false"
    # What went to the router: the request id, the model, the messages and the sampling.
    (sent,) = router.requests
    assert sent.request_id == "rid-1"
    assert sent.model == MODEL
    assert not sent.stream
    assert [(m.role, m.content) for m in sent.chat.messages] == [("user", "Hi")]
    assert sent.sampling.max_tokens == 5
    assert sent.principal


def test_chat_length_and_logprobs(post: Callable[..., Any], router: FakeRouter) -> None:
    router.script = [route(), chunk("ab", "a", "b"), complete(ipb.FINISH_REASON_LENGTH)]
    body = post("/v1/chat/completions", chat_body(logprobs=True, top_logprobs=1)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert [entry["token"] for entry in choice["logprobs"]["content"]] == ["a", "b"]
    assert choice["logprobs"]["content"][0]["top_logprobs"][0]["token"] == "alt"
    (sent,) = router.requests
    assert sent.sampling.logprobs
    assert sent.sampling.top_logprobs == 1


def test_max_completion_tokens_wins(post: Callable[..., Any], router: FakeRouter) -> None:
    post("/v1/chat/completions", chat_body(max_tokens=50, max_completion_tokens=9))
    assert router.requests[0].sampling.max_tokens == 9


def test_unknown_fields_are_tolerated(post: Callable[..., Any], router: FakeRouter) -> None:
    response = post("/v1/chat/completions", chat_body(some_future_option={"x": 1}))
    assert response.status_code == 200


def test_explicit_nulls_mean_defaults(post: Callable[..., Any], router: FakeRouter) -> None:
    # Clients built on other SDKs send every optional field, null when unset.
    nulls = dict.fromkeys(
        [
            "max_tokens",
            "temperature",
            "top_p",
            "n",
            "stream",
            "stream_options",
            "stop",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
            "seed",
            "user",
            "logprobs",
            "top_logprobs",
            "response_format",
            "tools",
            "tool_choice",
        ]
    )
    response = post("/v1/chat/completions", chat_body(**nulls))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello"
    completion = post("/v1/completions", {"model": MODEL, "prompt": "p", "logprobs": None})
    assert completion.status_code == 200, completion.text


def test_router_error_before_output(post: Callable[..., Any], router: FakeRouter) -> None:
    router.script = [status_error(grpc.StatusCode.NOT_FOUND, "The model 'x' does not exist")]
    response = post("/v1/chat/completions", chat_body())
    assert_openai_error(response, 404, code="model_not_found", param="model")


def test_error_event_mid_collection(post: Callable[..., Any], router: FakeRouter) -> None:
    router.script = [
        route(),
        chunk("a", "a"),
        error_event(grpc.StatusCode.RESOURCE_EXHAUSTED, "no free slot"),
    ]
    response = post("/v1/chat/completions", chat_body())
    assert_openai_error(response, 429, type_="rate_limit_error")


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_workflow_names_its_route_and_workflow(
    post: Callable[..., Any], router: FakeRouter, stream: bool
) -> None:
    """The route is known before the workflow fails: its headers come with the error, so
    the caller can look the workflow up (GET /v1/workflows/{id})."""
    router.script = [
        rpb.ChatResponse(
            route=rpb.RouteDecision(
                pool="workflow", model="workflow", category="agentic", workflow_id="wf-9"
            )
        ),
        rpb.ChatResponse(progress=rpb.WorkflowProgress(workflow_id="wf-9", text="planned")),
        error_event(grpc.StatusCode.ABORTED, "workflow wf-9 ended failed: step 1 failed"),
    ]
    response = post("/v1/chat/completions", chat_body(stream=stream))
    if stream:
        # The progress event opened the stream: the failure arrives in-band.
        assert response.status_code == 200
        assert response.headers["x-lalo-workflow-id"] == "wf-9"
        return
    assert_openai_error(response, 422, code="workflow_failed")
    assert response.headers["x-lalo-route"] == "workflow"
    assert response.headers["x-lalo-category"] == "agentic"
    assert response.headers["x-lalo-workflow-id"] == "wf-9"
    assert "x-request-id" in response.headers


WORKFLOW_THEN_DIRECT = [
    rpb.ChatResponse(
        route=rpb.RouteDecision(
            pool="workflow", model="workflow", category="agentic", workflow_id="wf-9"
        )
    ),
    rpb.ChatResponse(progress=rpb.WorkflowProgress(workflow_id="wf-9", text="planned")),
    rpb.ChatResponse(
        progress=rpb.WorkflowProgress(
            workflow_id="wf-9",
            type="workflow.fallback",
            text="the workflow did not answer (step 1 failed); answering directly",
        )
    ),
    rpb.ChatResponse(
        route=rpb.RouteDecision(pool="small", model=MODEL, category="agentic", workflow_id="wf-9")
    ),
    chunk("Hel", "Hel"),
    chunk("lo", "lo"),
    complete(),
]


def test_a_direct_answer_after_a_workflow_names_both(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = list(WORKFLOW_THEN_DIRECT)
    response = post("/v1/chat/completions", chat_body())
    assert response.status_code == 200
    assert response.json()["model"] == MODEL
    assert response.json()["choices"][0]["message"]["content"] == "Hello"
    assert response.headers["x-lalo-route"] == "small"
    assert response.headers["x-lalo-model"] == MODEL
    assert response.headers["x-lalo-workflow-id"] == "wf-9"


def test_a_streamed_direct_answer_after_a_workflow(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = list(WORKFLOW_THEN_DIRECT)
    response = post("/v1/chat/completions", chat_body(stream=True))
    assert response.headers["x-lalo-route"] == "workflow"  # sent before the workflow failed
    events = sse_events(response)
    deltas = [e["choices"][0]["delta"] for e in events if e.get("choices")]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    assert "answering directly" in reasoning
    assert "".join(d.get("content") or "" for d in deltas) == "Hello"
    # The answer's chunks name the model that wrote them.
    assert [
        e["model"] for e in events if e.get("choices") and e["choices"][0]["delta"].get("content")
    ] == [MODEL, MODEL]


def test_the_keys_allowlist_travels_to_the_router(
    app_client: TestClient, router: FakeRouter
) -> None:
    """The router routes "auto" only to models the key may use: the gateway tells it which
    (the key's list, sorted; nothing for a key without one)."""
    keys = app_client.app.state.security.keys  # type: ignore[attr-defined]
    limited = keys.create(owner="team-small", allowed_models=[MODEL, "auto"]).secret
    for path, body in (
        ("/v1/chat/completions", chat_body()),
        ("/v1/completions", {"model": "auto", "prompt": "hi"}),
    ):
        body["model"] = "auto"
        response = app_client.post(path, json=body, headers={"Authorization": f"Bearer {limited}"})
        assert response.status_code == 200, response.text
        assert list(router.requests[-1].allowed_models) == sorted([MODEL, "auto"])
    response = app_client.post(
        "/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 200
    assert list(router.requests[-1].allowed_models) == []


def test_router_that_sends_nothing(post: Callable[..., Any], router: FakeRouter) -> None:
    router.script = []
    assert_openai_error(post("/v1/chat/completions", chat_body()), 502, type_="server_error")


def test_internal_details_are_not_leaked(post: Callable[..., Any], router: FakeRouter) -> None:
    router.script = [status_error(grpc.StatusCode.INTERNAL, "segfault at 0xdeadbeef")]
    error = assert_openai_error(post("/v1/chat/completions", chat_body()), 500)
    assert "deadbeef" not in error["message"]


# --- chat, streamed -----------------------------------------------------------------------


def test_chat_stream(post: Callable[..., Any], router: FakeRouter) -> None:
    response = post("/v1/chat/completions", chat_body(stream=True), **{"x-request-id": "rid-s"})
    events = sse_events(response)
    assert response.headers["x-request-id"] == "rid-s"
    assert response.headers["x-lalo-model"] == MODEL
    assert response.headers["cache-control"] == "no-cache"
    assert router.requests[0].stream
    first, *middle, last = events
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [e["choices"][0]["delta"]["content"] for e in middle] == ["Hel", "lo"]
    assert all(e["choices"][0]["finish_reason"] is None for e in [first, *middle])
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert {e["id"] for e in events} == {first["id"]}
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert all(e["model"] == MODEL for e in events)
    assert all("usage" not in e for e in events)


def test_chat_stream_include_usage(post: Callable[..., Any], router: FakeRouter) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    *events, usage = sse_events(post("/v1/chat/completions", body))
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert all(e["usage"] is None for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_stream_logprobs(post: Callable[..., Any], router: FakeRouter) -> None:
    # A chunk that holds text back (part of a character) still carries its token.
    router.script = [route(), chunk("", "\ufffd"), chunk("x", "x"), complete()]
    events = sse_events(post("/v1/chat/completions", chat_body(stream=True, logprobs=True)))
    tokens = [
        entry["token"]
        for e in events
        if e["choices"][0]["logprobs"]
        for entry in e["choices"][0]["logprobs"]["content"]
    ]
    assert tokens == ["\ufffd", "x"]


def test_stream_routes_a_router_error_as_plain_http(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = [status_error(grpc.StatusCode.NOT_FOUND, "The model 'nope' does not exist")]
    response = post("/v1/chat/completions", chat_body(stream=True))
    assert not response.headers["content-type"].startswith("text/event-stream")
    assert_openai_error(response, 404, code="model_not_found", param="model")


def test_stream_error_event_before_output_is_plain_http(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    # The router announces the route with the model's first event; when that event is an
    # error, no output has been sent, so the client still gets a real status.
    router.script = [
        route(),
        error_event(
            grpc.StatusCode.INVALID_ARGUMENT,
            "This model's maximum context length is 1024 tokens, but the prompt has 3000",
        ),
    ]
    response = post("/v1/chat/completions", chat_body(stream=True))
    assert_openai_error(response, 400, code="context_length_exceeded", param="messages")


def test_stream_error_after_output_is_in_band(post: Callable[..., Any], router: FakeRouter) -> None:
    router.script = [
        route(),
        chunk("Hel", "Hel"),
        error_event(grpc.StatusCode.UNAVAILABLE, "replica went away"),
    ]
    events = sse_events(post("/v1/chat/completions", chat_body(stream=True)))
    *_, error = events
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["code"] == "backend_unavailable"
    assert "replica went away" in error["error"]["message"]


def test_stream_status_failure_after_output_is_in_band(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = [
        route(),
        chunk("Hel", "Hel"),
        status_error(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
    ]
    events = sse_events(post("/v1/chat/completions", chat_body(stream=True)))
    assert events[1]["choices"][0]["delta"]["content"] == "Hel"
    assert events[-1]["error"]["code"] == "timeout"


def test_stream_router_call_is_closed(post: Callable[..., Any], router: FakeRouter) -> None:
    sse_events(post("/v1/chat/completions", chat_body(stream=True)))
    assert router.closed == 1


# --- completions ------------------------------------------------------------------------


def test_completion(post: Callable[..., Any], router: FakeRouter) -> None:
    body = post("/v1/completions", {"model": MODEL, "prompt": "Say", "logprobs": 1}).json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == "Hello"
    logprobs = body["choices"][0]["logprobs"]
    assert logprobs["tokens"] == ["Hel", "lo"]
    assert logprobs["text_offset"] == [0, 3]
    assert logprobs["top_logprobs"] == [{"alt": pytest.approx(-0.1)}] * 2
    (sent,) = router.requests
    assert sent.prompt == "Say"
    assert sent.sampling.max_tokens == 16  # OpenAI's default for completions
    assert sent.sampling.top_logprobs == 1


def test_completion_stream(post: Callable[..., Any], router: FakeRouter) -> None:
    body = {
        "model": MODEL,
        "prompt": "Say",
        "stream": True,
        "logprobs": 0,
        "stream_options": {"include_usage": True},
    }
    *events, usage = sse_events(post("/v1/completions", body))
    assert [e["choices"][0]["text"] for e in events] == ["Hel", "lo", ""]
    assert [e["choices"][0]["logprobs"]["text_offset"] for e in events[:2]] == [[0], [3]]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == []
    assert usage["usage"]["total_tokens"] == 9


def test_completion_context_overflow_names_the_prompt(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = [
        status_error(grpc.StatusCode.INVALID_ARGUMENT, "maximum context length is 1024 tokens")
    ]
    response = post("/v1/completions", {"model": MODEL, "prompt": "x"})
    assert_openai_error(response, 400, code="context_length_exceeded", param="prompt")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"best_of": 2}, "best_of"),
        ({"suffix": "end"}, "suffix"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"prompt": [[1, 2], []]}, "prompt[1]"),
        ({"prompt": [[1, 2], [2**40]]}, "prompt[1]"),
        ({"prompt": [5, -1]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ["a", 1]}, "prompt[1]"),
        ({"prompt": ["x"] * 129}, "prompt"),
        ({"prompt": ["x"] * 65, "n": 2}, "prompt"),
    ],
)
def test_completion_unsupported(
    post: Callable[..., Any], router: FakeRouter, extra: dict[str, Any], param: str
) -> None:
    body = {"model": MODEL, "prompt": "Say", **extra}
    assert_openai_error(post("/v1/completions", body), 400, param=param)
    assert router.requests == []


# --- validation and routing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "messages"),
        (chat_body(messages=[]), "messages"),
        (chat_body(temperature=3), "temperature"),
        (chat_body(n=129), "n"),
        (chat_body(top_logprobs=3), "top_logprobs"),
        (chat_body(stop=["1", "2", "3", "4", "5"]), "stop"),
        (chat_body(messages=[{"role": "bot", "content": "x"}]), "messages[0].role"),
        (chat_body(messages=[{"role": "user", "content": 1}]), "messages[0].content"),
        (
            chat_body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
            "messages[0].content[0].type",
        ),
        (chat_body(stream_options={"include_usage": True}), "stream_options"),
    ],
)
def test_invalid_chat_bodies(
    post: Callable[..., Any], router: FakeRouter, body: dict[str, Any], param: str
) -> None:
    error = assert_openai_error(post("/v1/chat/completions", body), 400, param=param)
    assert not error["message"].startswith("Value error")
    assert router.requests == []


def test_malformed_json(app_client: TestClient, router: FakeRouter) -> None:
    response = app_client.post(
        "/v1/chat/completions",
        content=b'{"model": ',
        headers={"Authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
    )
    assert_openai_error(response, 400, param=None)


def test_body_must_be_an_object(app_client: TestClient, router: FakeRouter) -> None:
    response = app_client.post(
        "/v1/chat/completions",
        content=json.dumps([1]).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
    )
    error = assert_openai_error(response, 400, param=None)
    assert "JSON object" in error["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_empty_body_says_so(app_client: TestClient, router: FakeRouter, path: str) -> None:
    response = app_client.post(path, headers={"Authorization": f"Bearer {API_KEY}"})
    error = assert_openai_error(response, 400, param=None)
    assert "body is empty" in error["message"]
    assert "None" not in error["message"]
    assert router.requests == []


def test_missing_key(app_client: TestClient, router: FakeRouter) -> None:
    response = app_client.post("/v1/chat/completions", json=chat_body())
    assert_openai_error(response, 401, code="invalid_api_key")
    assert router.requests == []


def test_unknown_url_and_method(app_client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert_openai_error(app_client.get("/v1/nothing", headers=auth), 404)
    assert_openai_error(app_client.get("/v1/chat/completions", headers=auth), 405)


# --- models -------------------------------------------------------------------------------


def test_models(app_client: TestClient, router: FakeRouter) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    listing = app_client.get("/v1/models", headers=auth).json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["auto", MODEL]
    assert app_client.get(f"/v1/models/{MODEL}", headers=auth).json()["id"] == MODEL
    assert_openai_error(
        app_client.get("/v1/models/nope", headers=auth), 404, code="model_not_found", param="model"
    )


def test_models_when_the_router_is_down(app_client: TestClient, router: FakeRouter) -> None:
    async def down(timeout_s: float = 5.0) -> list[ipb.ModelInfo]:
        raise from_grpc(grpc.StatusCode.UNAVAILABLE, "connection refused")

    router.list_models = down  # type: ignore[method-assign]
    response = app_client.get("/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
    assert_openai_error(response, 503, code="backend_unavailable")


# --- embeddings ---------------------------------------------------------------------------


def embed_body(**extra: Any) -> dict[str, Any]:
    return {"model": EMBED_MODEL, "input": ["first text", "second", "the third"], **extra}


def as_float32(values: list[float]) -> list[float]:
    """``values`` as the float32 numbers a vector carries."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def key_header(app_client: TestClient, **key: Any) -> dict[str, str]:
    """A new API key with the given settings (allowlist, quotas, store_content)."""
    keys = app_client.app.state.security.keys  # type: ignore[attr-defined]
    secret = keys.create(owner=f"embeddings-{time.monotonic_ns()}", **key).secret
    return {"Authorization": f"Bearer {secret}"}


def audit_record(app_client: TestClient, request_id: str) -> AuditRecord:
    """The audit record of one request, once the buffer has written it."""
    store = app_client.app.state.security.audit_store  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        records = store.query(AuditQuery(request_id=request_id)).records
        if records:
            (record,) = records
            return record  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no audit record for {request_id}")


def test_embeddings_as_floats(post: Callable[..., Any], router: FakeRouter) -> None:
    response = post("/v1/embeddings", embed_body(), **{"x-request-id": "rid-e"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list"
    assert body["model"] == EMBED_MODEL
    # One entry per input, in the inputs' order, each the router's vector for it.
    assert body["data"] == [
        {"object": "embedding", "index": i, "embedding": as_float32(unit_vector(i))}
        for i in range(3)
    ]
    tokens = len("first text") + len("second") + len("the third")
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert response.headers["x-request-id"] == "rid-e"
    assert response.headers["x-lalo-model"] == EMBED_MODEL
    assert response.headers["x-lalo-route"] == EMBED_POOL
    (sent,) = router.embed_requests
    assert sent.request_id == "rid-e"
    assert sent.model == EMBED_MODEL
    assert list(sent.inputs) == ["first text", "second", "the third"]
    assert sent.principal
    assert sent.tenant == sent.principal
    assert router.requests == []  # embeddings never go through Chat


def test_embeddings_of_one_string(post: Callable[..., Any], router: FakeRouter) -> None:
    body = post("/v1/embeddings", embed_body(input="just one")).json()
    assert [(d["index"], d["embedding"]) for d in body["data"]] == [(0, as_float32(unit_vector(0)))]
    assert body["usage"]["prompt_tokens"] == len("just one")
    assert list(router.embed_requests[0].inputs) == ["just one"]


def test_embeddings_as_base64(post: Callable[..., Any], router: FakeRouter) -> None:
    """What the openai SDK asks for when the caller names no format: base64 of the
    little-endian float32 values, the same numbers the float format gives."""
    floats = post("/v1/embeddings", embed_body()).json()
    encoded = post("/v1/embeddings", embed_body(encoding_format="base64")).json()
    assert [d["index"] for d in encoded["data"]] == [0, 1, 2]
    for entry, plain in zip(encoded["data"], floats["data"], strict=True):
        assert isinstance(entry["embedding"], str)
        raw = base64.b64decode(entry["embedding"])
        assert len(raw) == 3 * 4
        decoded = list(struct.unpack("<3f", raw))
        assert decoded == plain["embedding"] == as_float32(unit_vector(entry["index"]))
    assert encoded["usage"] == floats["usage"]


def test_the_openai_sdk_embeds_unchanged(app_client: TestClient, router: FakeRouter) -> None:
    """``client.embeddings.create`` asks for base64 unless told otherwise and decodes it."""
    client = openai.OpenAI(
        api_key=API_KEY, base_url=f"{app_client.base_url}/v1", http_client=app_client
    )
    reply = client.embeddings.create(model=EMBED_MODEL, input=["one", "two"])
    assert router.embed_requests[-1].inputs == ["one", "two"]
    assert reply.model == EMBED_MODEL
    assert [item.index for item in reply.data] == [0, 1]
    assert [item.embedding for item in reply.data] == [
        as_float32(unit_vector(0)),
        as_float32(unit_vector(1)),
    ]
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (6, 6)
    floats = client.embeddings.create(model=EMBED_MODEL, input="one", encoding_format="float")
    assert floats.data[0].embedding == as_float32(unit_vector(0))


def test_embeddings_explicit_nulls_and_user(post: Callable[..., Any], router: FakeRouter) -> None:
    body = embed_body(encoding_format=None, dimensions=None, user="someone")
    response = post("/v1/embeddings", body)
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["data"][0]["embedding"], list)


def test_embeddings_dimensions(post: Callable[..., Any], router: FakeRouter) -> None:
    assert post("/v1/embeddings", embed_body(dimensions=3)).status_code == 200
    assert router.embed_requests[-1].dimensions == 3
    # A replica that returned another length than asked for (here: ignored the request) is
    # caught at the gateway too.
    error = assert_openai_error(
        post("/v1/embeddings", embed_body(dimensions=2)), 400, param="dimensions"
    )
    assert "3-dimensional" in error["message"]
    assert router.embed_requests[-1].dimensions == 2
    post("/v1/embeddings", embed_body())
    assert not router.embed_requests[-1].HasField("dimensions")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": EMBED_MODEL}, "input"),
        (embed_body(input=""), "input"),
        (embed_body(input=[]), "input"),
        (embed_body(input=["a", ""]), "input"),
        (embed_body(input=5), "input"),
        (embed_body(encoding_format="int8"), "encoding_format"),
        (embed_body(dimensions=0), "dimensions"),
    ],
)
def test_invalid_embedding_bodies(
    post: Callable[..., Any], router: FakeRouter, body: dict[str, Any], param: str
) -> None:
    error = assert_openai_error(
        post("/v1/embeddings", body), 400, param=param, code="invalid_value"
    )
    assert not error["message"].startswith("Value error")
    assert router.embed_requests == []


@pytest.mark.parametrize("token_ids", [[1, 2, 3], [[1, 2], [3]]])
def test_token_id_input_is_refused(
    post: Callable[..., Any], router: FakeRouter, token_ids: list[Any]
) -> None:
    response = post("/v1/embeddings", embed_body(input=token_ids))
    error = assert_openai_error(response, 400, param="input", code="unsupported_parameter")
    assert "token ids are not supported as input" in error["message"].lower()
    assert "check_embedding_ctx_length=False" in error["message"]
    assert "text" in error["message"]
    assert router.embed_requests == []


def test_embedding_input_count_limit(
    app_client: TestClient, post: Callable[..., Any], router: FakeRouter
) -> None:
    limit = app_client.app.state.settings.max_embedding_inputs  # type: ignore[attr-defined]
    assert limit == 2048  # OpenAI's limit, the default
    at_limit = post("/v1/embeddings", embed_body(input=["x"] * limit))
    assert at_limit.status_code == 200, at_limit.text
    assert len(at_limit.json()["data"]) == limit
    over = post("/v1/embeddings", embed_body(input=["x"] * (limit + 1)))
    error = assert_openai_error(over, 400, param="input", code="limit_exceeded")
    assert str(limit) in error["message"]
    assert len(router.embed_requests) == 1


def test_embedding_body_size_limit(
    app_client: TestClient, post: Callable[..., Any], router: FakeRouter
) -> None:
    limit = app_client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    response = post("/v1/embeddings", embed_body(input="x" * limit))
    assert_openai_error(response, 413, code="request_too_large")
    assert router.embed_requests == []


def test_embeddings_follow_the_keys_allowlist_as_chat_does(
    app_client: TestClient, router: FakeRouter
) -> None:
    limited = key_header(app_client, allowed_models=[MODEL])
    refused = app_client.post("/v1/embeddings", json=embed_body(), headers=limited)
    chat = app_client.post("/v1/chat/completions", json=chat_body(model="other"), headers=limited)
    assert_openai_error(refused, 403, code="model_not_allowed")
    assert_openai_error(chat, 403, code="model_not_allowed")
    assert router.embed_requests == []
    allowed = key_header(app_client, allowed_models=[EMBED_MODEL])
    response = app_client.post("/v1/embeddings", json=embed_body(), headers=allowed)
    assert response.status_code == 200, response.text


def test_embeddings_need_a_key_with_inference(app_client: TestClient, router: FakeRouter) -> None:
    assert_openai_error(
        app_client.post("/v1/embeddings", json=embed_body()), 401, code="invalid_api_key"
    )
    viewer = key_header(app_client, role="viewer")
    response = app_client.post("/v1/embeddings", json=embed_body(), headers=viewer)
    assert_openai_error(response, 403, code="permission_denied")
    assert router.embed_requests == []


@pytest.mark.parametrize(
    ("code", "details", "sent_param", "status", "error_code", "param"),
    [
        (
            grpc.StatusCode.NOT_FOUND,
            "The model 'x' does not exist",
            None,
            404,
            "model_not_found",
            "model",
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "model 'tiny-chat' generates text; it has no embeddings",
            "model",
            400,
            None,
            "model",
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 1 is longer than the model's maximum context length (512 tokens)",
            "input",
            400,
            "context_length_exceeded",
            "input",
        ),
        (grpc.StatusCode.UNAVAILABLE, "no healthy replica", None, 503, "backend_unavailable", None),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", None, 429, "overloaded", None),
    ],
)
def test_embedding_router_errors(
    post: Callable[..., Any],
    router: FakeRouter,
    code: grpc.StatusCode,
    details: str,
    sent_param: str | None,
    status: int,
    error_code: str | None,
    param: str | None,
) -> None:
    router.embed_failure = status_error(code, details, sent_param)
    error = assert_openai_error(
        post("/v1/embeddings", embed_body()), status, code=error_code, param=param
    )
    assert error["message"] == details


def test_embedding_internal_errors_are_not_leaked(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.embed_failure = status_error(grpc.StatusCode.INTERNAL, "segfault at 0xdeadbeef")
    error = assert_openai_error(post("/v1/embeddings", embed_body()), 500)
    assert "deadbeef" not in error["message"]


def test_embedding_tokens_are_charged_after_the_call(
    app_client: TestClient, router: FakeRouter
) -> None:
    """Tokens per minute are charged with the prompt tokens; a refused ``dimensions``
    costs nothing."""
    headers = key_header(app_client, tpm=1000)
    tokens = len("first text") + len("second") + len("the third")

    def remaining(**extra: Any) -> int:
        response = app_client.post("/v1/embeddings", json=embed_body(**extra), headers=headers)
        return int(response.headers["x-ratelimit-remaining-tokens"])

    assert remaining() == 1000  # what was left when this request was admitted
    assert remaining(dimensions=7) == 1000 - tokens
    assert remaining() == 1000 - tokens  # the 400 above charged nothing
    assert remaining() == 1000 - 2 * tokens


def test_embedding_requests_per_minute(app_client: TestClient, router: FakeRouter) -> None:
    headers = key_header(app_client, rpm=1)
    first = app_client.post("/v1/embeddings", json=embed_body(), headers=headers)
    assert first.status_code == 200
    second = app_client.post("/v1/embeddings", json=embed_body(), headers=headers)
    assert_openai_error(second, 429, code="rate_limit_exceeded")
    assert len(router.embed_requests) == 1


@pytest.mark.parametrize("store_content", [False, True])
def test_embeddings_are_audited(
    app_client: TestClient, router: FakeRouter, store_content: bool
) -> None:
    headers = key_header(app_client, store_content=store_content)
    request_id = f"rid-audit-{store_content}"
    body = embed_body(input=["PRIVATE-TEXT"])
    response = app_client.post(
        "/v1/embeddings", json=body, headers={**headers, "x-request-id": request_id}
    )
    assert response.status_code == 200
    record = audit_record(app_client, request_id)
    assert (record.method, record.route, record.status) == ("POST", "/v1/embeddings", 200)
    assert record.model == EMBED_MODEL
    assert (record.tokens_in, record.tokens_out) == (len("PRIVATE-TEXT"), 0)
    assert record.key_prefix
    assert headers["Authorization"].split()[1] not in json.dumps(record.to_json())
    if store_content:
        assert record.content is not None
        assert "PRIVATE-TEXT" in record.content["request"]
    else:
        assert record.content is None
        assert "PRIVATE-TEXT" not in json.dumps(record.to_json())


# --- several choices (n) ------------------------------------------------------------------


def of_choice(event: rpb.ChatResponse, index: int) -> rpb.ChatResponse:
    event.choice = index
    return event


# Two choices whose events interleave, as the router merges them; choice 1 ends first.
TWO_CHOICES = [
    route(),
    of_choice(chunk("Hel", "Hel"), 0),
    of_choice(chunk("Bye", "Bye"), 1),
    of_choice(complete(ipb.FINISH_REASON_LENGTH, completion=1), 1),
    of_choice(chunk("lo", "lo"), 0),
    of_choice(complete(completion=2), 0),
]


def test_chat_with_several_choices(
    app_client: TestClient, post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = list(TWO_CHOICES)
    response = post(
        "/v1/chat/completions", chat_body(n=2, logprobs=True), **{"x-request-id": "rid-n2"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in body["choices"]] == ["Hello", "Bye"]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]
    assert [len(c["logprobs"]["content"]) for c in body["choices"]] == [2, 1]
    # The prompt is counted once, every choice's completion.
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    (sent,) = router.requests
    assert sent.n == 2
    record = audit_record(app_client, "rid-n2")
    assert (record.tokens_in, record.tokens_out) == (7, 3)


def test_one_choice_by_default(post: Callable[..., Any], router: FakeRouter) -> None:
    post("/v1/chat/completions", chat_body())
    post("/v1/completions", {"model": MODEL, "prompt": "p", "n": 1})
    assert [request.n for request in router.requests] == [1, 1]


def test_chat_stream_with_several_choices(post: Callable[..., Any], router: FakeRouter) -> None:
    router.script = list(TWO_CHOICES)
    body = chat_body(n=2, stream=True, stream_options={"include_usage": True})
    *events, usage = sse_events(post("/v1/chat/completions", body))
    choices = [(e["choices"][0]["index"], e["choices"][0]) for e in events]
    # Every choice opens with the role, before any text.
    assert [(i, c["delta"]) for i, c in choices[:2]] == [
        (0, {"role": "assistant", "content": ""}),
        (1, {"role": "assistant", "content": ""}),
    ]
    text = {0: "", 1: ""}
    for index, choice in choices:
        text[index] += choice["delta"].get("content", "")
    assert text == {0: "Hello", 1: "Bye"}
    # Each choice's finish goes out when that choice ends: choice 1 before choice 0's "lo".
    finishes = [(i, c["finish_reason"]) for i, c in choices if c["finish_reason"]]
    assert finishes == [(1, "length"), (0, "stop")]
    assert choices[-1][0] == 0
    assert usage["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_completion_stream_offsets_are_per_choice(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = list(TWO_CHOICES)
    body = {"model": MODEL, "prompt": "Say", "n": 2, "stream": True, "logprobs": 0}
    events = sse_events(post("/v1/completions", body))
    offsets = [
        (e["choices"][0]["index"], e["choices"][0]["logprobs"]["text_offset"])
        for e in events
        if e["choices"][0]["logprobs"]
    ]
    assert offsets == [(0, [0]), (1, [0]), (0, [3])]
    finishes = [(e["choices"][0]["index"], e["choices"][0]["finish_reason"]) for e in events]
    assert [f for f in finishes if f[1]] == [(1, "length"), (0, "stop")]


def test_completion_with_several_choices(post: Callable[..., Any], router: FakeRouter) -> None:
    router.script = list(TWO_CHOICES)
    body = post("/v1/completions", {"model": MODEL, "prompt": "Say", "n": 2}).json()
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "Hello"), (1, "Bye")]
    assert body["usage"]["completion_tokens"] == 3


def test_an_error_in_one_choice_fails_the_response(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = [
        *TWO_CHOICES[:3],
        of_choice(error_event(grpc.StatusCode.UNAVAILABLE, "replica died"), 0),
    ]
    assert_openai_error(post("/v1/chat/completions", chat_body(n=2)), 503)
    events = sse_events(post("/v1/chat/completions", chat_body(n=2, stream=True)))
    assert "replica died" in events[-1]["error"]["message"]


# --- a list of prompts (text completions) ------------------------------------------------

# Two prompts, n=2: choices 0-1 answer the first (7 prompt tokens), 2-3 the second (4).
TWO_PROMPTS = [
    route(),
    of_choice(chunk("a0"), 0),
    of_choice(chunk("b0"), 2),
    of_choice(complete(prompt=4, completion=1), 2),
    of_choice(chunk("a1"), 1),
    of_choice(chunk("b1"), 3),
    of_choice(complete(completion=2), 0),
    of_choice(complete(ipb.FINISH_REASON_LENGTH, completion=3), 1),
    of_choice(complete(prompt=4, completion=4), 3),
]


def test_a_list_of_prompts_is_answered_in_one_response(
    app_client: TestClient, post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = list(TWO_PROMPTS)
    body = {"model": MODEL, "prompt": ["first", "second"], "n": 2, "seed": 3}
    response = post("/v1/completions", body, **{"x-request-id": "rid-prompts"})
    assert response.status_code == 200, response.text
    payload = response.json()
    # As OpenAI orders them: prompt p's choices are p * n .. p * n + n - 1.
    assert [(c["index"], c["text"]) for c in payload["choices"]] == [
        (0, "a0"),
        (1, "a1"),
        (2, "b0"),
        (3, "b1"),
    ]
    assert [c["finish_reason"] for c in payload["choices"]] == ["stop", "length", "stop", "stop"]
    # Each prompt counted once (7 + 4), every completion (2 + 3 + 1 + 4).
    assert payload["usage"] == {"prompt_tokens": 11, "completion_tokens": 10, "total_tokens": 21}
    (sent,) = router.requests
    assert (sent.WhichOneof("input"), list(sent.prompts.prompts)) == (
        "prompts",
        ["first", "second"],
    )
    assert (sent.n, sent.sampling.seed) == (2, 3)
    record = audit_record(app_client, "rid-prompts")
    assert (record.tokens_in, record.tokens_out) == (11, 10)


def test_a_list_of_prompts_streams_every_choice(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = list(TWO_PROMPTS)
    body = {
        "model": MODEL,
        "prompt": ["first", "second"],
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    *events, usage = sse_events(post("/v1/completions", body))
    text: dict[int, str] = {}
    for event in events:
        (choice,) = event["choices"]
        text[choice["index"]] = text.get(choice["index"], "") + choice["text"]
    assert text == {0: "a0", 1: "a1", 2: "b0", 3: "b1"}
    finished = [e["choices"][0]["index"] for e in events if e["choices"][0]["finish_reason"]]
    assert finished == [2, 0, 1, 3]
    assert usage["usage"] == {"prompt_tokens": 11, "completion_tokens": 10, "total_tokens": 21}


def test_a_list_of_one_prompt_is_a_prompt(post: Callable[..., Any], router: FakeRouter) -> None:
    body = post("/v1/completions", {"model": MODEL, "prompt": ["only"]}).json()
    assert [c["text"] for c in body["choices"]] == ["Hello"]
    (sent,) = router.requests
    assert (sent.WhichOneof("input"), sent.prompt) == ("prompt", "only")


def test_the_completion_count_limit_names_the_prompt(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    body = {"model": MODEL, "prompt": ["x"] * 65, "n": 2}
    error = assert_openai_error(post("/v1/completions", body), 400, param="prompt")
    assert "65 prompts with n=2 ask for 130 completions" in error["message"]
    body = {"model": MODEL, "prompt": ["x"] * 64, "n": 2}
    assert post("/v1/completions", body).status_code == 200
    # A list of token ids is one prompt, not 200 prompts.
    router.requests.clear()
    assert post("/v1/completions", {"model": MODEL, "prompt": [7] * 200}).status_code == 200
    (sent,) = router.requests
    assert list(sent.prompt_token_ids.ids) == [7] * 200


def test_token_id_prompts_go_to_the_router_as_ids(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    """OpenAI's token-array prompts: ids in the named model's vocabulary (the router refuses
    them for auto; inference refuses ids outside the vocabulary)."""
    response = post("/v1/completions", {"model": MODEL, "prompt": [5, 6, 7]})
    assert response.status_code == 200, response.text
    (one,) = router.requests
    assert (one.WhichOneof("input"), list(one.prompt_token_ids.ids)) == (
        "prompt_token_ids",
        [5, 6, 7],
    )
    router.requests.clear()
    router.script = list(TWO_PROMPTS)
    body = {"model": MODEL, "prompt": [[1, 2], [3]], "n": 2}
    payload = post("/v1/completions", body).json()
    assert [c["text"] for c in payload["choices"]] == ["a0", "a1", "b0", "b1"]
    (batch,) = router.requests
    assert batch.WhichOneof("input") == "prompts"
    assert [list(p.ids) for p in batch.prompts.token_prompts] == [[1, 2], [3]]
    assert list(batch.prompts.prompts) == []


def test_a_refused_prompt_of_a_list_is_named(post: Callable[..., Any], router: FakeRouter) -> None:
    refused = of_choice(
        error_event(
            grpc.StatusCode.INVALID_ARGUMENT,
            "prompt[1]: This model's maximum context length is 1024 tokens",
        ),
        2,
    )
    refused.error.param = "prompt[1]"
    router.script = [*TWO_PROMPTS[:2], refused]
    body = {"model": MODEL, "prompt": ["a", "b"], "n": 2}
    error = assert_openai_error(
        post("/v1/completions", body), 400, code="context_length_exceeded", param="prompt[1]"
    )
    assert error["message"].startswith("prompt[1]: ")
    events = sse_events(post("/v1/completions", {**body, "stream": True}))
    assert events[-1]["error"]["param"] == "prompt[1]"
    # An in-band overflow that names no field is the prompt's (not a chat's messages).
    router.script = [
        route(),
        chunk("x"),
        error_event(grpc.StatusCode.INVALID_ARGUMENT, "maximum context length is 1024"),
    ]
    assert_openai_error(
        post("/v1/completions", {"model": MODEL, "prompt": "a"}),
        400,
        code="context_length_exceeded",
        param="prompt",
    )


# --- echo ---------------------------------------------------------------------------------


def echo_chunk(text: str, *tokens: tuple[str, float | None]) -> rpb.ChatResponse:
    event = rpb.ChatResponse(chunk=ipb.GenerateChunk(text=text, echo=True))
    for i, (token, logprob) in enumerate(tokens):
        info = event.chunk.tokens.add(token_id=i, token=token, token_bytes=token.encode())
        if logprob is not None:
            info.logprob = logprob
            info.top_logprobs.add(token_id=99, token="alt", logprob=-0.1)
    return event


def test_echo_puts_the_scored_prompt_before_the_answer(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = [
        route(),
        echo_chunk("Say", ("S", None), ("ay", -2.5)),
        chunk("Hel", "Hel"),
        complete(completion=1),
    ]
    body = {"model": MODEL, "prompt": "Say", "echo": True, "logprobs": 1, "max_tokens": 1}
    choice = post("/v1/completions", body).json()["choices"][0]
    assert choice["text"] == "SayHel"
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == ["S", "ay", "Hel"]
    # Nothing before the first token: null, as OpenAI gives it.
    assert logprobs["token_logprobs"] == [None, -2.5, pytest.approx(-0.5)]
    assert logprobs["top_logprobs"][0] is None
    assert logprobs["top_logprobs"][1] == {"alt": pytest.approx(-0.1)}
    assert logprobs["text_offset"] == [0, 1, 3]
    (sent,) = router.requests
    assert (sent.sampling.echo, sent.sampling.max_tokens) == (True, 1)


def test_echo_with_no_tokens_scores_the_prompt(
    post: Callable[..., Any], router: FakeRouter
) -> None:
    router.script = [
        route(),
        echo_chunk("Say", ("S", None), ("ay", -2.5)),
        complete(ipb.FINISH_REASON_LENGTH, completion=0),
    ]
    body = {"model": MODEL, "prompt": "Say", "echo": True, "logprobs": 0, "max_tokens": 0}
    payload = post("/v1/completions", body).json()
    assert payload["choices"][0]["text"] == "Say"
    assert payload["choices"][0]["finish_reason"] == "length"
    assert payload["usage"]["completion_tokens"] == 0
    (sent,) = router.requests
    assert sent.sampling.HasField("max_tokens")
    assert sent.sampling.max_tokens == 0
    # Streamed, the echo is the first chunk.
    router.script = [route(), echo_chunk("Say"), complete(ipb.FINISH_REASON_LENGTH, completion=0)]
    events = sse_events(post("/v1/completions", {**body, "logprobs": None, "stream": True}))
    assert [e["choices"][0]["text"] for e in events] == ["Say", ""]


# --- stored responses -------------------------------------------------------------------


def test_stored_responses_routes_and_storage_turned_off(
    app_client: TestClient, router: FakeRouter, post: Callable[..., Any]
) -> None:
    app_client.app.state.serving_responses.router = router  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {API_KEY}"}
    created = post("/v1/responses", {"model": MODEL, "input": "Hi"}).json()
    assert created["store"] is True
    assert app_client.get(f"/v1/responses/{created['id']}", headers=auth).json() == created
    items = app_client.get(f"/v1/responses/{created['id']}/input_items", headers=auth).json()
    assert [i["content"][0]["text"] for i in items["data"]] == ["Hi"]
    bad = app_client.get(
        f"/v1/responses/{created['id']}/input_items", params={"order": "up"}, headers=auth
    )
    assert_openai_error(bad, 400, param="order")
    assert app_client.get(f"/v1/responses/{created['id']}").status_code == 401

    settings = app_client.app.state.settings  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "store_responses", False)
        plain = post("/v1/responses", {"model": MODEL, "input": "Hi"})
        assert plain.status_code == 200
        assert plain.json()["store"] is False
        refused = post("/v1/responses", {"model": MODEL, "input": "Hi", "store": True})
        assert_openai_error(refused, 400, param="store")
        refused = post(
            "/v1/responses",
            {"model": MODEL, "input": "Hi", "previous_response_id": created["id"]},
        )
        assert_openai_error(refused, 400, param="previous_response_id")
        gone = app_client.get(f"/v1/responses/{created['id']}", headers=auth)
        assert_openai_error(gone, 404, param="response_id")
