"""Contract suite: the official openai SDK (and raw HTTP where the SDK hides the wire) against
gateway + router + inference-small started as real processes on the tiny random model.

One stack per session (``lalo_stack`` from lalo_testing.plugin). The model's weights are
random, so tests never check what it says, only how it is said: shapes, limits, and
properties that hold for any model (greedy and seeded decoding repeat, schemas constrain).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from lalo_testing.stack import Stack
from lalo_testing.vocab import Vocab

TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def vocab(tiny_model_path: Path) -> Vocab:
    loaded = Vocab.from_gguf(tiny_model_path)
    assert loaded.special, "the tiny model should declare its special tokens"
    assert '"' in loaded.ids
    assert "}" in loaded.ids
    return loaded


@pytest.fixture(scope="session")
def stack(lalo_stack: Stack) -> Stack:
    return lalo_stack


@pytest.fixture(scope="session")
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=stack.base_url, api_key=stack.api_key, max_retries=0, timeout=TIMEOUT_S
    ) as sdk:
        yield sdk


@pytest.fixture
async def aclient(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(
        base_url=stack.base_url, api_key=stack.api_key, max_retries=0, timeout=TIMEOUT_S
    )
    try:
        yield sdk
    finally:
        await sdk.close()


@pytest.fixture(scope="session")
def http(stack: Stack) -> Iterator[httpx.Client]:
    """Raw HTTP with the stack's key, for what the SDK hides (SSE lines, headers, errors)."""
    with httpx.Client(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {stack.api_key}"},
        timeout=TIMEOUT_S,
    ) as raw:
        yield raw


@pytest.fixture(scope="session")
def anonymous(stack: Stack) -> Iterator[httpx.Client]:
    """Raw HTTP without credentials."""
    with httpx.Client(base_url=stack.gateway_url, timeout=TIMEOUT_S) as raw:
        yield raw
