"""FastAPI dependencies as ``Annotated`` aliases: the caller's identity and the request id."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import Depends, Request
from lalo_common.auth import matches_any

from lalo_gateway.security.authenticator import bearer_credential
from lalo_gateway.security.errors import AuthenticationFailed
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.rbac import Role

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(request: Request) -> str:
    """The caller's request id when well-formed, else a fresh one; kept on request.state."""
    existing = getattr(request.state, "request_id", None)
    if existing:
        return str(existing)
    given = request.headers.get(REQUEST_ID_HEADER, "")
    value = given if _REQUEST_ID.match(given) else f"req_{uuid.uuid4().hex}"
    request.state.request_id = value
    return value


async def static_key_principal(request: Request) -> Principal:
    """Bearer keys from LALO_API_KEYS, every key compared in constant time."""
    credential = bearer_credential(request.headers.get("authorization"))
    keys: list[str] = request.app.state.static_keys
    if not matches_any(credential, keys):
        raise AuthenticationFailed("Incorrect API key provided. Check the key you are sending.")
    return Principal(
        subject="static-key", role=Role.DEVELOPER, kind="api_key", key_prefix=credential[:8]
    )


RequestId = Annotated[str, Depends(request_id)]
CurrentPrincipal = Annotated[Principal, Depends(static_key_principal)]
