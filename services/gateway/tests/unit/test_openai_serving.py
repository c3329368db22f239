"""OpenAI request → router sampling parameters, and token logprobs → OpenAI's two shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_gateway.protocol import ChatCompletionRequest, CompletionRequest
from lalo_gateway.router_client import stamp_caller
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.rbac import Role
from lalo_gateway.serving import (
    ServingChat,
    chat_logprobs,
    completion_logprobs,
    route_headers,
    sampling_from_request,
    sse,
)


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def sampling(body: ChatCompletionRequest, **overrides: Any) -> ipb.SamplingParams:
    args: dict[str, Any] = {
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "logprobs": bool(body.logprobs),
        "top_logprobs": body.top_logprobs or 0,
        "response_format": body.response_format,
    }
    args.update(overrides)
    return sampling_from_request(body, **args)


def test_every_sampling_field_is_passed_on() -> None:
    params = sampling(
        chat(
            max_tokens=64,
            temperature=0.7,
            top_p=0.9,
            top_k=40,
            min_p=0.05,
            seed=-3,
            stop=["END", "STOP"],
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            logit_bias={"12": -100, "7": 2.5},
            logprobs=True,
            top_logprobs=4,
        )
    )
    assert params.max_tokens == 64
    assert params.temperature == pytest.approx(0.7)
    assert params.top_p == pytest.approx(0.9)
    assert params.top_k == 40
    assert params.min_p == pytest.approx(0.05)
    assert params.seed == -3
    assert list(params.stop) == ["END", "STOP"]
    assert params.presence_penalty == pytest.approx(0.5)
    assert params.frequency_penalty == pytest.approx(-0.5)
    assert dict(params.logit_bias) == {12: -100.0, 7: 2.5}
    assert params.logprobs
    assert params.top_logprobs == 4
    assert not params.HasField("response_format")


def test_unset_fields_stay_unset_so_the_backend_picks_its_defaults() -> None:
    params = sampling(chat())
    for name in ("max_tokens", "temperature", "top_p", "top_k", "min_p", "seed"):
        assert not params.HasField(name), name
    assert list(params.stop) == []
    assert not params.logprobs


def test_zero_temperature_and_seed_are_sent() -> None:
    # 0 is a real value (greedy; seed 0), not "unset".
    params = sampling(chat(temperature=0, seed=0))
    assert params.HasField("temperature")
    assert params.temperature == 0
    assert params.HasField("seed")


@pytest.mark.parametrize("top_k", [0, -1])
def test_top_k_off(top_k: int) -> None:
    assert not sampling(chat(top_k=top_k)).HasField("top_k")


def test_json_schema_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    params = sampling(
        chat(
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        )
    )
    assert params.response_format.type == ipb.ResponseFormat.JSON_SCHEMA
    assert json.loads(params.response_format.json_schema) == schema


def test_json_object_and_text_formats() -> None:
    params = sampling(chat(response_format={"type": "json_object"}))
    assert params.response_format.type == ipb.ResponseFormat.JSON_OBJECT
    params = sampling(chat(response_format={"type": "text"}))
    assert params.response_format.type == ipb.ResponseFormat.TEXT


def test_completion_request_sampling() -> None:
    body = CompletionRequest.model_validate({"model": "m", "prompt": "p", "stop": "x"})
    params = sampling_from_request(
        body, max_tokens=16, logprobs=True, top_logprobs=2, response_format=None
    )
    assert params.max_tokens == 16
    assert list(params.stop) == ["x"]
    assert params.top_logprobs == 2


def token(text: str, logprob: float, raw: bytes | None = None, *alts: tuple[str, float]) -> Any:
    return ipb.TokenInfo(
        token=text,
        logprob=logprob,
        token_bytes=text.encode() if raw is None else raw,
        top_logprobs=[
            ipb.TopLogprob(token=t, logprob=lp, token_bytes=t.encode()) for t, lp in alts
        ],
    )


def test_chat_logprobs_shape() -> None:
    shaped = chat_logprobs([token("Hi", -0.25, None, ("Hi", -0.25), ("Yo", -2.0))])
    assert shaped == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.25,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                    {"token": "Yo", "logprob": -2.0, "bytes": [89, 111]},
                ],
            }
        ],
        "refusal": None,
    }
    assert chat_logprobs([]) == {"content": [], "refusal": None}


def test_completion_logprobs_shape() -> None:
    shaped = completion_logprobs(
        [token("Hel", -0.5, None, ("Hel", -0.5)), token("lo", -1.0, None, ("lo", -1.0))], 0
    )
    assert shaped == {
        "tokens": ["Hel", "lo"],
        "token_logprobs": [-0.5, -1.0],
        "top_logprobs": [{"Hel": -0.5}, {"lo": -1.0}],
        "text_offset": [0, 3],
    }


def test_completion_logprobs_offsets_start_where_the_chunk_does() -> None:
    assert completion_logprobs([token("a", -1.0), token("b", -1.0)], 10)["text_offset"] == [10, 11]


def test_completion_offsets_count_a_split_character_once() -> None:
    # "é" (2 bytes) split over two tokens, each shown alone as U+FFFD: the text gains one
    # character, once the second byte arrives, so "x" starts at offset 1 (not 2).
    e_acute = "é".encode()
    tokens = [
        token("\ufffd", -1.0, e_acute[:1]),
        token("\ufffd", -1.0, e_acute[1:]),
        token("x", -1.0),
    ]
    assert completion_logprobs(tokens, 0)["text_offset"] == [0, 0, 1]


def test_sse_framing() -> None:
    assert sse({"a": "é"}) == 'data: {"a":"é"}\n\n'


def test_route_headers() -> None:
    from lalo.router.v1 import router_pb2 as rpb

    route = rpb.RouteDecision(pool="large", model="big", category="math", escalated=True)
    assert route_headers(route, "rid") == {
        "x-request-id": "rid",
        "x-lalo-route": "large",
        "x-lalo-model": "big",
        "x-lalo-category": "math",
        "x-lalo-escalated": "true",
    }
    assert route_headers(None, "rid") == {"x-request-id": "rid"}


class ScriptedRouter:
    """Stands in for RouterClient: replays a fixed list of router events."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events

    async def chat(self, request: Any) -> Any:
        for event in self.events:
            yield event


