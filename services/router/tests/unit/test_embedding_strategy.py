"""The embedding strategy classifies off the event loop, so one slow classification (the
full MiniLM on an unsure prompt) does not stall the other requests' token relays."""

from __future__ import annotations

import asyncio
import threading

from lalo_router.classify.model import Classification
from lalo_router.policy import EmbeddingStrategy


def classification() -> Classification:
    return Classification(
        label="math", confidence=0.9, p_escalate=0.1, scores={"math": 0.9}, latency_ms=1.0
    )


class GatedClassifier:
    """Blocks, as onnxruntime does with the GIL released, until the test lets it finish."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.thread = ""

    def classify(self, text: str) -> Classification:
        self.thread = threading.current_thread().name
        self.started.set()
        if not self.release.wait(timeout=5):
            raise TimeoutError("the event loop never ran while classifying")
        return classification()


async def test_the_loop_keeps_running_while_a_prompt_is_classified() -> None:
    classifier = GatedClassifier()
    strategy = EmbeddingStrategy(classifier)
    try:
        pending = asyncio.create_task(strategy.classify("what is 2 + 2?"))
        assert await asyncio.to_thread(classifier.started.wait, 5)
        # Only a free loop gets here while classify() is still blocked.
        classifier.release.set()
        result = await pending
    finally:
        await strategy.close()
    assert result.label == "math"
    assert classifier.thread.startswith("classify")


class PairedClassifier:
    """Finishes only when two classifications are in progress at the same time."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=5)

    def classify(self, text: str) -> Classification:
        self.barrier.wait()
        return classification()


async def test_two_prompts_are_classified_at_once() -> None:
    strategy = EmbeddingStrategy(PairedClassifier())
    try:
        results = await asyncio.gather(strategy.classify("a"), strategy.classify("b"))
    finally:
        await strategy.close()
    assert [r.label for r in results] == ["math", "math"]
