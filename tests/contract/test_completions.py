"""POST /v1/completions (legacy text completions) through the official SDK and on the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from lalo_testing.openai_wire import parse_sse
from lalo_testing.vocab import Vocab

pytestmark = pytest.mark.contract

MODEL = "tiny-chat"
PROMPT = "The weather today is"


def test_non_streamed_completion(client: openai.OpenAI, vocab: Vocab) -> None:
    completion = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=6, logit_bias=vocab.no_eos()
    )
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.model == MODEL
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.text
    assert choice.finish_reason == "length"
    assert choice.logprobs is None
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_default_max_tokens_is_16(client: openai.OpenAI, vocab: Vocab) -> None:
    completion = client.completions.create(model=MODEL, prompt=PROMPT, logit_bias=vocab.no_eos())
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 16
    assert completion.choices[0].finish_reason == "length"


def test_streamed_completion_through_the_sdk(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, stream=True))
    assert len(chunks) >= 2
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "text_completion" for c in chunks)
    reasons = [c.choices[0].finish_reason for c in chunks]
    assert reasons[-1] in ("stop", "length")
    assert all(reason is None for reason in reasons[:-1])
    assert "".join(c.choices[0].text for c in chunks)


def test_stream_wire_format_with_usage(http: httpx.Client, vocab: Vocab) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": vocab.no_eos(),
    }
    with http.stream("POST", "/v1/completions", json=body) as response:
        lines = list(response.iter_lines())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-lalo-model"] == MODEL
    *events, usage_event = parse_sse(lines)
    assert usage_event["choices"] == []
    assert usage_event["usage"]["completion_tokens"] == 4
    assert all(event["usage"] is None for event in events)
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_completion_logprobs(client: openai.OpenAI, vocab: Vocab) -> None:
    completion = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=5, logprobs=2, logit_bias=vocab.no_eos()
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens is not None
    assert logprobs.token_logprobs is not None
    assert logprobs.top_logprobs is not None
    assert logprobs.text_offset is not None
    assert len(logprobs.tokens) == 5
    assert len(logprobs.token_logprobs) == 5
    assert len(logprobs.top_logprobs) == 5
    assert all(value <= 0 for value in logprobs.token_logprobs)
    # Alternatives are keyed by their text; two alternatives with the same text collapse.
    assert all(1 <= len(alternatives) <= 2 for alternatives in logprobs.top_logprobs)
    # Offsets index the completion's text.
    offsets = logprobs.text_offset
    assert offsets[0] == 0
    assert offsets == sorted(offsets)
    assert offsets[-1] <= len(completion.choices[0].text)


def test_completion_logprobs_streamed(http: httpx.Client, vocab: Vocab) -> None:
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": 4,
        "stream": True,
        "logprobs": 1,
        "logit_bias": vocab.no_eos(),
    }
    with http.stream("POST", "/v1/completions", json=body) as response:
        events = parse_sse(response.iter_lines())
    text = "".join(e["choices"][0]["text"] for e in events)
    with_logprobs = [e["choices"][0]["logprobs"] for e in events if e["choices"][0]["logprobs"]]
    tokens = [token for lp in with_logprobs for token in lp["tokens"]]
    offsets = [offset for lp in with_logprobs for offset in lp["text_offset"]]
    assert len(tokens) == 4
    # Offsets run on across chunks: they index the whole completion's text.
    assert offsets[0] == 0
    assert offsets == sorted(offsets)
    assert offsets[-1] <= len(text)


def test_stop_sequence(client: openai.OpenAI, vocab: Vocab) -> None:
    def greedy(**extra: Any) -> Any:
        return client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=30,
            temperature=0,
            logit_bias=vocab.no_eos(),
            **extra,
        )

    full = greedy().choices[0].text
    stop = next(
        full[i : i + 2]
        for i in range(4, len(full) - 2)
        if full[i : i + 2].isascii() and full[i : i + 2].isalnum()
    )
    cut = greedy(stop=stop)
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_seed(client: openai.OpenAI, vocab: Vocab) -> None:
    def sample() -> str:
        return (
            client.completions.create(
                model=MODEL,
                prompt=PROMPT,
                max_tokens=12,
                temperature=0.8,
                seed=42,
                logit_bias=vocab.no_eos(),
            )
            .choices[0]
            .text
        )

    assert sample() == sample()


def test_several_choices(client: openai.OpenAI, vocab: Vocab) -> None:
    completion = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        n=2,
        max_tokens=4,
        logprobs=1,
        logit_bias=vocab.no_eos(),
    )
    assert [c.index for c in completion.choices] == [0, 1]
    for choice in completion.choices:
        assert choice.text
        assert choice.finish_reason == "length"
        assert choice.logprobs is not None
        assert len(choice.logprobs.tokens or []) == 4
        # Offsets index each choice's own text.
        assert (choice.logprobs.text_offset or [None])[0] == 0
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2 * 4


def test_a_list_of_prompts(client: openai.OpenAI, vocab: Vocab) -> None:
    """OpenAI's batch form: one response, n choices per prompt in prompt order, each
    prompt's tokens counted once."""
    prompts = [PROMPT, "Once upon a time there was"]

    def greedy(prompt: str | list[str], n: int = 1) -> Any:
        return client.completions.create(
            model=MODEL,
            prompt=prompt,
            n=n,
            max_tokens=5,
            temperature=0,
            logprobs=0,
            logit_bias=vocab.no_eos(),
        )

    def logprobs(choice: Any) -> list[float]:
        return list(choice.logprobs.token_logprobs)

    alone = [greedy(prompt) for prompt in prompts]
    batch = greedy(prompts, n=2)
    assert batch.model == MODEL
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    texts = [c.text for c in batch.choices]
    assert texts == [alone[0].choices[0].text] * 2 + [alone[1].choices[0].text] * 2
    # Which prompt a choice answered shows in its logprobs (the tiny model's text may be
    # the same for both): choices 0-1 read the first prompt, 2-3 the second.
    first, second = (logprobs(a.choices[0]) for a in alone)
    assert first != pytest.approx(second, abs=1e-3)
    for choice, expected in zip(batch.choices, [first, first, second, second], strict=True):
        assert logprobs(choice) == pytest.approx(expected, abs=1e-2)
    assert all(c.finish_reason == "length" for c in batch.choices)
    assert batch.usage is not None
    assert batch.usage.prompt_tokens == sum(
        a.usage.prompt_tokens for a in alone if a.usage is not None
    )
    assert batch.usage.completion_tokens == 4 * 5


