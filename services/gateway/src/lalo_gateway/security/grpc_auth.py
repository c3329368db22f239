"""The same credentials on the gateway's public gRPC API: each servicer method starts with
``principal = await authorize_call(runtime, context, Permission.X)``.

The credential travels in the ``authorization`` metadata (``Bearer <key or JWT>``). Failures
are domain errors, so the server factory's interceptor turns them into UNAUTHENTICATED,
PERMISSION_DENIED and RESOURCE_EXHAUSTED. The public server is built without the internal
service token (clients are users, not LALO services).
"""

from __future__ import annotations

from typing import Any, Protocol

from lalo_gateway.security.errors import Forbidden
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.rbac import Permission
from lalo_gateway.security.runtime import SecurityRuntime

AUTHORIZATION_METADATA = "authorization"


class _Context(Protocol):
    def invocation_metadata(self) -> Any: ...


def metadata_value(context: _Context, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        name, value = (item.key, item.value) if hasattr(item, "key") else item
        if name == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


async def authorize_call(
    runtime: SecurityRuntime, context: _Context, permission: Permission
) -> Principal:
    principal = await runtime.authenticator.authenticate_header(
        metadata_value(context, AUTHORIZATION_METADATA)
    )
    if not principal.can(permission):
        raise Forbidden(
            f"Your role '{principal.role.value}' does not have permission '{permission.value}'."
        )
    await runtime.limiter.admit(principal)
    return principal
