"""The permission matrix."""

from __future__ import annotations

import pytest
from lalo_gateway.security.rbac import (
    MATRIX,
    Permission,
    Role,
    allows,
    parse_role,
    roles_lacking,
    strongest_role,
)


def test_admin_holds_every_permission() -> None:
    assert all(allows(Role.ADMIN, p) for p in Permission)


def test_developer_cannot_administer() -> None:
    assert allows(Role.DEVELOPER, Permission.INFERENCE)
    for perm in (Permission.KEYS_ADMIN, Permission.AUDIT_READ, Permission.SECRETS_ADMIN):
        assert not allows(Role.DEVELOPER, perm)


def test_viewer_reads_only() -> None:
    assert MATRIX[Role.VIEWER] == {Permission.MODELS_READ, Permission.WORKFLOWS_READ}


def test_only_read_permissions_are_held_by_every_role() -> None:
    universal = {perm for perm in Permission if not roles_lacking(perm)}
    assert universal == {Permission.MODELS_READ, Permission.WORKFLOWS_READ}
    assert all(Role.ADMIN not in roles_lacking(perm) for perm in Permission)


def test_role_parsing() -> None:
    assert parse_role(" Admin ") is Role.ADMIN
    with pytest.raises(ValueError, match="known roles"):
        parse_role("root")
    assert strongest_role(["viewer", "developer", "other"]) is Role.DEVELOPER
    assert strongest_role(["other"]) is None