def test_a_list_of_prompts_streamed(http: httpx.Client, vocab: Vocab) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "prompt": [PROMPT, "Once upon a time there was"],
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": vocab.no_eos(),
    }
    with http.stream("POST", "/v1/completions", json=body) as response:
        lines = list(response.iter_lines())
    assert response.status_code == 200
    *events, usage = parse_sse(lines)
    finished = sorted(
        e["choices"][0]["index"] for e in events if e["choices"][0]["finish_reason"] == "length"
    )
    assert finished == [0, 1]
    assert usage["usage"]["completion_tokens"] == 2 * 3


def test_auto_routes_a_list_of_prompts_once(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model="auto", prompt=["What is 17 * 23?", "Hello!"], max_tokens=2
    )
    completion = raw.parse()
    assert len(completion.choices) == 2
    assert completion.model == raw.headers["x-lalo-model"]
    assert raw.headers["x-lalo-route"]


def test_echo_sends_the_prompt_back_first(client: openai.OpenAI, vocab: Vocab) -> None:
    completion = client.completions.create(
        model=MODEL, prompt=PROMPT, echo=True, max_tokens=3, logit_bias=vocab.no_eos()
    )
    (choice,) = completion.choices
    assert choice.text.startswith(PROMPT)
    assert len(choice.text) > len(PROMPT)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3  # the echo is not a completion


