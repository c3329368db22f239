"""The inputs and percentiles both embedding benchmarks use (llama.cpp and vLLM)."""

from __future__ import annotations

SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome and everyone should see it this weekend.",
    "How do I reset my password if I no longer have access to my email account?",
    "Quarterly revenue grew by twelve percent, driven mostly by the services business.",
    "The cat sits outside.",
    "Which planet in the solar system has the most moons, and how were they discovered?",
    "Please summarise the attached meeting notes in three bullet points for the team.",
    "Paris is the capital and most populous city of France.",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def batch_of(size: int, round_no: int) -> list[str]:
    """``size`` texts, different in every round, so no layer can answer from a cache."""
    return [f"{SENTENCES[i % len(SENTENCES)]} ({round_no}.{i})" for i in range(size)]
