"""Stored Responses API answers: what is kept, how a conversation is rebuilt from
``previous_response_id``, and the pages of GET /v1/responses/{id}/input_items.

A response is stored (``store``, true unless the request says false, as with OpenAI) with its
own input items and its output. Continuing it with ``previous_response_id`` replays, oldest
first, every earlier response's input and output, then the new input; ``instructions`` are
not carried over (OpenAI's rule: each request states its own). A response is only ever
visible to the tenant that created it: another tenant's id reads as unknown.

Deleting a response deletes its content: a later response that continued it can still be
read, but no longer continued, and saying so is better than answering without the deleted
part of the conversation.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from lalo_gateway.errors import APIError
from lalo_gateway.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputMessage,
    ResponsesRequest,
)


@dataclass(frozen=True)
class StoredResponse:
    id: str
    tenant: str
    previous_response_id: str | None
    input_items: list[dict[str, Any]]  # this request's own input, each item with an id
    response: dict[str, Any]  # the response object as it was returned


class ResponseStore(Protocol):
    def save(self, stored: StoredResponse, *, key_id: str = "") -> None: ...

    def get(self, tenant: str, response_id: str) -> StoredResponse | None: ...

    def delete(self, tenant: str, response_id: str) -> bool: ...

    def conversation(
        self, tenant: str, response_id: str, max_links: int
    ) -> list[StoredResponse]: ...


def not_found(response_id: str) -> APIError:
    return APIError(
        404,
        f"No response found with id '{response_id}'.",
        param="response_id",
        code="response_not_found",
    )


def item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def input_items_of(body: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as stored and listed: OpenAI's item shapes, each with an id."""
    items = [body.input] if isinstance(body.input, str) else body.input
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            out.append(_message(item_id("msg"), "user", [_part("input_text", item)]))
        elif isinstance(item, InputMessage):
            kind = "output_text" if item.role == "assistant" else "input_text"
            parts = (
                [_part(kind, item.content)]
                if isinstance(item.content, str)
                else [part.model_dump(exclude_none=True) for part in item.content]
            )
            extra = item.model_extra or {}
            out.append(_message(str(extra.get("id") or item_id("msg")), item.role, parts))
        elif isinstance(item, FunctionCallItem | FunctionCallOutputItem):
            dumped = item.model_dump(exclude_none=True)
            dumped.setdefault("id", item_id("fc" if item.type == "function_call" else "fco"))
            dumped.setdefault("status", "completed")
            out.append(dumped)
    return out


def _message(message_id: str, role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "message",
        "id": message_id,
        "role": role,
        "status": "completed",
        "content": content,
    }


def _part(kind: str, text: str) -> dict[str, Any]:
    return {"type": kind, "text": text}


def conversation_items(
    chain: list[StoredResponse], previous_response_id: str, max_links: int
) -> list[dict[str, Any]]:
    """The items a continuation of ``previous_response_id`` replays, oldest first, from
    ``chain`` (``ResponseStore.conversation``'s answer); a clear 400/404 when the
    conversation cannot be rebuilt whole."""
    if not chain or chain[-1].id != previous_response_id:
        raise APIError(
            404,
            f"No response found with id '{previous_response_id}'.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    first = chain[0]
    if first.previous_response_id is not None:
        if len(chain) > max_links:
            raise APIError(
                400,
                f"The conversation of '{previous_response_id}' is longer than the "
                f"{max_links} responses this gateway replays; start a new one, sending the "
                "part of the history that matters in input.",
                param="previous_response_id",
                code="conversation_too_long",
            )
        raise APIError(
            400,
            f"'{previous_response_id}' continues '{first.previous_response_id}', which was "
            "deleted, so the conversation cannot be rebuilt whole; send the history in input "
            "instead.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    items: list[dict[str, Any]] = []
    for stored in chain:
        items.extend(stored.input_items)
        items.extend(stored.response.get("output") or [])
    return items


def items_page(
    items: list[dict[str, Any]], *, limit: int, order: Literal["asc", "desc"], after: str | None
) -> dict[str, Any]:
    """One page of input items in OpenAI's list shape."""
    ordered = list(items) if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise APIError(
                400,
                f"No input item with id '{after}' in this response.",
                param="after",
                code="invalid_value",
            )
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(ordered) > limit,
    }
