"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lalo_gateway.deps import InferencePrincipal, RequestId
from lalo_gateway.protocol import ChatCompletionRequest
from lalo_gateway.security.http import check_request_limits
from lalo_gateway.serving import ServingChat

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    principal: InferencePrincipal,
    request_id: RequestId,
) -> JSONResponse | StreamingResponse:
    check_request_limits(
        request,
        principal,
        model=body.model,
        messages=len(body.messages),
        max_tokens=body.max_completion_tokens or body.max_tokens,
    )
    serving: ServingChat = request.app.state.serving_chat
    return await serving.create(body, request_id, principal)
