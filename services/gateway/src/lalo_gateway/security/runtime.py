"""Everything the security layer needs at run time, built once in the app's lifespan (or by
the CLI) from settings, and closed on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from lalo_gateway.db.engine import make_engine, make_sessionmaker, wait_for_database
from lalo_gateway.db.migrate import upgrade
from lalo_gateway.db.repositories import SqlAuditStore, SqlKeyStore, SqlSecretStore
from lalo_gateway.security.apikeys import ApiKeyService
from lalo_gateway.security.audit import AuditBuffer
from lalo_gateway.security.authenticator import Authenticator
from lalo_gateway.security.ratelimit import InProcessRateLimiter, RateLimiter, RedisRateLimiter
from lalo_gateway.security.settings import SecuritySettings
from lalo_gateway.security.tokens import TokenVerifier

log = logging.getLogger(__name__)


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def connect(cls, settings: SecuritySettings, *, migrate: bool) -> Database:
        """Blocking: wait for the database (with backoff) and apply migrations if asked."""
        engine = make_engine(settings)
        wait_for_database(
            engine,
            retries=settings.db_connect_retries,
            backoff_max_s=settings.db_connect_backoff_max_s,
        )
        if migrate:
            upgrade(engine)
        return cls(engine=engine, sessions=make_sessionmaker(engine))

    def key_service(self, settings: SecuritySettings) -> ApiKeyService:
        return ApiKeyService(
            SqlKeyStore(self.sessions),
            settings.key_pepper.get_secret_value(),
            cache_ttl_s=settings.key_cache_ttl_s,
        )


@dataclass
class SecurityRuntime:
    settings: SecuritySettings
    db: Database
    keys: ApiKeyService
    tokens: TokenVerifier
    authenticator: Authenticator
    limiter: RateLimiter
    audit: AuditBuffer
    audit_store: SqlAuditStore
    secrets: SqlSecretStore

    @classmethod
    async def start(
        cls, settings: SecuritySettings, static_keys: Sequence[str] = ()
    ) -> SecurityRuntime:
        db = await asyncio.to_thread(Database.connect, settings, migrate=settings.migrate_on_start)
        keys = db.key_service(settings)
        if static_keys:
            await asyncio.to_thread(
                keys.provision,
                static_keys,
                default_role=settings.default_role_for_static_keys,
                rpm=settings.default_rpm,
                tpm=settings.default_tpm,
            )
        tokens = TokenVerifier(settings)
        limiter: RateLimiter
        if settings.redis_url:
            limiter = RedisRateLimiter.from_url(settings.redis_url)
        else:
            if settings.environment == "production":
                log.warning(
                    "LALO_GATEWAY_REDIS_URL is not set: rate limits are per process, "
                    "not shared between replicas"
                )
            limiter = InProcessRateLimiter()
        audit_store = SqlAuditStore(db.sessions)
        audit = AuditBuffer(
            audit_store,
            flush_interval_s=settings.audit_flush_interval_s,
            batch_size=settings.audit_batch_size,
            retry_max_s=settings.audit_retry_max_s,
            spool_path=_spool_path(settings),
        )
        await audit.start()
        return cls(
            settings=settings,
            db=db,
            keys=keys,
            tokens=tokens,
            authenticator=Authenticator(keys, tokens),
            limiter=limiter,
            audit=audit,
            audit_store=audit_store,
            secrets=SqlSecretStore(db.sessions),
        )

    async def close(self) -> None:
        await self.audit.stop()
        await self.limiter.close()
        await asyncio.to_thread(self.db.engine.dispose)


def _spool_path(settings: SecuritySettings) -> Path:
    return Path(settings.audit_spool_path)
