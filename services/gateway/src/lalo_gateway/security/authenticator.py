"""One entry point for credentials: a bearer value is a JWT (when JWT is enabled and the
value has a JWT's shape) or an API key. Blocking work (database, JWKS) runs off the loop."""

from __future__ import annotations

import asyncio
import logging

from lalo_common.errors import Unavailable
from sqlalchemy.exc import SQLAlchemyError

from lalo_gateway.security.apikeys import ApiKeyService
from lalo_gateway.security.errors import AuthenticationFailed
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.tokens import TokenVerifier, looks_like_jwt

log = logging.getLogger(__name__)

MISSING_CREDENTIALS = (
    "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
    "(an API key or, where enabled, a JWT)."
)
MALFORMED_HEADER = "Malformed Authorization header: expected 'Bearer <key>'."


def bearer_credential(authorization: str | None) -> str:
    """The credential in an ``Authorization`` value; raises when it is missing or malformed."""
    if not authorization:
        raise AuthenticationFailed(MISSING_CREDENTIALS)
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        raise AuthenticationFailed(MALFORMED_HEADER)
    return credential


class Authenticator:
    def __init__(self, keys: ApiKeyService, tokens: TokenVerifier) -> None:
        self.keys = keys
        self.tokens = tokens

    async def authenticate(self, credential: str) -> Principal:
        if len(credential) > 8192:
            raise AuthenticationFailed("Credential too long.")
        if self.tokens.enabled and looks_like_jwt(credential):
            return await asyncio.to_thread(self.tokens.verify, credential)
        cached = self.keys.cached(credential)
        if cached is not None:
            return cached
        try:
            return await asyncio.to_thread(self.keys.authenticate, credential)
        except SQLAlchemyError as exc:
            # No traceback: the statement's parameters would carry the key's hash.
            log.warning("API key lookup failed: database unavailable (%s)", type(exc).__name__)
            raise Unavailable(
                "Authentication is temporarily unavailable; try again shortly."
            ) from None

    async def authenticate_header(self, authorization: str | None) -> Principal:
        return await self.authenticate(bearer_credential(authorization))
