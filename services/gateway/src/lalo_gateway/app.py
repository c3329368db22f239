"""The gateway's FastAPI application: ``create_app(settings)`` builds everything, lazily."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lalo_gateway.errors import install_error_handlers
from lalo_gateway.grpc_api import start_public_grpc
from lalo_gateway.router_client import RouterClient
from lalo_gateway.routes import (
    admin,
    chat,
    completions,
    embeddings,
    health,
    models,
    responses,
    workflows,
)
from lalo_gateway.security.http import install_security, security_lifespan, usage_hook
from lalo_gateway.serving import ServingChat, ServingCompletions
from lalo_gateway.serving_embeddings import ServingEmbeddings
from lalo_gateway.serving_responses import ServingResponses
from lalo_gateway.settings import GatewaySettings


def create_app(settings: GatewaySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        router = RouterClient(
            settings.router_target,
            service_token=settings.service_token.get_secret_value(),
            timeout_s=settings.request_timeout_s,
        )
        app.state.router = router
        app.state.serving_chat = ServingChat(router, on_usage=usage_hook)
        app.state.serving_completions = ServingCompletions(router, on_usage=usage_hook)
        app.state.serving_responses = ServingResponses(router, on_usage=usage_hook)
        app.state.serving_embeddings = ServingEmbeddings(
            router, on_usage=usage_hook, max_inputs=settings.max_embedding_inputs
        )
        try:
            async with security_lifespan(app, settings, settings.static_keys()) as runtime:
                public_grpc = None
                if settings.grpc_port:
                    public_grpc = await start_public_grpc(
                        router,
                        runtime,
                        f"{settings.host}:{settings.grpc_port}",
                        settings.grace_period_s,
                    )
                try:
                    yield
                finally:
                    if public_grpc is not None:
                        await public_grpc.stop()
        finally:
            await router.close()

    app = FastAPI(
        title="LALO",
        version="0.1.0",
        description="OpenAI-compatible API in front of LALO's local model fleet.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.started_at = time.time()
    install_error_handlers(app)

    install_security(app, max_body_bytes=settings.max_body_bytes)  # outermost: audits all
    for module in (health, models, chat, completions, responses, embeddings, admin, workflows):
        app.include_router(module.router)
    return app
