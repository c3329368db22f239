"""OpenAI's Responses API: POST /v1/responses, and the stored responses' GET, DELETE and
input items (stored_responses.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lalo_gateway.db.repositories import SqlResponseStore
from lalo_gateway.deps import InferencePrincipal, RequestId
from lalo_gateway.protocol import ResponsesRequest
from lalo_gateway.security.http import check_request_limits, security_runtime
from lalo_gateway.security.principal import Principal
from lalo_gateway.serving_responses import ServingResponses
from lalo_gateway.stored_responses import StoredResponse, items_page, not_found

router = APIRouter(tags=["responses"])


def response_store(request: Request) -> SqlResponseStore | None:
    """Where responses are kept; None when the operator turned storage off."""
    if not request.app.state.settings.store_responses:
        return None
    return SqlResponseStore(security_runtime(request).db.sessions)


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
    return await serving.create(
        body,
        request_id,
        principal,
        store=response_store(request),
        max_items=security_runtime(request).settings.max_messages,
    )


async def _stored(request: Request, principal: Principal, response_id: str) -> StoredResponse:
    store = response_store(request)
    found = None
    if store is not None:
        found = await asyncio.to_thread(store.get, principal.tenant, response_id)
    if found is None:
        raise not_found(response_id)
    return found


@router.get("/v1/responses/{response_id}", response_model=None)
async def get_response(
    response_id: str, request: Request, principal: InferencePrincipal
) -> dict[str, Any]:
    return (await _stored(request, principal, response_id)).response


@router.delete("/v1/responses/{response_id}", response_model=None)
async def delete_response(
    response_id: str, request: Request, principal: InferencePrincipal
) -> dict[str, Any]:
    store = response_store(request)
    deleted = store is not None and await asyncio.to_thread(
        store.delete, principal.tenant, response_id
    )
    if not deleted:
        raise not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items", response_model=None)
async def list_input_items(
    response_id: str,
    request: Request,
    principal: InferencePrincipal,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    stored = await _stored(request, principal, response_id)
    return items_page(stored.input_items, limit=limit, order=order, after=after)
