import asyncio

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
