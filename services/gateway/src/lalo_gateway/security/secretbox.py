"""Encryption of secrets the platform stores (upstream and tool credentials).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a :class:`MultiFernet`: the
first key encrypts, every key decrypts, so a new key is rolled out by putting it first and
running ``lalo-gateway secrets rotate``, which re-encrypts every stored value under it; the
old key can then be removed. Keys come from ``LALO_GATEWAY_SECRET_KEYS`` (comma-separated,
newest first), e.g. mounted from a Kubernetes Secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from lalo_common.errors import FailedPrecondition


def generate_secret_key() -> str:
    return Fernet.generate_key().decode()


def parse_keys(value: str) -> list[str]:
    return [k.strip() for k in value.split(",") if k.strip()]


class SecretBox:
    def __init__(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            raise FailedPrecondition(
                "no encryption key configured: set LALO_GATEWAY_SECRET_KEYS "
                "(generate one with `lalo-gateway secrets generate-key`)"
            )
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except ValueError:
            raise FailedPrecondition(
                "LALO_GATEWAY_SECRET_KEYS holds a malformed key (expected url-safe base64 "
                "of 32 bytes, as `lalo-gateway secrets generate-key` prints)"
            ) from None

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken:
            raise FailedPrecondition(
                "a stored secret cannot be decrypted with the configured keys "
                "(was the key that encrypted it removed?)"
            ) from None

    def rotate(self, token: bytes) -> bytes:
        """``token`` re-encrypted under the newest key."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise FailedPrecondition(
                "a stored secret cannot be decrypted with the configured keys; "
                "rotation needs the old key listed after the new one"
            ) from None


def rotate_all(
    box: SecretBox,
    items: Iterable[tuple[str, bytes]],
    write: Callable[[str, bytes], None],
) -> int:
    """Re-encrypt every ``(name, ciphertext)`` under the newest key; returns the count."""
    count = 0
    for name, token in items:
        write(name, box.rotate(token))
        count += 1
    return count
