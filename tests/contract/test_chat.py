"""POST /v1/chat/completions through the official SDK and on the wire."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from lalo_testing.openai_wire import parse_sse
from lalo_testing.stack import Stack
from lalo_testing.vocab import Vocab

pytestmark = pytest.mark.contract

MODEL = "tiny-chat"
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about the weather."},
]


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **extra}


def stream_lines(http: httpx.Client, path: str, body: dict[str, Any], **headers: str) -> Any:
    """(response, parsed payloads) of a streamed request; the body is fully read."""
    with http.stream("POST", path, json=body, headers=headers) as response:
        lines = list(response.iter_lines())
    assert response.status_code == 200, lines
    assert response.headers["content-type"].startswith("text/event-stream")
    return response, parse_sse(lines)


def test_non_streamed_completion(client: openai.OpenAI, vocab: Vocab) -> None:
    # The random model may end at once (EOS is an ordinary logit); barring it keeps the
    # content non-empty on every run.
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=12, logit_bias=vocab.no_eos()
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert choice.logprobs is None
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_text_content_parts_are_accepted(client: openai.OpenAI) -> None:
    def greedy(content: Any) -> Any:
        return client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": content}],
            max_tokens=4,
            temperature=0,
        )

    # Text parts are the same prompt as the joined string: same tokens, same greedy answer.
    parts = greedy([{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}])
    plain = greedy("Hello there")
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage is not None
    assert plain.usage is not None
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens


def test_auto_model_is_routed_and_reported(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, max_tokens=4
    )
    completion = raw.parse()
    # The answer names the model that actually served it, and the headers say how.
    assert completion.model == MODEL
    assert raw.headers["x-lalo-model"] == MODEL
    assert raw.headers["x-lalo-route"]


def test_route_headers_on_plain_responses(client: openai.OpenAI, stack: Stack) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=stack.model_id, messages=MESSAGES, max_tokens=2
    )
    assert raw.headers["x-lalo-model"] == stack.model_id
    assert raw.headers["x-lalo-route"]


def test_streamed_completion_through_the_sdk(client: openai.OpenAI, vocab: Vocab) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=12, logit_bias=vocab.no_eos(), stream=True
        )
    )
    assert len(chunks) >= 3
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.model == MODEL for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    # Exactly one finish_reason, on the last choice chunk.
    assert finishes[-1] in ("stop", "length")
    assert all(reason is None for reason in finishes[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_stream_wire_format(http: httpx.Client) -> None:
    response, events = stream_lines(
        http, "/v1/chat/completions", chat_body(max_tokens=6, stream=True)
    )
    assert response.headers["x-lalo-model"] == MODEL
    assert response.headers["x-lalo-route"]
    assert response.headers["cache-control"] == "no-cache"
    first, last = events[0], events[-1]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["choices"][0]["finish_reason"] is None
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    assert last["choices"][0]["delta"].get("content") in (None, "")
    for event in events:
        assert event["object"] == "chat.completion.chunk"
        assert set(event["choices"][0]) >= {"index", "delta", "finish_reason", "logprobs"}
        # Without stream_options.include_usage no usage is reported.
        assert event.get("usage") is None


def test_stream_include_usage(http: httpx.Client, vocab: Vocab) -> None:
    _, events = stream_lines(
        http,
        "/v1/chat/completions",
        chat_body(
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            logit_bias=vocab.no_eos(),
        ),
    )
    *body, usage_event = events
    assert usage_event["choices"] == []
    usage = usage_event["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    for event in body:
        assert "usage" in event
        assert event["usage"] is None
        assert len(event["choices"]) == 1
    assert body[-1]["choices"][0]["finish_reason"] == "length"


def test_stream_include_usage_through_the_sdk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= 4
    assert all(c.usage is None for c in chunks[:-1])


def test_max_tokens_ends_with_length(client: openai.OpenAI, vocab: Vocab) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=7, logit_bias=vocab.no_eos()
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 7


def test_max_completion_tokens_is_honoured(client: openai.OpenAI, vocab: Vocab) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_completion_tokens=3, logit_bias=vocab.no_eos()
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


def test_max_tokens_streamed(client: openai.OpenAI, vocab: Vocab) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            logit_bias=vocab.no_eos(),
        )
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def _greedy(client: openai.OpenAI, vocab: Vocab, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=30,
        temperature=0,
        logit_bias=vocab.no_eos(),
        **extra,
    )


def _stop_sequence(text: str) -> str:
    """A 3-character piece of ``text``, away from its start, made of plain characters."""
    for start in range(5, len(text) - 3):
        piece = text[start : start + 3]
        if piece.isascii() and piece.isprintable() and piece.strip() == piece:
            return piece
    raise AssertionError(f"no usable stop sequence in {text!r}")


def test_stop_sequence_cuts_the_output(client: openai.OpenAI, vocab: Vocab) -> None:
    # Greedy decoding repeats itself, so a piece of the free-running answer is a stop
    # sequence that must cut the second answer right before it.
    full = _greedy(client, vocab).choices[0].message.content
    stop = _stop_sequence(full)
    cut = _greedy(client, vocab, stop=[stop, "never-produced-zzz"])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_stop_sequence_streamed(client: openai.OpenAI, vocab: Vocab) -> None:
    full = _greedy(client, vocab).choices[0].message.content
    stop = _stop_sequence(full)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=30,
            temperature=0,
            logit_bias=vocab.no_eos(),
            stop=stop,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full[: full.index(stop)]
    assert stop not in text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seed_makes_sampling_repeatable(client: openai.OpenAI, vocab: Vocab) -> None:
    def sample(seed: int) -> str:
        completion = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=16,
            temperature=0.8,
            seed=seed,
            logit_bias=vocab.no_eos(),
        )
        content = completion.choices[0].message.content
        assert content is not None
        return content

    first = sample(1234)
    assert sample(1234) == first
    # Sampling really is random: other seeds give other texts (so equality above means
    # the seed was honoured, not that decoding was greedy).
    assert len({first, sample(1), sample(2)}) > 1


def test_seed_repeats_when_streamed(client: openai.OpenAI, vocab: Vocab) -> None:
    def streamed(seed: int) -> str:
        chunks = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=12,
            temperature=0.8,
            seed=seed,
            logit_bias=vocab.no_eos(),
            stream=True,
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    plain = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=12,
        temperature=0.8,
        seed=99,
        logit_bias=vocab.no_eos(),
    )
    assert streamed(99) == plain.choices[0].message.content


def test_several_choices(client: openai.OpenAI, vocab: Vocab) -> None:
    """n=3: three answers from the same model, each its own sample (choice i is sampled
    with seed + i), the prompt counted once and every completion."""
    single = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    completion = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        n=3,
        max_tokens=8,
        temperature=0.8,
        seed=7,
        logit_bias=vocab.no_eos(),
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in completion.choices)
    contents = [c.message.content for c in completion.choices]
    assert all(contents)
    assert len(set(contents)) > 1  # different seeds, different samples
    assert completion.usage is not None
    assert single.usage is not None
    assert completion.usage.prompt_tokens == single.usage.prompt_tokens
    assert completion.usage.completion_tokens == 3 * 8


def test_several_choices_streamed(client: openai.OpenAI, vocab: Vocab) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            n=2,
            max_tokens=5,
            logit_bias=vocab.no_eos(),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert sorted(texts) == [0, 1]
    assert all(texts.values())
    assert finishes == {0: "length", 1: "length"}
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 2 * 5
    # Greedy decoding gives every choice the same answer.
    greedy = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, n=2, max_tokens=5, temperature=0
    )
    assert greedy.choices[0].message.content == greedy.choices[1].message.content


# Bounded so that even random weights must close the object within max_tokens: enums,
# a short patterned string, a short array and a boolean. (A free string with only
# maxLength is not used: llama.cpp's grammar decodes UTF-8 leniently, so a random model can
# put broken multi-byte sequences in it, which decode to more characters than allowed.)
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sky": {"type": "string", "enum": ["sunny", "cloudy", "rain"]},
        "level": {"type": "integer", "enum": [1, 2, 3]},
        "city": {"type": "string", "pattern": "^[a-z]{1,8}$", "maxLength": 8},
        "days": {"type": "array", "items": {"type": "integer", "enum": [1, 2]}, "maxItems": 3},
        "windy": {"type": "boolean"},
    },
    "required": ["sky", "level", "city", "days", "windy"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_json_schema_output_parses_and_matches(client: openai.OpenAI, seed: int) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=80,
        seed=seed,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True},
        },
    )
    assert completion.choices[0].finish_reason == "stop"
    content = completion.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), WEATHER_SCHEMA)


def test_json_schema_streamed(client: openai.OpenAI) -> None:
    chunks = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=80,
        seed=3,
        stream=True,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA},
        },
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), WEATHER_SCHEMA)


def test_json_object_output_parses(client: openai.OpenAI, vocab: Vocab) -> None:
    # Unconstrained, random weights never start with '{'. Favouring '"' (and then '}') only
    # makes the object close quickly; the grammar decides which of them may come when.
    bias = {str(vocab.ids['"']): 100, str(vocab.ids["}"]): 50}
    completion = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=60,
        logit_bias=bias,
        response_format={"type": "json_object"},
    )
    content = completion.choices[0].message.content
    assert content is not None
    assert isinstance(json.loads(content), dict)
    assert completion.choices[0].finish_reason == "stop"


def test_logprobs(client: openai.OpenAI, vocab: Vocab) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=6,
        logprobs=True,
        top_logprobs=3,
        logit_bias=vocab.no_eos(),
    )
    choice = completion.choices[0]
    assert choice.logprobs is not None
    entries = choice.logprobs.content
    assert entries is not None
    assert completion.usage is not None
    assert len(entries) == completion.usage.completion_tokens == 6
    for entry in entries:
        assert isinstance(entry.token, str)
        assert entry.logprob <= 0
        assert entry.bytes is not None
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        assert len(entry.top_logprobs) == 3
        values = [alt.logprob for alt in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert all(value <= 0 for value in values)
        # The chosen token can be no likelier than the likeliest alternative.
        assert entry.logprob <= values[0] + 1e-4
    text = b"".join(bytes(e.bytes or []) for e in entries).decode("utf-8", "replace")
    assert text == choice.message.content


def test_logprobs_without_alternatives(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=3, logprobs=True
    )
    entries = completion.choices[0].logprobs.content  # type: ignore[union-attr]
    assert entries
    assert all(entry.top_logprobs == [] for entry in entries)


def test_logprobs_streamed(http: httpx.Client, vocab: Vocab) -> None:
    _, events = stream_lines(
        http,
        "/v1/chat/completions",
        chat_body(
            max_tokens=4,
            stream=True,
            logprobs=True,
            top_logprobs=2,
            logit_bias=vocab.no_eos(),
        ),
    )
    with_logprobs = [e for e in events if e["choices"][0]["logprobs"]]
    assert with_logprobs
    entries = [
        entry for event in with_logprobs for entry in event["choices"][0]["logprobs"]["content"]
    ]
    assert len(entries) == 4, events
    assert all(len(entry["top_logprobs"]) == 2 for entry in entries)


def test_request_id_is_echoed(http: httpx.Client, client: openai.OpenAI) -> None:
    response = http.post(
        "/v1/chat/completions",
        json=chat_body(max_tokens=2),
        headers={"x-request-id": "contract-echo-1"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "contract-echo-1"
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=2,
        stream=True,
        extra_headers={"x-request-id": "contract-echo-2"},
    )
    assert raw.headers["x-request-id"] == "contract-echo-2"
    list(raw.parse())


def test_request_id_is_generated(http: httpx.Client) -> None:
    ids = set()
    for _ in range(2):
        response = http.post("/v1/chat/completions", json=chat_body(max_tokens=1))
        assert response.status_code == 200
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 2
    assert all(re.fullmatch(r"[A-Za-z0-9._:-]{8,128}", rid) for rid in ids)


def test_malformed_request_id_is_replaced(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        json=chat_body(max_tokens=1),
        headers={"x-request-id": "has spaces and / slashes"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] != "has spaces and / slashes"
    assert response.headers["x-request-id"]


def test_request_id_on_errors(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={"model": "no-such-model", "messages": MESSAGES},
        headers={"x-request-id": "contract-error-1"},
    )
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "contract-error-1"
