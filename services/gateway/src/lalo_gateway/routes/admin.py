"""Admin REST API: API keys (create, list, get, revoke, rotate), the audit log, and stored
secrets. A key's secret appears in exactly two responses, create and rotate, and nowhere
else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from lalo_gateway.db.repositories import AuditQuery
from lalo_gateway.security.apikeys import ApiKeyRecord, NewKey
from lalo_gateway.security.audit import AuditRecord
from lalo_gateway.security.http import require, security_runtime
from lalo_gateway.security.rbac import Permission, Role
from lalo_gateway.security.secretbox import SecretBox, parse_keys

router = APIRouter(prefix="/v1/admin", tags=["admin"])
keys_router = APIRouter(dependencies=[require(Permission.KEYS_ADMIN)])
audit_router = APIRouter(dependencies=[require(Permission.AUDIT_READ)])
secrets_router = APIRouter(dependencies=[require(Permission.SECRETS_ADMIN)])


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=255)
    role: Role = Role.DEVELOPER
    name: str = Field(default="", max_length=255)
    allowed_models: list[str] | None = Field(
        default=None, description="Models this key may use; null for every model"
    )
    rpm: int | None = Field(
        default=None, ge=0, description="Requests per minute; 0 = unlimited; null = default"
    )
    tpm: int | None = Field(
        default=None, ge=0, description="Tokens per minute; 0 = unlimited; null = default"
    )
    store_content: bool = Field(
        default=False, description="Keep prompts and outputs in the audit log"
    )
    expires_at: datetime | None = None
    expires_in_days: float | None = Field(default=None, gt=0)


class KeyView(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    prefix: str
    owner: str
    role: Role
    name: str
    allowed_models: list[str] | None
    rpm: int
    tpm: int
    store_content: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_at: datetime | None
    source: str
    status: Literal["active", "revoked", "expired"]

    @classmethod
    def of(cls, record: ApiKeyRecord) -> KeyView:
        now = datetime.now(UTC)
        state: Literal["active", "revoked", "expired"] = (
            "revoked" if record.revoked_at else "active" if record.is_active(now) else "expired"
        )
        return cls(
            id=record.id,
            prefix=record.prefix,
            owner=record.owner,
            role=record.role,
            name=record.name,
            allowed_models=None if record.allowed_models is None else sorted(record.allowed_models),
            rpm=record.rpm,
            tpm=record.tpm,
            store_content=record.store_content,
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            rotated_at=record.rotated_at,
            source=record.source,
            status=state,
        )


class KeyWithSecret(KeyView):
    key: str = Field(description="The secret. Shown once: store it now.")

    @classmethod
    def of_new(cls, new: NewKey) -> KeyWithSecret:
        return cls(**KeyView.of(new.record).model_dump(), key=new.secret)


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyView]


@keys_router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=KeyWithSecret)
def create_key(body: CreateKey, request: Request) -> KeyWithSecret:
    expires_at = body.expires_at
    if body.expires_in_days is not None:
        expires_at = datetime.now(UTC) + timedelta(days=body.expires_in_days)
    runtime = security_runtime(request)
    new = runtime.keys.create(
        owner=body.owner,
        role=body.role,
        name=body.name,
        allowed_models=body.allowed_models,
        rpm=runtime.settings.default_rpm if body.rpm is None else body.rpm,
        tpm=runtime.settings.default_tpm if body.tpm is None else body.tpm,
        store_content=body.store_content,
        expires_at=expires_at,
        source="api",
    )
    return KeyWithSecret.of_new(new)


@keys_router.get("/keys", response_model=KeyList)
def list_keys(
    request: Request,
    owner: str | None = None,
    include_revoked: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> KeyList:
    records = security_runtime(request).keys.list(
        owner=owner, include_revoked=include_revoked, limit=limit, offset=offset
    )
    return KeyList(data=[KeyView.of(r) for r in records])


@keys_router.get("/keys/{key_id}", response_model=KeyView)
def get_key(key_id: str, request: Request) -> KeyView:
    return KeyView.of(security_runtime(request).keys.get(key_id))


@keys_router.delete("/keys/{key_id}", response_model=KeyView)
def revoke_key(key_id: str, request: Request) -> KeyView:
    """Revoke: the key stops working on every replica within the key cache bound (≤ 1 s)."""
    return KeyView.of(security_runtime(request).keys.revoke(key_id))


@keys_router.post("/keys/{key_id}/rotate", response_model=KeyWithSecret)
def rotate_key(key_id: str, request: Request) -> KeyWithSecret:
    return KeyWithSecret.of_new(security_runtime(request).keys.rotate(key_id))


class AuditView(BaseModel):
    object: Literal["audit_event"] = "audit_event"
    id: str
    ts: datetime
    request_id: str
    method: str
    path: str
    route: str
    status: int
    subject: str
    principal_kind: str
    role: str
    key_id: str
    key_prefix: str
    model: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    client_addr: str
    error_code: str
    content: dict[str, Any] | None

    @classmethod
    def of(cls, record: AuditRecord) -> AuditView:
        return cls(**record.to_json())


class AuditList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditView]
    has_more: bool
    next_cursor: str | None


@audit_router.get("/audit", response_model=AuditList)
def query_audit(
    request: Request,
    subject: str | None = None,
    key_id: str | None = None,
    key_prefix: str | None = None,
    model: str | None = None,
    route: str | None = None,
    request_id: str | None = None,
    status_code: Annotated[int | None, Query(alias="status", ge=100, le=599)] = None,
    min_status: Annotated[int | None, Query(ge=100, le=599)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> AuditList:
    page = security_runtime(request).audit_store.query(
        AuditQuery(
            subject=subject,
            key_id=key_id,
            key_prefix=key_prefix,
            model=model,
            route=route,
            request_id=request_id,
            status=status_code,
            min_status=min_status,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
    )
    return AuditList(
        data=[AuditView.of(r) for r in page.records],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )


class PutSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1)


class SecretNames(BaseModel):
    object: Literal["list"] = "list"
    data: list[str]


@secrets_router.put("/secrets/{name:path}", status_code=status.HTTP_204_NO_CONTENT)
def put_secret(name: str, body: PutSecret, request: Request) -> None:
    """Store an upstream or tool credential, encrypted; it is never returned by the API."""
    runtime = security_runtime(request)
    box = SecretBox(parse_keys(runtime.settings.secret_keys.get_secret_value()))
    runtime.secrets.put(name, box.encrypt(body.value))


@secrets_router.get("/secrets", response_model=SecretNames)
def list_secrets(request: Request) -> SecretNames:
    return SecretNames(data=sorted(name for name, _ in security_runtime(request).secrets.items()))


router.include_router(keys_router)
router.include_router(audit_router)
router.include_router(secrets_router)
