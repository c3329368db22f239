"""Roles, permissions and the matrix between them.

Every route names the one permission it needs (``deps.require(Permission.X)``); the route
sweep test reads that back from the app's route table, so a route without a permission is a
failing test rather than an open door.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    ADMIN = "admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"


class Permission(enum.StrEnum):
    INFERENCE = "inference"  # chat/completions, completions, embeddings
    MODELS_READ = "models:read"
    WORKFLOWS_WRITE = "workflows:write"  # create, cancel
    WORKFLOWS_READ = "workflows:read"
    KEYS_ADMIN = "admin:keys"
    AUDIT_READ = "admin:audit"
    SECRETS_ADMIN = "admin:secrets"


MATRIX: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.DEVELOPER: frozenset(
        {
            Permission.INFERENCE,
            Permission.MODELS_READ,
            Permission.WORKFLOWS_WRITE,
            Permission.WORKFLOWS_READ,
        }
    ),
    Role.VIEWER: frozenset({Permission.MODELS_READ, Permission.WORKFLOWS_READ}),
}

# Highest first: a token carrying several roles gets the strongest one it names.
_PRECEDENCE = (Role.ADMIN, Role.DEVELOPER, Role.VIEWER)


def allows(role: Role, permission: Permission) -> bool:
    return permission in MATRIX[role]


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {value!r}; known roles: {known}") from None


def strongest_role(names: list[str]) -> Role | None:
    """The strongest LALO role among ``names`` (unknown names are ignored)."""
    given = {n.strip().lower() for n in names}
    for role in _PRECEDENCE:
        if role.value in given:
            return role
    return None


def roles_lacking(permission: Permission) -> list[Role]:
    return [role for role in Role if permission not in MATRIX[role]]
