"""Request classification for routing: category (chat, code, math, ...) and the probability
that the small model will not be good enough (``p_escalate``).

    from lalo_router.classify import load_classifier, text_from_messages
    classifier = load_classifier()          # once, at start-up (~0.3 s)
    result = classifier.classify(text_from_messages(messages))
    result.label, result.confidence, result.p_escalate, result.scores, result.latency_ms
"""

from lalo_router.classify.messages import text_from_messages
from lalo_router.classify.model import (
    DEFAULT_ARTIFACT,
    OTHER,
    ArtifactError,
    Classification,
    Classifier,
    load_classifier,
)

__all__ = [
    "DEFAULT_ARTIFACT",
    "OTHER",
    "ArtifactError",
    "Classification",
    "Classifier",
    "load_classifier",
    "text_from_messages",
]
