"""Who is calling: the verified identity every authenticated request carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lalo_gateway.security.rbac import Permission, Role, allows

PrincipalKind = Literal["api_key", "jwt", "service"]


@dataclass(frozen=True)
class Principal:
    """The verified caller. Built by the authenticator, never from client-supplied headers."""

    subject: str  # key owner or token subject; also the tenant
    role: Role
    kind: PrincipalKind
    key_id: str = ""  # database id of the API key; empty for tokens
    key_prefix: str = ""  # the human-visible part of the key, safe to log and audit
    allowed_models: frozenset[str] | None = None  # None: every model
    rpm: int = 0  # requests per minute, 0 = unlimited
    tpm: int = 0  # tokens per minute, 0 = unlimited
    store_content: bool = False  # audit keeps prompts/outputs only when the key says so
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def tenant(self) -> str:
        return self.subject

    @property
    def rate_key(self) -> str:
        """The bucket quotas are counted in: one per key, one per token subject."""
        return f"key:{self.key_id}" if self.key_id else f"{self.kind}:{self.subject}"

    def can(self, permission: Permission) -> bool:
        return allows(self.role, permission)

    def may_use_model(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models
