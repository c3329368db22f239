"""Probes: /healthz says the process is alive; /readyz that the router and a model answer."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lalo_gateway.router_client import RouterClient

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    client: RouterClient = request.app.state.router
    ready, detail = await client.ready(request.app.state.settings.readiness_timeout_s)
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "detail": detail},
        status_code=200 if ready else 503,
    )
