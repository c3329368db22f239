"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lalo_gateway.deps import CurrentPrincipal, RequestId
from lalo_gateway.protocol import ChatCompletionRequest
from lalo_gateway.serving import ServingChat

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    principal: CurrentPrincipal,
    request_id: RequestId,
) -> JSONResponse | StreamingResponse:
    serving: ServingChat = request.app.state.serving_chat
    return await serving.create(body, request_id, principal.subject, principal.tenant)
