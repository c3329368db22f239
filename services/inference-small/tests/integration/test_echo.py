"""Echo (text completions' `echo`): the prompt sent back first, scored token by token when
logprobs are asked for; what evaluation harnesses use for log-likelihoods. On a tiny model
whose tokenizer adds BOS (as Llama's does), with prefill chunks of 16 tokens so a prompt's
scores span several decode steps; every score is checked against llama.cpp itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import llama_cpp
import numpy as np
import pytest
from lalo.inference.v1 import inference_pb2 as pb
from lalo_common.errors import error_param
from lalo_testing.tiny_model import write_model

from .conftest import Served

PROMPT = "The weather today is warm and the children play outside in the park near the river"


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-chat-bos.gguf"
    return write_model(path, "tiny", seed=0, add_bos=True)


@pytest.fixture(scope="module")
def engine_options() -> dict[str, Any]:
    return {"n_ctx": 512, "parallel": 2, "threads": 1, "n_batch": 16}


@pytest.fixture(scope="module")
def reference(tiny_model_path: Path) -> tuple[list[int], np.ndarray]:
    """The prompt's token ids and every position's log-probabilities, from llama.cpp."""
    llm = llama_cpp.Llama(str(tiny_model_path), n_ctx=256, logits_all=True, verbose=False)
    ids = llm.tokenize(PROMPT.encode(), add_bos=True)
    assert ids[0] == llm.token_bos()
    llm.eval(ids)
    scores = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    return ids, scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


async def test_echo_sends_the_prompt_first_then_the_answer(served: Served) -> None:
    result = await served.generate(served.prompt(PROMPT, max_tokens=4, temperature=0, echo=True))
    first, *rest = result.chunks
    assert (first.echo, first.text, list(first.tokens)) == (True, PROMPT, [])
    assert rest
    assert not any(chunk.echo for chunk in rest)
    assert result.complete is not None
    assert result.complete.usage.completion_tokens == 4  # the echo is not a completion


async def test_echo_with_logprobs_scores_every_prompt_token(
    served: Served, reference: tuple[list[int], np.ndarray]
) -> None:
    ids, log_probs = reference
    assert len(ids) > 2 * 16  # several prefill steps
    result = await served.generate(
        served.prompt(PROMPT, max_tokens=0, echo=True, logprobs=True, top_logprobs=3)
    )
    (echo,) = result.chunks
    assert echo.echo
    assert echo.text == PROMPT
    # BOS is not in the prompt's text: the tokens shown start after it, each scored given
    # everything before it (BOS included), so every one has a logprob.
    assert [t.token_id for t in echo.tokens] == ids[1:]
    assert all(t.HasField("logprob") for t in echo.tokens)
    # (Prefill in 16-token chunks sums floats in another order than one 40-token pass:
    # the last digits differ.)
    expected = [log_probs[i, ids[i + 1]] for i in range(len(ids) - 1)]
    assert [t.logprob for t in echo.tokens] == pytest.approx(expected, abs=1e-2)
    for position, token in enumerate(echo.tokens):
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob == pytest.approx(log_probs[position].max(), abs=1e-2)
        for alternative in token.top_logprobs:
            assert alternative.logprob == pytest.approx(
                log_probs[position, alternative.token_id], abs=1e-2
            )
    assert result.complete is not None
    assert result.complete.finish_reason == pb.FINISH_REASON_LENGTH
    assert result.complete.usage.prompt_tokens == len(ids)
    assert result.complete.usage.completion_tokens == 0


async def test_an_echo_does_not_change_what_is_generated(served: Served) -> None:
    plain = await served.generate(served.prompt(PROMPT, max_tokens=6, temperature=0))
    echoed = await served.generate(
        served.prompt(PROMPT, max_tokens=6, temperature=0, echo=True, logprobs=True)
    )
    assert echoed.text == PROMPT + plain.text


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (Served.chat(echo=True), "echo"),
        (Served.prompt(PROMPT, max_tokens=0), "max_tokens"),
    ],
    ids=["chat", "no-tokens-without-echo"],
)
async def test_what_echo_cannot_do_is_refused(
    served: Served, request_: pb.GenerateRequest, param: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await served.generate(request_)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_param(failed.value) == param


# ---- prompts given as token ids (OpenAI's token-array prompt) ----


def token_prompt(ids: list[int], **sampling: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        model=Served.prompt("").model,
        prompt_token_ids=pb.TokenIds(ids=ids),
        sampling=pb.SamplingParams(**sampling),
    )


async def test_a_token_id_prompt_is_the_same_prompt_as_its_text(
    served: Served, reference: tuple[list[int], np.ndarray]
) -> None:
    """The ids the model's tokenizer makes of a text (BOS included) generate what the text
    does, and an echo of them gives the same text and scores."""
    ids, log_probs = reference
    plain = await served.generate(served.prompt(PROMPT, max_tokens=6, temperature=0))
    by_ids = await served.generate(token_prompt(ids, max_tokens=6, temperature=0))
    assert by_ids.text == plain.text
    assert by_ids.complete is not None
    assert by_ids.complete.usage.prompt_tokens == len(ids)
    scored = await served.generate(token_prompt(ids, max_tokens=0, echo=True, logprobs=True))
    (echo,) = scored.chunks
    assert echo.echo
    assert echo.text == PROMPT
    assert [t.token_id for t in echo.tokens] == ids[1:]
    expected = [log_probs[i, ids[i + 1]] for i in range(len(ids) - 1)]
    assert [t.logprob for t in echo.tokens] == pytest.approx(expected, abs=1e-2)


async def test_token_ids_are_used_as_given(
    served: Served, reference: tuple[list[int], np.ndarray]
) -> None:
    """No BOS is added to a token-id prompt: without one the first token has nothing
    before it (no logprob), and the prompt counts exactly the ids sent."""
    ids, _ = reference
    without_bos = ids[1:]
    scored = await served.generate(
        token_prompt(without_bos, max_tokens=0, echo=True, logprobs=True)
    )
    (echo,) = scored.chunks
    assert [t.token_id for t in echo.tokens] == without_bos
    assert not echo.tokens[0].HasField("logprob")
    assert all(t.HasField("logprob") for t in echo.tokens[1:])
    assert scored.complete is not None
    assert scored.complete.usage.prompt_tokens == len(without_bos)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "the prompt is empty"),
        ([1, 2, 10**6], "token id 1000000 is not in"),
        ([1, -3], "token id -3 is not in"),
        ([7] * 600, "maximum context length is 512 tokens"),
    ],
    ids=["empty", "past-the-vocabulary", "negative", "too-long"],
)
async def test_bad_token_id_prompts_are_refused(
    served: Served, ids: list[int], message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await served.generate(token_prompt(ids, max_tokens=4))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (failed.value.details() or "")
