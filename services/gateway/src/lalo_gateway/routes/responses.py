"""POST /v1/responses (OpenAI's Responses API, stateless)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lalo_gateway.deps import InferencePrincipal, RequestId
from lalo_gateway.protocol import ResponsesRequest
from lalo_gateway.security.http import check_request_limits
from lalo_gateway.serving_responses import ServingResponses

router = APIRouter(tags=["responses"])


@router.post("/v1/responses", response_model=None)
async def create_response(
    body: ResponsesRequest,
    request: Request,
    principal: InferencePrincipal,
    request_id: RequestId,
) -> JSONResponse | StreamingResponse:
    check_request_limits(
        request,
        principal,
        model=body.model,
        messages=1 if isinstance(body.input, str) else len(body.input),
        max_tokens=body.max_output_tokens,
        fields=("input", "max_output_tokens"),
    )
    serving: ServingResponses = request.app.state.serving_responses
    return await serving.create(body, request_id, principal)
