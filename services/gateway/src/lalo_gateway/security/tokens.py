"""JWT verification (OIDC access tokens) with PyJWT: signatures, ``exp``/``nbf``/``iss``/
``aud``, and the claim that carries roles.

Production verifies RS256/ES256 against a JWKS URL (keys picked by ``kid``; an unknown
``kid`` is rejected) or a configured PEM public key. Development ("demo") mode accepts HS256
with a shared secret. The accepted algorithms are fixed by configuration and never read from
the token, which is what defeats ``alg: none`` and HS/RS confusion.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any

import jwt
from jwt import PyJWKClient

from lalo_gateway.security.errors import AuthenticationFailed, Forbidden
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.rbac import Role, strongest_role
from lalo_gateway.security.settings import SecuritySettings

log = logging.getLogger(__name__)

INVALID_TOKEN_MESSAGE = "Invalid bearer token."  # noqa: S105 - a message, not a secret
_INVALID = INVALID_TOKEN_MESSAGE + " "


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments whose first decodes to a JSON object with ``alg``."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0]:
        return False
    try:
        padded = parts[0] + "=" * (-len(parts[0]) % 4)
        header = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header


class TokenVerifier:
    def __init__(self, settings: SecuritySettings) -> None:
        self._mode = settings.jwt_mode
        self._issuer = settings.jwt_issuer or None
        self._audience = settings.jwt_audience or None
        self._leeway = settings.jwt_leeway_s
        self._roles_claim = settings.jwt_roles_claim
        self._subject_claim = settings.jwt_subject_claim
        self._role_map = {k.lower(): v for k, v in settings.jwt_role_map.items()}
        self._rpm, self._tpm = settings.default_rpm, settings.default_tpm
        self._jwks: PyJWKClient | None = None
        self._key: Any = None
        if self._mode == "hs256":
            self._algorithms = ["HS256"]
            self._key = settings.jwt_hs256_secret.get_secret_value()
        else:
            self._algorithms = [a for a in settings.jwt_algorithms if not a.startswith("HS")]
        if self._mode == "jwks":
            self._jwks = PyJWKClient(
                settings.jwt_jwks_url,
                cache_keys=True,
                lifespan=max(1, settings.jwt_jwks_cache_s),
                timeout=5,
            )
        elif self._mode == "pem":
            self._key = settings.jwt_public_key_pem.encode()

    @property
    def enabled(self) -> bool:
        return self._mode != "off"

    def verify(self, token: str) -> Principal:
        """Verify ``token`` and build the principal; blocking (the JWKS fetch), so the
        HTTP edge calls it off the event loop."""
        if not self.enabled:
            raise AuthenticationFailed(INVALID_TOKEN_MESSAGE)
        claims = self._decode(token)
        subject = _claim(claims, self._subject_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed(_INVALID + "The token has no subject.")
        role = self._role_of(claims)
        return Principal(subject=subject, role=role, kind="jwt", rpm=self._rpm, tpm=self._tpm)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationFailed(INVALID_TOKEN_MESSAGE) from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            log.info("rejected a token signed with %r (accepted: %s)", alg, self._algorithms)
            raise AuthenticationFailed(_INVALID + "Algorithm not accepted.")
        key = self._key
        if self._jwks is not None:
            try:
                key = self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError:
                log.warning("could not fetch the JWKS to verify a token")
                raise AuthenticationFailed(_INVALID + "Signing keys are unavailable.") from None
            except jwt.PyJWTError:
                raise AuthenticationFailed(_INVALID + "Unknown signing key.") from None
        required = ["exp"]
        if self._issuer:
            required.append("iss")
        if self._audience:
            required.append("aud")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": required, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed(_INVALID + "The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationFailed(_INVALID + "The token is not valid yet.") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationFailed(_INVALID + "Wrong issuer.") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationFailed(_INVALID + "Wrong audience.") from None
        except (jwt.PyJWTError, TypeError, ValueError):
            # TypeError/ValueError: a key of the wrong type for the token's algorithm.
            raise AuthenticationFailed(INVALID_TOKEN_MESSAGE) from None
        return claims

    def _role_of(self, claims: Mapping[str, Any]) -> Role:
        raw = _claim(claims, self._roles_claim)
        if isinstance(raw, str):
            names = raw.replace(",", " ").split()
        elif isinstance(raw, list):
            names = [n for n in raw if isinstance(n, str)]
        else:
            names = []
        mapped = [self._role_map.get(n.lower(), n) for n in names]
        role = strongest_role(mapped)
        if role is None:
            raise Forbidden(
                f"The token carries no LALO role in claim {self._roles_claim!r} "
                "(expected one of admin, developer, viewer)."
            )
        return role


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value
