"""Several streams at once: every one completes, none is starved or mixed with another."""

from __future__ import annotations

import asyncio

import openai
import pytest
from lalo_testing.vocab import Vocab

pytestmark = pytest.mark.contract

STREAMS = 6
MAX_TOKENS = 10


async def test_concurrent_streams_all_complete(aclient: openai.AsyncOpenAI, vocab: Vocab) -> None:
    async def one(index: int) -> tuple[str, str, str | None, int]:
        stream = await aclient.chat.completions.create(
            model="tiny-chat",
            messages=[{"role": "user", "content": f"Question number {index}: why?"}],
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
            logit_bias=vocab.no_eos(),
        )
        ids: set[str] = set()
        text: list[str] = []
        finish: str | None = None
        completion_tokens = -1
        async for chunk in stream:
            ids.add(chunk.id)
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                completion_tokens = chunk.usage.completion_tokens
        assert len(ids) == 1
        return ids.pop(), "".join(text), finish, completion_tokens

    results = await asyncio.gather(*(one(i) for i in range(STREAMS)))
    assert len({completion_id for completion_id, *_ in results}) == STREAMS
    for _, text, finish, completion_tokens in results:
        assert text
        assert finish == "length"
        assert completion_tokens == MAX_TOKENS


async def test_batched_streams_match_a_lone_request(
    aclient: openai.AsyncOpenAI, vocab: Vocab
) -> None:
    # Batching must not mix sequences up: a greedy request gives the same text alone and
    # among other streams (different prompts, so any cross-talk would show).
    async def text(topic: str) -> str:
        stream = await aclient.chat.completions.create(
            model="tiny-chat",
            messages=[{"role": "user", "content": f"Tell me a story about {topic}."}],
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            logit_bias=vocab.no_eos(),
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    alone = await text("rain")
    together = await asyncio.gather(text("rain"), text("snow"), text("fog"), text("rain"))
    assert together[0] == alone
    assert together[3] == alone
