"""The OpenAI request models: what they accept, normalise and refuse."""

from __future__ import annotations

from typing import Any

import pytest
from lalo_gateway.protocol import ChatCompletionRequest, CompletionRequest
from pydantic import ValidationError

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES, **fields})


def error_locs(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [tuple(error["loc"]) for error in exc.value.errors()]


def test_minimal_chat_request_defaults() -> None:
    request = chat()
    assert request.stream is False
    assert request.logprobs is False
    assert request.n is None
    assert request.stop is None
    assert request.messages[0].text() == "hi"


def test_unknown_fields_are_kept_not_refused() -> None:
    request = chat(prediction={"type": "content"}, metadata={"a": "b"})
    assert request.model_extra == {"prediction": {"type": "content"}, "metadata": {"a": "b"}}


def test_text_parts_are_joined() -> None:
    request = chat(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
    )
    assert request.messages[0].text() == "ab"


def test_only_assistant_messages_may_omit_content() -> None:
    assert chat(messages=[{"role": "assistant", "content": None}]).messages[0].text() == ""
    with pytest.raises(ValidationError, match="needs content"):
        chat(messages=[{"role": "user", "content": None}])


@pytest.mark.parametrize("role", ["system", "developer", "user", "assistant", "tool"])
def test_roles(role: str) -> None:
    message = {"role": role, "content": "x"} | (
        {"tool_call_id": "call_1"} if role == "tool" else {}
    )
    assert chat(messages=[message]).messages[0].role == role


def test_stop_is_normalised_to_a_list() -> None:
    assert chat(stop="END").stop == ["END"]
    assert chat(stop=["a", "b"]).stop == ["a", "b"]


@pytest.mark.parametrize("stop", [["1", "2", "3", "4", "5"], [""], ""])
def test_bad_stop(stop: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        chat(stop=stop)
    assert error_locs(exc)[0][0] == "stop"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 2.01),
        ("temperature", -0.1),
        ("top_p", 0),
        ("top_p", 1.1),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -2.5),
        ("max_tokens", 0),
        ("max_completion_tokens", 0),
        ("n", 0),
        ("top_logprobs", 21),
        ("min_p", 1.5),
        ("logit_bias", {"1": 101}),
        ("logit_bias", {"word": 1}),
    ],
)
def test_out_of_range(field: str, value: Any) -> None:
    fields = {field: value}
    if field == "top_logprobs":
        fields["logprobs"] = True
    with pytest.raises(ValidationError) as exc:
        chat(**fields)
    assert error_locs(exc)[0][0] == field


def test_top_logprobs_needs_logprobs_and_says_so_on_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        chat(top_logprobs=2)
    assert error_locs(exc) == [("top_logprobs",)]
    assert chat(top_logprobs=2, logprobs=True).top_logprobs == 2
    assert chat(top_logprobs=0).top_logprobs == 0


def test_negative_logit_bias_keys_are_token_ids() -> None:
    assert chat(logit_bias={"-1": 5}).logit_bias == {"-1": 5}


def test_json_schema_format_reads_the_schema_alias() -> None:
    request = chat(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
        }
    )
    assert request.response_format is not None
    assert request.response_format.json_schema is not None
    assert request.response_format.json_schema.json_schema == {"type": "object"}


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "x"}},
        {"type": "xml"},
        {"type": "json_object", "unexpected": 1},
    ],
)
def test_bad_response_format(response_format: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        chat(response_format=response_format)


def test_messages_must_not_be_empty() -> None:
    with pytest.raises(ValidationError) as exc:
        chat(messages=[])
    assert error_locs(exc) == [("messages",)]


def test_completion_request() -> None:
    request = CompletionRequest.model_validate({"model": "m", "prompt": "p", "logprobs": 3})
    assert request.logprobs == 3
    assert request.max_tokens is None
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": "p", "logprobs": 6})
    # Token ids parse (OpenAI's shape); ServingCompletions refuses them by name.
    assert CompletionRequest.model_validate({"model": "m", "prompt": [1, 2]}).prompt == [1, 2]
    listed = CompletionRequest.model_validate({"model": "m", "prompt": ["a", ""]})
    assert listed.prompt == ["a", ""]
    with pytest.raises(ValidationError) as exc:
        CompletionRequest.model_validate({"model": "m", "prompt": []})
    assert error_locs(exc) == [("prompt",)]
    assert "empty list" in str(exc.value)
