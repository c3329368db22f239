from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from lalo_common import aio


def test_run_returns_the_coroutines_result_on_uvloop() -> None:
    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert aio.run(main()).startswith("uvloop")


def test_run_propagates_exceptions() -> None:
    async def main() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        aio.run(main())


async def test_aclose_closes_a_generator_and_leaves_other_iterators_alone() -> None:
    closed: list[bool] = []

    async def stream() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    gen = stream()
    assert await anext(gen) == 1
    await aio.aclose(gen)
    assert closed == [True]

    class Plain:
        def __aiter__(self) -> Plain:
            return self

        async def __anext__(self) -> int:
            raise StopAsyncIteration

    await aio.aclose(Plain())  # nothing to close: no error