async def test_stream_sends_the_role_chunk_and_first_output_in_one_write() -> None:
    events = [
        rpb.ChatResponse(route=rpb.RouteDecision(pool="small", model="tiny")),
        rpb.ChatResponse(chunk=ipb.GenerateChunk(text="Hel")),
        rpb.ChatResponse(chunk=ipb.GenerateChunk(text="lo")),
        rpb.ChatResponse(
            complete=ipb.GenerateComplete(
                finish_reason=ipb.FINISH_REASON_STOP,
                usage=ipb.Usage(prompt_tokens=3, completion_tokens=2),
            )
        ),
    ]
    serving = ServingChat(ScriptedRouter(events))
    response = await serving.create(chat(stream=True), "req-1")
    writes = [w async for w in response.body_iterator]
    first = [json.loads(line[6:]) for line in str(writes[0]).split("\n\n") if line]
    assert [c["choices"][0]["delta"] for c in first] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
    ]
    rest = "".join(str(w) for w in writes[1:])
    assert rest.endswith("data: [DONE]\n\n")
    later = [json.loads(e[6:]) for e in rest.split("\n\n") if e.startswith("data: {")]
    assert [c["choices"][0]["delta"] for c in later] == [{"content": "lo"}, {}]
    assert later[-1]["choices"][0]["finish_reason"] == "stop"
    assert response.headers["x-lalo-model"] == "tiny"


def test_the_router_hears_the_verified_caller_not_the_client() -> None:
    forged = rpb.ChatRequest(principal="admin@evil", tenant="evil", allowed_models=["big"])
    limited = Principal(
        subject="team-a", role=Role.DEVELOPER, kind="api_key", allowed_models=frozenset({"b", "a"})
    )
    stamp_caller(forged, limited)
    assert (forged.principal, forged.tenant, list(forged.allowed_models)) == (
        "team-a",
        "team-a",
        ["a", "b"],
    )
    stamp_caller(forged, Principal(subject="ops", role=Role.ADMIN, kind="api_key"))
    assert list(forged.allowed_models) == []  # no list: any model
    # An embed request names its model (checked by the gateway): identity only.
    embed = rpb.EmbedRequest(principal="admin@evil", tenant="evil", inputs=["x"])
    stamp_caller(embed, limited)
    assert (embed.principal, embed.tenant, list(embed.inputs)) == ("team-a", "team-a", ["x"])


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_is_charged_to_the_model_that_answered(stream: bool) -> None:
    """A workflow the policy chose did not answer and a model did: its usage is that
    model's, streamed or not."""
    events = [
        rpb.ChatResponse(route=rpb.RouteDecision(pool="workflow", model="workflow")),
        rpb.ChatResponse(progress=rpb.WorkflowProgress(text="the workflow did not answer")),
        rpb.ChatResponse(route=rpb.RouteDecision(pool="small", model="tiny")),
        rpb.ChatResponse(chunk=ipb.GenerateChunk(text="Hello")),
        rpb.ChatResponse(
            complete=ipb.GenerateComplete(
                finish_reason=ipb.FINISH_REASON_STOP,
                usage=ipb.Usage(prompt_tokens=3, completion_tokens=2),
            )
        ),
    ]
    charged: list[tuple[int, int, str]] = []
    serving = ServingChat(
        ScriptedRouter(events), on_usage=lambda p, c, m: charged.append((p, c, m))
    )
    response = await serving.create(chat(stream=stream), "req-1")
    if stream:
        _ = [w async for w in response.body_iterator]  # type: ignore[union-attr]
    assert charged == [(3, 2, "tiny")]
