"""POST /v1/embeddings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lalo_gateway.deps import InferencePrincipal, RequestId
from lalo_gateway.protocol import EmbeddingRequest
from lalo_gateway.security.http import check_model_allowed
from lalo_gateway.serving_embeddings import ServingEmbeddings

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", response_model=None)
async def create_embeddings(
    body: EmbeddingRequest,
    request: Request,
    principal: InferencePrincipal,
    request_id: RequestId,
) -> JSONResponse:
    check_model_allowed(request, principal, body.model)
    serving: ServingEmbeddings = request.app.state.serving_embeddings
    return await serving.create(body, request_id, principal)
