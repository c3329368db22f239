"""Credential primitives shared by the gateway and internal services."""

from __future__ import annotations

import hmac

SERVICE_TOKEN_METADATA = "x-lalo-service-token"  # noqa: S105 - a header name
REQUEST_ID_METADATA = "x-request-id"


def constant_time_equals(given: str, expected: str) -> bool:
    """Compare secrets without leaking their common prefix length through timing."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def matches_any(given: str, candidates: list[str]) -> bool:
    """True when ``given`` equals one of ``candidates``; every candidate is compared."""
    found = False
    for candidate in candidates:
        found |= constant_time_equals(given, candidate)
    return found
