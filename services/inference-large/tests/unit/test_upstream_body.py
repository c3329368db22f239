"""Requests as the openai-upstream backend sends them."""

from __future__ import annotations

from lalo_inference_large.domain import (
    ChatMessage,
    GenerationRequest,
    ResponseFormat,
    SamplingOptions,
    ToolDefinition,
)
from lalo_inference_large.upstream_backend import request_body


def test_chat_body() -> None:
    request = GenerationRequest(
        "r",
        "m",
        messages=(ChatMessage("user", "hi"), ChatMessage("tool", "42", tool_call_id="c1")),
        tools=(ToolDefinition("f", "adds", {"type": "object"}),),
        sampling=SamplingOptions(
            max_tokens=9,
            temperature=0.0,
            top_k=5,
            seed=1,
            stop=("x",),
            logit_bias={7: -100.0},
            logprobs=True,
            top_logprobs=3,
            response_format=ResponseFormat("json_schema", json_schema={"type": "object"}),
        ),
    )
    path, body = request_body(request, "m")
    assert path == "/chat/completions"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][1] == {"role": "tool", "content": "42", "tool_call_id": "c1"}
    assert body["tools"][0]["function"]["name"] == "f"
    assert body["max_tokens"] == 9
    assert body["temperature"] == 0.0
    assert body["top_k"] == 5
    assert body["logit_bias"] == {"7": -100.0}
    assert body["logprobs"] is True
    assert body["top_logprobs"] == 3
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert "top_p" not in body


def test_completion_body() -> None:
    request = GenerationRequest(
        "r", "m", prompt="once", sampling=SamplingOptions(logprobs=True, top_logprobs=2)
    )
    path, body = request_body(request, "m")
    assert path == "/completions"
    assert body["prompt"] == "once"
    assert body["logprobs"] == 2