def test_echo_with_logprobs_scores_the_prompt(client: openai.OpenAI, tiny_model_path: Path) -> None:
    """What evaluation harnesses do for log-likelihoods (echo, logprobs, max_tokens=0): the
    prompt back, each token with its log-probability given the ones before, checked
    against raw llama-cpp-python on the same model."""
    import llama_cpp

    completion = client.completions.create(
        model=MODEL, prompt=PROMPT, echo=True, max_tokens=0, logprobs=2, temperature=0
    )
    (choice,) = completion.choices
    assert choice.text == PROMPT
    assert choice.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 0
    logprobs = choice.logprobs
    assert logprobs is not None
    tokens = logprobs.tokens or []
    assert "".join(tokens).strip() == PROMPT.strip()
    assert (logprobs.text_offset or [])[0] == 0
    # The reference: every position's logits from llama.cpp itself.
    llm = llama_cpp.Llama(
        str(tiny_model_path), n_ctx=256, logits_all=True, verbose=False, n_threads=1
    )
    ids = llm.tokenize(PROMPT.encode(), add_bos=True)
    llm.eval(ids)
    scores = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    log_probs = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
    scored = [float(log_probs[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    token_logprobs = logprobs.token_logprobs or []
    top_logprobs = logprobs.top_logprobs or []
    if ids[0] == llm.token_bos():
        # A BOS is not in the prompt's text: the first token shown is scored given it.
        assert token_logprobs == pytest.approx(scored, abs=1e-2)
    else:
        # Nothing before the first token: no logprob for it (null, as OpenAI gives it).
        assert token_logprobs[0] is None
        assert top_logprobs[0] is None
        assert token_logprobs[1:] == pytest.approx(scored, abs=1e-2)
        top_logprobs = top_logprobs[1:]
    assert len(tokens) == len(token_logprobs)
    assert len(scored) >= 3
    for top in top_logprobs:
        assert top is not None
        assert len(top) == 2
        assert max(top.values()) <= 0.0


def test_echo_after_a_generation_scores_it_as_generated(
    client: openai.OpenAI, vocab: Vocab
) -> None:
    """The log-probability of a generated token and of the same token read back in an echo
    are the same number (both are the model's, given the same text before it)."""
    generated = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=3,
        temperature=0,
        logprobs=0,
        logit_bias=vocab.no_eos(),
    )
    (choice,) = generated.choices
    assert choice.logprobs is not None
    echoed = client.completions.create(
        model=MODEL, prompt=PROMPT + choice.text, echo=True, max_tokens=0, logprobs=0
    )
    back = echoed.choices[0].logprobs
    assert back is not None
    if (back.tokens or [])[-3:] != choice.logprobs.tokens:
        pytest.skip("the generated text tokenises differently when read back")
    assert (back.token_logprobs or [])[-3:] == pytest.approx(
        choice.logprobs.token_logprobs, abs=1e-2
    )


# ---- token-id prompts (OpenAI's token-array form; lm-evaluation-harness's default) ----


def prompt_ids(tiny_model_path: Path, text: str) -> list[int]:
    """The served model's own ids for ``text``, as a client with its tokenizer makes them."""
    import llama_cpp

    llm = llama_cpp.Llama(str(tiny_model_path), vocab_only=True, verbose=False)
    return list(llm.tokenize(text.encode(), add_bos=True))


def test_a_token_id_prompt_answers_as_its_text(
    client: openai.OpenAI, tiny_model_path: Path, vocab: Vocab
) -> None:
    ids = prompt_ids(tiny_model_path, PROMPT)
    common: dict[str, Any] = {"max_tokens": 5, "temperature": 0, "logit_bias": vocab.no_eos()}
    by_text = client.completions.create(model=MODEL, prompt=PROMPT, **common)
    by_ids = client.completions.create(model=MODEL, prompt=ids, **common)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage is not None
    assert by_ids.usage.prompt_tokens == len(ids)
    # Scoring a tokenized prompt (echo, logprobs, max_tokens 0) gives back its text and the
    # same scores as the text's.
    scored_text = client.completions.create(
        model=MODEL, prompt=PROMPT, echo=True, max_tokens=0, logprobs=0
    )
    scored_ids = client.completions.create(
        model=MODEL, prompt=ids, echo=True, max_tokens=0, logprobs=0
    )
    assert scored_ids.choices[0].text == PROMPT
    text_logprobs, ids_logprobs = scored_text.choices[0].logprobs, scored_ids.choices[0].logprobs
    assert text_logprobs is not None
    assert ids_logprobs is not None
    assert ids_logprobs.tokens == text_logprobs.tokens
    assert ids_logprobs.token_logprobs == text_logprobs.token_logprobs


def test_a_list_of_token_id_prompts_is_answered_per_prompt(
    client: openai.OpenAI, tiny_model_path: Path, vocab: Vocab
) -> None:
    texts = [PROMPT, "Once upon a time"]
    common: dict[str, Any] = {"max_tokens": 4, "temperature": 0, "logit_bias": vocab.no_eos()}
    batch = client.completions.create(
        model=MODEL, prompt=[prompt_ids(tiny_model_path, t) for t in texts], n=2, **common
    )
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    for p, text in enumerate(texts):
        alone = client.completions.create(model=MODEL, prompt=text, **common)
        assert batch.choices[2 * p].text == alone.choices[0].text


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "auto", "prompt": [5, 6, 7]}, "prompt", "need a named model"),
        ({"model": MODEL, "prompt": [5, 10**7]}, "prompt", "not in tiny-chat's vocabulary"),
        ({"model": MODEL, "prompt": [[5, 6], []]}, "prompt[1]", "empty list of token ids"),
        ({"model": MODEL, "prompt": [[5, 6], [5, 10**7]]}, "prompt[1]", "token id 10000000"),
    ],
    ids=["auto", "outside-the-vocabulary", "empty-ids", "one-of-a-list-outside"],
)
def test_bad_token_id_prompts_are_refused_by_name(
    client: openai.OpenAI, body: dict[str, Any], param: str, fragment: str
) -> None:
    with pytest.raises(openai.BadRequestError) as failed:
        client.completions.create(max_tokens=2, **body)
    error = failed.value.body
    assert isinstance(error, dict)
    assert error["param"] == param
    assert fragment in error["message"]
