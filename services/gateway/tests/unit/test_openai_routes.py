"""The OpenAI routes end to end inside the process: the real app from create_app, a fake
router on app.state (no network), FastAPI's TestClient. The security runtime runs on a
throw-away SQLite file with one static key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_gateway.app import create_app
from lalo_gateway.errors import from_grpc
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


def status_error(code: grpc.StatusCode, message: str) -> Exception:
    """What RouterClient raises for a failed gRPC call."""
    return from_grpc(code, message)


HELLO = [route(), chunk("Hel", "Hel"), chunk("lo", "lo"), complete()]


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

    async def chat(self, request: rpb.ChatRequest) -> AsyncIterator[rpb.ChatResponse]:
        self.requests.append(request)
        try:
            for event in self.script:
                if isinstance(event, Exception):
                    raise event
                yield event
        finally:
            self.closed += 1

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
        ({"n": 2}, "n"),
        ({"best_of": 2}, "best_of"),
        ({"echo": True}, "echo"),
        ({"suffix": "end"}, "suffix"),
        ({"prompt": ["a", "b"]}, "prompt"),
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
        (chat_body(n=2), "n"),
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
