"""Fernet encryption with key rotation."""

from __future__ import annotations

import pytest
from lalo_common.errors import FailedPrecondition
from lalo_gateway.security.secretbox import SecretBox, generate_secret_key, parse_keys, rotate_all


def test_round_trip_and_rotation() -> None:
    old, new = generate_secret_key(), generate_secret_key()
    token = SecretBox([old]).encrypt("upstream-password")
    assert b"upstream-password" not in token
    rotating = SecretBox([new, old])
    store = {"upstream": token}
    assert rotate_all(rotating, list(store.items()), store.__setitem__) == 1
    assert SecretBox([new]).decrypt(store["upstream"]) == "upstream-password"
    with pytest.raises(FailedPrecondition, match="cannot be decrypted"):
        SecretBox([old]).decrypt(store["upstream"])


def test_rotation_without_the_old_key_fails_clearly() -> None:
    token = SecretBox([generate_secret_key()]).encrypt("x")
    with pytest.raises(FailedPrecondition, match="old key"):
        SecretBox([generate_secret_key()]).rotate(token)


def test_missing_or_malformed_keys() -> None:
    with pytest.raises(FailedPrecondition, match="SECRET_KEYS"):
        SecretBox([])
    with pytest.raises(FailedPrecondition, match="malformed"):
        SecretBox(["not-a-key"])
    assert parse_keys(" a, ,b ") == ["a", "b"]
