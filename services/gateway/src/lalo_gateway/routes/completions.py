"""POST /v1/completions (legacy text completions)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lalo_gateway.deps import InferencePrincipal, RequestId
from lalo_gateway.protocol import CompletionRequest
from lalo_gateway.security.http import check_request_limits
from lalo_gateway.serving import ServingCompletions, completion_prompts

router = APIRouter(tags=["completions"])


@router.post("/v1/completions", response_model=None)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    principal: InferencePrincipal,
    request_id: RequestId,
) -> JSONResponse | StreamingResponse:
    check_request_limits(
        request,
        principal,
        model=body.model,
        messages=None,
        max_tokens=body.max_tokens,
        choices=body.n,
        # (A list of token ids is one prompt, not as many prompts as ids.)
        prompts=len(completion_prompts(body.prompt)),
    )
    serving: ServingCompletions = request.app.state.serving_completions
    return await serving.create(body, request_id, principal)
