"""Generate, Tokenize and ListModels against a real server with the tiny model.

The tiny model has random weights, so tests never assert what it says; they derive
expectations from its own greedy output (deterministic for a fixed model) instead.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from lalo.inference.v1 import inference_pb2 as pb

pytestmark = pytest.mark.integration

MODEL_ID = "tiny-chat"
PROMPTS = [
    f"Prompt number {i}: the {('sea', 'sky', 'fox', 'model')[i % 4]} is {i * 13}" for i in range(8)
]


def _special_id(served: Any, text: str) -> int:
    (token,) = served.engine.model.tokenize(text, add_special=False, parse_special=True)
    return int(token)


def _byte_id(served: Any, char: str) -> int:
    (token,) = served.engine.model.tokenize(char, add_special=False, parse_special=False)
    return int(token)


async def _expect_status(served: Any, request: pb.GenerateRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await served.generate(request)
    return info.value


async def test_chat_generates_text_and_usage(served: Any) -> None:
    result = await served.generate(served.chat(max_tokens=16, temperature=0.0))
    assert result.error is None
    assert result.text
    assert result.complete.model == MODEL_ID
    assert result.complete.usage.prompt_tokens > 0
    assert 0 < result.complete.usage.completion_tokens <= 16


async def test_prompt_generates(served: Any) -> None:
    result = await served.generate(served.prompt("Once upon a time", max_tokens=8))
    assert result.complete is not None
    assert result.complete.usage.completion_tokens <= 8


async def test_empty_model_means_the_only_model(served: Any) -> None:
    request = served.prompt("Hello", max_tokens=4)
    request.model = ""
    result = await served.generate(request)
    assert result.complete.model == MODEL_ID


async def test_max_tokens_is_honoured(served: Any) -> None:
    for max_tokens in (1, 7, 32):
        result = await served.generate(served.chat(max_tokens=max_tokens, temperature=0.0))
        assert result.finish_reason == pb.FINISH_REASON_LENGTH
        assert result.complete.usage.completion_tokens == max_tokens


async def test_stop_sequence_cuts_output(served: Any) -> None:
    full = await served.generate(served.chat(max_tokens=40, temperature=0.0))
    assert full.finish_reason == pb.FINISH_REASON_LENGTH
    text = full.text
    # A stop string the model really produces: three characters from the middle, at their
    # first occurrence, so the expected output is everything before them.
    start = next(
        i
        for i in range(4, len(text) - 3)
        if text.find(text[i : i + 3]) == i and text[i : i + 3].strip()
    )
    stop = text[start : start + 3]
    cut = await served.generate(
        served.chat(max_tokens=40, temperature=0.0, stop=["never-said-xyz", stop])
    )
    assert cut.finish_reason == pb.FINISH_REASON_STOP
    assert cut.text == text[:start]
    assert stop not in cut.text
    assert cut.complete.usage.completion_tokens < 40
    # Streamed pieces never carry a part of the stop string past the cut.
    assert "".join(chunk.text for chunk in cut.chunks) == text[:start]


async def test_stop_sequence_that_never_occurs_changes_nothing(served: Any) -> None:
    full = await served.generate(served.chat(max_tokens=20, temperature=0.0))
    same = await served.generate(served.chat(max_tokens=20, temperature=0.0, stop=["\u2603\u2603"]))
    assert same.text == full.text
    assert same.finish_reason == pb.FINISH_REASON_LENGTH


async def test_same_seed_same_output(served: Any) -> None:
    def request(seed: int) -> pb.GenerateRequest:
        return served.chat("Tell me a story", max_tokens=32, temperature=0.8, seed=seed)

    first = await served.generate(request(1234))
    again = await served.generate(request(1234))
    other = await served.generate(request(4321))
    assert [t.token_id for t in first.tokens] == [t.token_id for t in again.tokens]
    assert first.text == again.text
    assert first.text != other.text


async def test_greedy_output_is_the_same_alone_and_batched(served: Any) -> None:
    """Continuous batching must not change what each sequence computes."""

    def request(prompt: str) -> pb.GenerateRequest:
        return served.prompt(prompt, max_tokens=32, temperature=0.0)

    alone = [await served.generate(request(p)) for p in PROMPTS]
    together = await asyncio.gather(*(served.generate(request(p)) for p in PROMPTS))
    assert [r.text for r in together] == [r.text for r in alone]
    assert all(r.finish_reason == pb.FINISH_REASON_LENGTH for r in together)


async def test_json_schema_output_parses_and_matches(served: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "name": {"type": "string", "maxLength": 8},
            "count": {"type": "integer"},
            "ok": {"type": "boolean"},
        },
        "required": ["color", "name", "count", "ok"],
        "additionalProperties": False,
    }
    # llama.cpp's grammar decodes UTF-8 leniently: a random model's stray continuation
    # bytes count as one character there but decode to several U+FFFD here, so non-ASCII
    # byte tokens are ruled out to keep maxLength checkable.
    model = served.engine.model
    non_ascii = {
        t: -100.0 for t in range(model.n_vocab) if any(b >= 0x80 for b in model.token_bytes(t))
    }
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.JSON_SCHEMA, json_schema=json.dumps(schema))
    for seed in (1, 2, 3):
        result = await served.generate(
            served.chat(
                "Describe a thing as JSON",
                max_tokens=200,
                temperature=0.9,
                seed=seed,
                response_format=fmt,
                logit_bias=non_ascii,
            )
        )
        assert result.finish_reason == pb.FINISH_REASON_STOP, result.text
        value = json.loads(result.text)
        assert set(value) == {"color", "name", "count", "ok"}
        assert value["color"] in {"red", "green", "blue"}
        assert isinstance(value["name"], str)
        assert len(value["name"]) <= 8
        assert isinstance(value["count"], int)
        assert isinstance(value["ok"], bool)


async def test_json_object_output_parses(served: Any) -> None:
    # The random model would write one endless string; biasing '"' and '}' lets it close
    # strings and the object as soon as the grammar allows. Unconstrained, the same bias
    # makes it write nothing but those two characters.
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.JSON_OBJECT)
    bias = {_byte_id(served, "}"): 60.0, _byte_id(served, '"'): 100.0}
    result = await served.generate(
        served.chat(max_tokens=64, temperature=0.0, response_format=fmt, logit_bias=bias)
    )
    assert result.finish_reason == pb.FINISH_REASON_STOP, result.text
    assert isinstance(json.loads(result.text), dict)
    unconstrained = await served.generate(
        served.chat(max_tokens=4, temperature=0.0, logit_bias=bias)
    )
    assert set(unconstrained.text) <= {"}", '"'}


async def test_grammar_constrains_output(served: Any) -> None:
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.GRAMMAR, grammar='root ::= ("yes" | "no")')
    result = await served.generate(
        served.chat(max_tokens=10, temperature=1.0, seed=5, response_format=fmt)
    )
    assert result.text in {"yes", "no"}
    assert result.finish_reason == pb.FINISH_REASON_STOP


async def test_unparseable_grammar_is_invalid_argument(served: Any) -> None:
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.GRAMMAR, grammar="root ::= (")
    error = await _expect_status(served, served.chat(max_tokens=4, response_format=fmt))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "grammar" in (error.details() or "")


async def test_logprobs_and_top_logprobs(served: Any) -> None:
    result = await served.generate(
        served.chat(max_tokens=8, temperature=0.0, logprobs=True, top_logprobs=5)
    )
    tokens = result.tokens
    assert len(tokens) == result.complete.usage.completion_tokens == 8
    assert "".join(t.token_bytes.decode() for t in tokens) == result.text
    for token in tokens:
        assert token.logprob <= 0.0
        top = [alt.logprob for alt in token.top_logprobs]
        assert len(top) == 5
        assert top == sorted(top, reverse=True)
        assert all(lp <= 0.0 for lp in top)
        # Greedy picks the most likely token.
        assert token.token_id == token.top_logprobs[0].token_id
        assert token.logprob == pytest.approx(top[0], abs=1e-5)


async def test_logprobs_without_alternatives(served: Any) -> None:
    result = await served.generate(served.chat(max_tokens=4, temperature=0.0, logprobs=True))
    assert len(result.tokens) == 4
    assert all(t.logprob <= 0.0 and not t.top_logprobs for t in result.tokens)


async def test_logit_bias_forcing_eos_stops_at_once(served: Any) -> None:
    im_end = _special_id(served, "<|im_end|>")
    result = await served.generate(
        served.chat(max_tokens=20, temperature=0.0, logit_bias={im_end: 100})
    )
    assert result.finish_reason == pb.FINISH_REASON_STOP
    assert result.text == ""
    assert result.complete.usage.completion_tokens <= 1


async def test_logit_bias_can_ban_a_token(served: Any) -> None:
    first = await served.generate(served.chat(max_tokens=1, temperature=0.0, logprobs=True))
    banned = first.tokens[0].token_id
    again = await served.generate(
        served.chat(max_tokens=1, temperature=0.0, logprobs=True, logit_bias={banned: -100})
    )
    assert again.tokens[0].token_id != banned


async def test_all_sampling_knobs_together(served: Any) -> None:
    result = await served.generate(
        served.chat(
            max_tokens=12,
            temperature=0.7,
            top_k=40,
            top_p=0.9,
            min_p=0.05,
            seed=3,
            presence_penalty=1.0,
            frequency_penalty=1.5,
        )
    )
    assert result.finish_reason == pb.FINISH_REASON_LENGTH


async def test_penalties_discourage_repeated_tokens(served: Any) -> None:
    plain = await served.generate(served.chat(max_tokens=48, temperature=0.0, logprobs=True))
    penalised = await served.generate(
        served.chat(
            max_tokens=48,
            temperature=0.0,
            logprobs=True,
            presence_penalty=2.0,
            frequency_penalty=2.0,
        )
    )
    plain_ids = [t.token_id for t in plain.tokens]
    penalised_ids = [t.token_id for t in penalised.tokens]
    # The random model's greedy output repeats itself; penalties must change that.
    assert len(set(plain_ids)) < len(plain_ids)
    assert penalised_ids != plain_ids
    assert len(set(penalised_ids)) > len(set(plain_ids))


async def test_prompt_over_the_context_is_invalid_argument(served: Any) -> None:
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 200
    error = await _expect_status(served, served.prompt(long_prompt, max_tokens=4))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "maximum context length is 512 tokens" in (error.details() or "")


async def test_prompt_plus_max_tokens_over_the_context_is_invalid_argument(served: Any) -> None:
    error = await _expect_status(served, served.chat(max_tokens=510))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert "512" in details
    assert "max_tokens" in details


async def test_unknown_model_is_not_found(served: Any) -> None:
    request = served.chat(max_tokens=4)
    request.model = "no-such-model"
    error = await _expect_status(served, request)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in (error.details() or "")
    assert MODEL_ID in (error.details() or "")


async def test_invalid_sampling_is_invalid_argument(served: Any) -> None:
    error = await _expect_status(served, served.chat(max_tokens=4, temperature=5.0))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature" in (error.details() or "")


async def test_empty_messages_are_invalid_argument(served: Any) -> None:
    request = pb.GenerateRequest(model=MODEL_ID, chat=pb.ChatInput())
    error = await _expect_status(served, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "messages" in (error.details() or "")


async def test_empty_prompt_starts_from_the_bos_token(served: Any) -> None:
    result = await served.generate(served.prompt("", max_tokens=4, temperature=0.0))
    assert result.complete.usage.prompt_tokens == 1
    assert result.complete.usage.completion_tokens == 4


async def test_tokenize_counts_what_generate_uses(served: Any) -> None:
    chat = served.chat("How many tokens is this?")
    tokenized = await served.stub.Tokenize(pb.TokenizeRequest(model=MODEL_ID, chat=chat.chat))
    generated = await served.generate(served.chat("How many tokens is this?", max_tokens=1))
    assert tokenized.count == len(tokenized.token_ids) == generated.complete.usage.prompt_tokens
    assert tokenized.context_length == 512

    prompt = await served.stub.Tokenize(pb.TokenizeRequest(model=MODEL_ID, prompt="Hello world"))
    generated = await served.generate(served.prompt("Hello world", max_tokens=1))
    assert prompt.count == generated.complete.usage.prompt_tokens


async def test_tokenize_unknown_model_is_not_found(served: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await served.stub.Tokenize(pb.TokenizeRequest(model="nope", prompt="x"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_list_models(served: Any) -> None:
    reply = await served.stub.ListModels(pb.ListModelsRequest())
    (model,) = reply.models
    assert model.id == MODEL_ID
    assert model.backend == "llama_cpp"
    assert model.context_length == 512
    assert model.supports_json_schema
    assert model.supports_logprobs


async def test_idle_load_report(served: Any) -> None:
    report = await served.stub.GetLoad(pb.GetLoadRequest())
    assert (report.running, report.waiting) == (0, 0)
    assert report.max_sequences == 4
    assert report.kv_cache_usage == 0.0
