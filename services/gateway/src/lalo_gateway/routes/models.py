"""GET /v1/models and /v1/models/{id}: what the router can serve, plus the "auto" route."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from lalo_gateway.deps import ModelsReader
from lalo_gateway.errors import APIError
from lalo_gateway.router_client import RouterClient

router = APIRouter(tags=["models"])
AUTO_MODEL = "auto"


async def _models(request: Request) -> list[dict[str, Any]]:
    client: RouterClient = request.app.state.router
    served = await client.list_models()
    started = int(request.app.state.started_at)
    data = [{"id": AUTO_MODEL, "object": "model", "created": started, "owned_by": "lalo"}]
    data += [
        {"id": m.id, "object": "model", "created": started, "owned_by": m.owned_by or "lalo"}
        for m in served
    ]
    return data


@router.get("/v1/models")
async def list_models(request: Request, principal: ModelsReader) -> dict[str, Any]:
    data = [m for m in await _models(request) if principal.may_use_model(m["id"])]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, principal: ModelsReader) -> dict[str, Any]:
    for model in await _models(request):
        if model["id"] == model_id and principal.may_use_model(model_id):
            return model
    raise APIError(
        404, f"The model '{model_id}' does not exist", param="model", code="model_not_found"
    )
