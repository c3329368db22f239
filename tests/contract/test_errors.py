"""Every failure comes back in OpenAI's error shape with the status OpenAI would use, and the
SDK raises the matching exception class."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from lalo_testing.openai_wire import assert_openai_error, parse_sse
from lalo_testing.stack import Stack

pytestmark = pytest.mark.contract

MODEL = "tiny-chat"
MESSAGES = [{"role": "user", "content": "hello"}]
# Far more tokens than the stack's 1024-token context.
LONG_TEXT = "the quick brown fox jumps over the lazy dog " * 400


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, "max_tokens": 4, **fields}


# --- authentication -------------------------------------------------------------------


def test_missing_key(anonymous: httpx.Client) -> None:
    response = anonymous.post("/v1/chat/completions", json=chat())
    assert_openai_error(response, 401, code="invalid_api_key")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def test_wrong_key(anonymous: httpx.Client) -> None:
    response = anonymous.post(
        "/v1/chat/completions",
        json=chat(),
        headers={"Authorization": "Bearer sk-not-a-real-key-0000000000"},
    )
    assert_openai_error(response, 401, code="invalid_api_key")


def test_not_a_bearer_credential(anonymous: httpx.Client, stack: Stack) -> None:
    response = anonymous.post(
        "/v1/chat/completions", json=chat(), headers={"Authorization": f"Basic {stack.api_key}"}
    )
    assert_openai_error(response, 401, code="invalid_api_key")


def test_wrong_key_for_completions_and_streams(anonymous: httpx.Client) -> None:
    headers = {"Authorization": "Bearer wrong"}
    assert_openai_error(
        anonymous.post("/v1/completions", json={"model": MODEL, "prompt": "hi"}, headers=headers),
        401,
    )
    # A streamed request is refused before any stream starts.
    assert_openai_error(
        anonymous.post("/v1/chat/completions", json=chat(stream=True), headers=headers), 401
    )


def test_sdk_raises_authentication_error(stack: Stack) -> None:
    with (
        openai.OpenAI(base_url=stack.base_url, api_key="sk-wrong", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


# --- unknown model ----------------------------------------------------------------------


def test_unknown_model(http: httpx.Client) -> None:
    error = assert_openai_error(
        http.post("/v1/chat/completions", json=chat(model="no-such-model")),
        404,
        code="model_not_found",
        param="model",
    )
    assert "no-such-model" in error["message"]


def test_unknown_model_streamed_is_a_plain_404(http: httpx.Client) -> None:
    # The error is known before the first token: a real HTTP 404, not a 200 stream.
    with http.stream(
        "POST", "/v1/chat/completions", json=chat(model="no-such-model", stream=True)
    ) as response:
        response.read()
    assert not response.headers["content-type"].startswith("text/event-stream")
    assert_openai_error(response, 404, code="model_not_found", param="model")


def test_unknown_model_for_completions(http: httpx.Client) -> None:
    assert_openai_error(
        http.post("/v1/completions", json={"model": "no-such-model", "prompt": "hi"}),
        404,
        code="model_not_found",
        param="model",
    )


def test_sdk_raises_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no-such-model",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )


# --- invalid bodies ---------------------------------------------------------------------


def post_raw(http: httpx.Client, content: bytes) -> httpx.Response:
    return http.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )


def test_malformed_json(http: httpx.Client) -> None:
    error = assert_openai_error(post_raw(http, b'{"model": "tiny-chat", "messa'), 400)
    assert error["type"] == "invalid_request_error"
    assert "JSON" in error["message"]


def test_body_not_an_object(http: httpx.Client) -> None:
    assert_openai_error(post_raw(http, b"[1, 2, 3]"), 400, type_="invalid_request_error")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"model": MODEL}, "messages", id="missing-messages"),
        pytest.param({"messages": MESSAGES}, "model", id="missing-model"),
        pytest.param({"model": MODEL, "messages": []}, "messages", id="empty-messages"),
        pytest.param({"model": MODEL, "messages": "hello"}, "messages", id="messages-not-list"),
        pytest.param(chat(temperature=3), "temperature", id="temperature-3"),
        pytest.param(chat(temperature="hot"), "temperature", id="temperature-type"),
        pytest.param(chat(max_tokens="ten"), "max_tokens", id="max-tokens-type"),
        pytest.param(chat(max_tokens=0), "max_tokens", id="max-tokens-0"),
        pytest.param(chat(top_p=1.5), "top_p", id="top-p"),
        pytest.param(chat(presence_penalty=5), "presence_penalty", id="presence-penalty"),
        pytest.param(
            {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]},
            "messages[0].role",
            id="bad-role",
        ),
        pytest.param(
            {"model": MODEL, "messages": [{"content": "hi"}]},
            "messages[0].role",
            id="missing-role",
        ),
        pytest.param(
            {"model": MODEL, "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
            id="content-type",
        ),
        pytest.param(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            },
            "messages[0].content[0].type",
            id="image-part",
        ),
        pytest.param(chat(stream="maybe"), "stream", id="stream-type"),
        pytest.param(chat(logit_bias={"abc": 1}), "logit_bias", id="logit-bias-key"),
        pytest.param(chat(response_format={"type": "xml"}), "response_format.type", id="format"),
        pytest.param(
            chat(response_format={"type": "json_schema"}), "response_format", id="no-schema"
        ),
        pytest.param(chat(n=129), "n", id="n-129"),
        pytest.param(chat(n=0), "n", id="n-0"),
        pytest.param(chat(stop=["a", "b", "c", "d", "e"]), "stop", id="five-stops"),
        pytest.param(chat(top_logprobs=2), "top_logprobs", id="top-logprobs-alone"),
        pytest.param(chat(logprobs=True, top_logprobs=21), "top_logprobs", id="top-logprobs-21"),
        pytest.param(
            chat(stream_options={"include_usage": True}), "stream_options", id="options-no-stream"
        ),
    ],
)
def test_invalid_chat_body(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    error = assert_openai_error(
        http.post("/v1/chat/completions", json=body),
        400,
        param=param,
        type_="invalid_request_error",
    )
    # Messages are for people: no Python or pydantic internals.
    assert "Value error" not in error["message"]
    assert "pydantic" not in error["message"].lower()


def test_n_one_is_accepted(http: httpx.Client) -> None:
    assert http.post("/v1/chat/completions", json=chat(n=1)).status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"model": MODEL}, "prompt", id="missing-prompt"),
        pytest.param({"model": "auto", "prompt": [1, 2]}, "prompt", id="token-prompt-auto"),
        pytest.param({"model": MODEL, "prompt": [[1], [2**40]]}, "prompt[1]", id="huge-id"),
        pytest.param({"model": MODEL, "prompt": [[1], [-2]]}, "prompt[1]", id="negative-id"),
        pytest.param({"model": MODEL, "prompt": []}, "prompt", id="no-prompts"),
        pytest.param({"model": MODEL, "prompt": ["a"] * 129}, "prompt", id="129-prompts"),
        pytest.param({"model": MODEL, "prompt": ["a"] * 65, "n": 2}, "prompt", id="65x2"),
        pytest.param({"model": MODEL, "prompt": "hi", "logprobs": 9}, "logprobs", id="logprobs"),
        pytest.param({"model": MODEL, "prompt": "hi", "n": 200}, "n", id="n-200"),
        pytest.param(
            {"model": MODEL, "prompt": "hi", "max_tokens": 0}, "max_tokens", id="no-tokens"
        ),
        pytest.param({"model": MODEL, "prompt": "hi", "suffix": "x"}, "suffix", id="suffix"),
    ],
)
def test_invalid_completion_body(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    assert_openai_error(http.post("/v1/completions", json=body), 400, param=param)


def test_sdk_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=3)  # type: ignore[arg-type]
    assert caught.value.param == "temperature"


# --- limits of the model ----------------------------------------------------------------


def test_context_overflow(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": LONG_TEXT}]}
    error = assert_openai_error(
        http.post("/v1/chat/completions", json=body), 400, code="context_length_exceeded"
    )
    assert "1024" in error["message"]


def test_context_overflow_in_a_list_of_prompts_names_the_prompt(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": ["hi", LONG_TEXT], "max_tokens": 2}
    for stream in (False, True):
        response = http.post("/v1/completions", json={**body, "stream": stream})
        if response.status_code == 200:  # the short prompt's answer began first: in-band
            error = parse_sse(response.text.splitlines())[-1]["error"]
        else:
            error = assert_openai_error(response, 400, code="context_length_exceeded")
        assert error["param"] == "prompt[1]", error
        assert error["message"].startswith("prompt[1]: ")
        assert "1024" in error["message"]


def test_context_overflow_streamed_is_a_plain_400(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": LONG_TEXT}], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.read()
    assert_openai_error(response, 400, code="context_length_exceeded")


def test_context_overflow_by_max_tokens(http: httpx.Client) -> None:
    # The prompt fits, but prompt + max_tokens does not.
    assert_openai_error(
        http.post("/v1/chat/completions", json=chat(max_tokens=2000)),
        400,
        code="context_length_exceeded",
    )


def test_context_overflow_in_completions(http: httpx.Client) -> None:
    assert_openai_error(
        http.post("/v1/completions", json={"model": MODEL, "prompt": LONG_TEXT}),
        400,
        code="context_length_exceeded",
        param="prompt",
    )


def test_sdk_context_overflow(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": LONG_TEXT}],
        )
    assert caught.value.code == "context_length_exceeded"


def test_invalid_json_schema(http: httpx.Client) -> None:
    body = chat(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "bad", "schema": {"type": "no-such-type"}},
        }
    )
    # Found by inference-small, two hops away; the field still reaches the caller.
    assert_openai_error(http.post("/v1/chat/completions", json=body), 400, param="response_format")


def test_logit_bias_outside_the_vocabulary(http: httpx.Client) -> None:
    error = assert_openai_error(
        http.post("/v1/chat/completions", json=chat(logit_bias={"99999999": 5})),
        400,
        param="logit_bias",
    )
    assert "outside the vocabulary" in error["message"]


def test_sdk_bad_request_names_the_field_found_by_the_model_server(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=4, logit_bias={"99999999": 5}
        )
    assert caught.value.param == "logit_bias"


# --- routing of the HTTP surface ----------------------------------------------------------


def test_unknown_url(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/no-such-endpoint"), 404, type_="invalid_request_error")
    assert_openai_error(http.post("/v1/chat/complete", json=chat()), 404)


def test_wrong_method(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/chat/completions"), 405)
    assert_openai_error(http.delete("/v1/completions"), 405)
    assert_openai_error(http.post("/v1/models", json={}), 405)
