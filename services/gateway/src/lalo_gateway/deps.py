"""FastAPI dependencies as ``Annotated`` aliases: the caller's identity (checked against the
permission a route needs, and within its rate limit) and the request id.

Every route except the public probes takes one of the permission aliases below; the route
sweep test (tests/integration/test_route_sweep.py) fails for a route that does not.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lalo_gateway.security.http import (
    REQUEST_ID_HEADER,
    authenticated_principal,
    make_request_id,
    permission,
)
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.rbac import Permission

__all__ = ["REQUEST_ID_HEADER", "make_request_id"]


async def request_id(request: Request) -> str:
    """The request id, kept on request.state (the audit middleware sets it first)."""
    existing = getattr(request.state, "request_id", None)
    if existing:
        return str(existing)
    value = make_request_id(request.headers.get(REQUEST_ID_HEADER, ""))
    request.state.request_id = value
    return value


RequestId = Annotated[str, Depends(request_id)]

# Authenticated, with no permission check: not for routes (the sweep test rejects a route
# guarded only by this); for code that needs the caller after a permission alias ran.
CurrentPrincipal = Annotated[Principal, Depends(authenticated_principal)]

InferencePrincipal = Annotated[Principal, permission(Permission.INFERENCE)]
ModelsReader = Annotated[Principal, permission(Permission.MODELS_READ)]
WorkflowWriter = Annotated[Principal, permission(Permission.WORKFLOWS_WRITE)]
WorkflowReader = Annotated[Principal, permission(Permission.WORKFLOWS_READ)]
KeysAdmin = Annotated[Principal, permission(Permission.KEYS_ADMIN)]
AuditReader = Annotated[Principal, permission(Permission.AUDIT_READ)]
