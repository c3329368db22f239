"""Which part of a conversation to classify: the last user turn."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MAX_CHARS = 4000


def _content(message: Any) -> str:
    content = (
        message.get("content") if isinstance(message, Mapping) else getattr(message, "content", "")
    )
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        parts = [p.get("text", "") for p in content if isinstance(p, Mapping)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return "" if content is None else str(content)


def _role(message: Any) -> str:
    role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", "")
    return role if isinstance(role, str) else ""


def text_from_messages(messages: Iterable[Any]) -> str:
    """The last non-empty user message (or, without one, the last non-empty message of any
    role), cut to its head and tail. Earlier turns are left out on purpose: a short follow-up
    ("thanks!") after a code answer is chat, not code. Accepts dicts or objects with
    ``role``/``content`` and unusual roles; never raises."""
    try:
        items = list(messages)
    except TypeError:
        return ""
    texts = [(_role(m), _content(m)) for m in items]
    users = [t for role, t in texts if role == "user" and t.strip()]
    others = [t for _, t in texts if t.strip()]
    text = users[-1] if users else (others[-1] if others else "")
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS // 2] + "\n" + text[-MAX_CHARS // 2 :]
    return text
