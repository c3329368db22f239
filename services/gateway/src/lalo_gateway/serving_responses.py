"""The Responses API (POST /v1/responses) over the same router call as chat completions.

A response is stored unless the request says ``store: false`` (stored_responses.py), and
``previous_response_id`` continues a stored one: its conversation is replayed before the new
input. Or a conversation comes whole in ``input`` — messages, the function calls of earlier
responses and their outputs. Input items become chat messages (consecutive function calls
one assistant turn, each output a tool turn); the answer becomes output items: a message
with its text, then a function_call item per call. Streamed, the events are OpenAI's:
response.created / in_progress, an output_item.added, content deltas and .done events per
item, then response.completed (or response.incomplete when max_output_tokens cut it,
response.failed on an error after the stream began).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from pydantic import TypeAdapter, ValidationError

from lalo_gateway.errors import APIError
from lalo_gateway.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    JsonSchemaFormat,
    ResponseFormat,
    ResponsesNamedTool,
    ResponsesRequest,
    SamplingFields,
)
from lalo_gateway.router_client import stamp_caller
from lalo_gateway.security.principal import Principal
from lalo_gateway.serving import (
    FINISH_REASONS,
    SSE_HEADERS,
    Collected,
    Serving,
    UsageTotal,
    _in_band,
    _prepend,
    offer_tools,
    route_headers,
    sampling_from_request,
    template_role,
)
from lalo_gateway.stored_responses import (
    ResponseStore,
    StoredResponse,
    conversation_items,
    input_items_of,
)

log = logging.getLogger(__name__)
_ITEMS = TypeAdapter(list[InputItem])


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def router_request(
    body: ResponsesRequest, request_id: str, history: Sequence[dict[str, Any]] = ()
) -> rpb.ChatRequest:
    """The router's chat request: ``instructions``, then the ``history`` items of the
    responses it continues (stored_responses.conversation_items), then the input."""
    out = rpb.ChatRequest(request_id=request_id, model=body.model, stream=bool(body.stream))
    chat = out.chat
    if body.instructions:
        chat.messages.add(role="system", content=body.instructions)
    own = [body.input] if isinstance(body.input, str) else body.input
    items = [*_history_items(history), *own]
    for item in items:
        if isinstance(item, str):
            chat.messages.add(role="user", content=item)
        elif isinstance(item, FunctionCallItem):
            last = chat.messages[-1] if chat.messages else None
            if last is None or last.role != "assistant":
                # An answer's items (its text, then its calls) are one assistant turn, as
                # the model wrote them and as chat completions sends them back.
                last = chat.messages.add(role="assistant")
            last.tool_calls.add(id=item.call_id, name=item.name, arguments_json=item.arguments)
        elif isinstance(item, FunctionCallOutputItem):
            chat.messages.add(role="tool", content=item.text(), tool_call_id=item.call_id)
        else:
            chat.messages.add(role=template_role(item.role), content=item.text())
    choice = body.tool_choice
    offer_tools(
        chat,
        [(t.name, t.description, t.parameters) for t in body.tools or []],
        None if isinstance(choice, ResponsesNamedTool) else choice,
        choice.name if isinstance(choice, ResponsesNamedTool) else "",
    )
    # The Responses API's sampling fields are a subset of chat's (the others keep defaults).
    fields = SamplingFields.model_construct(
        model=body.model, temperature=body.temperature, top_p=body.top_p
    )
    out.sampling.CopyFrom(
        sampling_from_request(
            fields,
            max_tokens=body.max_output_tokens,
            logprobs=False,
            top_logprobs=0,
            response_format=_response_format(body),
        )
    )
    return out


def _history_items(history: Sequence[dict[str, Any]]) -> list[Any]:
    if not history:
        return []
    try:
        return _ITEMS.validate_python(list(history))
    except ValidationError:
        # Only what this gateway wrote is read back; failing to read it is its own bug.
        log.exception("a stored conversation does not read back as input items")
        raise APIError(
            500,
            "The stored conversation could not be read.",
            type_="server_error",
            code="internal_error",
        ) from None


def _response_format(body: ResponsesRequest) -> ResponseFormat | None:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    return ResponseFormat(
        type="json_schema",
        json_schema=JsonSchemaFormat.model_validate(
            {"name": fmt.name, "schema": fmt.json_schema, "strict": fmt.strict}
        ),
    )


def usage_dict(usage: ipb.Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [text_part(text)] if status != "in_progress" else [],
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(call: ipb.ToolCall, item_id: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments_json if status == "completed" else "",
        "status": status,
    }


class ServingResponses(Serving):
    input_param = "input"

    async def create(
        self,
        body: ResponsesRequest,
        request_id: str,
        principal: Principal | None = None,
        store: ResponseStore | None = None,
        max_items: int = 512,
    ) -> JSONResponse | StreamingResponse:
        """``store``: where responses are kept (None: the operator turned storage off);
        ``max_items``: the most input items, history included, one request may carry."""
        if store is None and (body.store or body.previous_response_id):
            field = "store" if body.store else "previous_response_id"
            raise APIError(
                400,
                "This gateway does not store responses (LALO_GATEWAY_STORE_RESPONSES=false): "
                "send the whole conversation in input.",
                param=field,
                code="storage_disabled",
            )
        tenant = principal.tenant if principal else ""
        history = await self._history(body, tenant, store, max_items)
        request = router_request(body, request_id, history)
        stamp_caller(request, principal)
        keep = _Keeper(store, body, tenant, principal.key_id if principal else "")
        envelope = _Envelope(body, stored=keep.active)
        if body.stream:
            return await self._stream_response(request, request_id, envelope, keep)
        out = await self._collect(request)
        model = out.route.model if out.route else body.model
        self._report_usage(out.usage, model)
        response = await keep.save(envelope.finished(out, model))
        return JSONResponse(response, headers=route_headers(out.route, request_id))

    @staticmethod
    async def _history(
        body: ResponsesRequest, tenant: str, store: ResponseStore | None, max_items: int
    ) -> list[dict[str, Any]]:
        previous = body.previous_response_id
        if previous is None or store is None:
            return []
        chain = await asyncio.to_thread(store.conversation, tenant, previous, max_items)
        history = conversation_items(chain, previous, max_items)
        own = 1 if isinstance(body.input, str) else len(body.input)
        if len(history) + own > max_items:
            raise APIError(
                400,
                f"With the conversation of '{previous}' this request has "
                f"{len(history) + own} input items; this gateway accepts at most {max_items}. "
                "Start a new conversation, sending the part of the history that matters.",
                param="previous_response_id",
                code="conversation_too_long",
            )
        return history

    async def _stream_response(
        self,
        request: rpb.ChatRequest,
        request_id: str,
        envelope: _Envelope,
        keep: _Keeper,
    ) -> StreamingResponse:
        events = self.router.chat(request)
        route, pending = await self._open(events)
        model = route.model if route else request.model
        writer = _EventWriter(envelope, model)

        async def body() -> AsyncIterator[str]:
            out = Collected(route=route)
            usage = UsageTotal()
            yield writer.event("response.created", response=envelope.snapshot(model))
            yield writer.event("response.in_progress", response=envelope.snapshot(model))
            try:
                async for event in _prepend(pending, events):
                    kind = event.WhichOneof("event")
                    if kind == "chunk":
                        # The writer keeps the output items; `out` only the finish and usage.
                        for piece in writer.chunk(event.chunk):
                            yield piece
                    elif kind == "complete":
                        out.usage = usage.add(0, event.complete.usage)
                        out.choice(0).finish_reason = FINISH_REASONS[event.complete.finish_reason]
                    elif kind == "error":
                        raise _in_band(event.error)
            except APIError as exc:  # after the 200: the response failed, in-band
                for piece in writer.close_text("incomplete"):
                    yield piece
                failed = envelope.snapshot(model, status="failed", output=writer.items)
                failed["error"] = {"code": exc.code or "server_error", "message": exc.message}
                failed = await keep.save(failed)
                yield writer.event("response.failed", response=failed)
                return
            cut = out.choice(0).finish_reason == "length"
            for piece in writer.close_text("incomplete" if cut else "completed"):
                yield piece
            final = envelope.finished(out, model, output=writer.items)
            kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
            self._report_usage(out.usage, model)
            # Stored before the last event, so a client that continues the response as soon
            # as it reads it finds it.
            final = await keep.save(final)
            yield writer.event(kind, response=final)

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **route_headers(route, request_id)},
        )


class _Keeper:
    """Stores one request's response when it is to be kept."""

    def __init__(
        self, store: ResponseStore | None, body: ResponsesRequest, tenant: str, key_id: str
    ) -> None:
        self.store = store if body.store is not False else None
        self.body = body
        self.tenant = tenant
        self.key_id = key_id

    @property
    def active(self) -> bool:
        return self.store is not None

    async def save(self, response: dict[str, Any]) -> dict[str, Any]:
        """``response``, stored; if the database fails, returned with ``store`` false: the
        answer was generated and paid for, and the field says it was not kept."""
        if self.store is None:
            return response
        stored = StoredResponse(
            id=response["id"],
            tenant=self.tenant,
            previous_response_id=self.body.previous_response_id,
            input_items=input_items_of(self.body),
            response=response,
        )
        try:
            await asyncio.to_thread(self.store.save, stored, key_id=self.key_id)
        except Exception:
            log.exception("could not store response %s", response["id"])
            return {**response, "store": False}
        return response


class _Envelope:
    """The fields every response object of one request repeats."""

    def __init__(self, body: ResponsesRequest, stored: bool = False) -> None:
        self.body = body
        self.stored = stored
        self.id = _id("resp")
        self.created_at = int(time.time())

    def snapshot(
        self, model: str, status: str = "in_progress", output: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        body = self.body
        tool_choice = body.tool_choice
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": model,
            "output": output or [],
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "store": self.stored,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "text": {"format": _format_echo(body)},
            "tool_choice": tool_choice.model_dump()
            if isinstance(tool_choice, ResponsesNamedTool)
            else tool_choice or "auto",
            "tools": [
                {
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters or {},
                    "strict": t.strict if t.strict is not None else False,
                }
                for t in body.tools or []
            ],
            "metadata": body.metadata or {},
            "user": body.user,
            "usage": None,
        }

    def finished(
        self, out: Collected, model: str, output: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        choice = out.choice(0)
        cut = choice.finish_reason == "length"
        if output is None:
            output = []
            text = "".join(choice.text)
            if text or not choice.tool_calls:
                output.append(message_item(_id("msg"), text, "incomplete" if cut else "completed"))
            output.extend(call_item(call, _id("fc")) for call in choice.tool_calls)
        response = self.snapshot(model, "incomplete" if cut else "completed", output)
        if cut:
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        response["usage"] = usage_dict(out.usage)
        return response


def _format_echo(body: ResponsesRequest) -> dict[str, Any]:
    fmt = body.text.format if body.text else None
    if fmt is None:
        return {"type": "text"}
    return fmt.model_dump(by_alias=True, exclude_none=True)


class _EventWriter:
    """OpenAI's streaming events for one response: numbered, each item opened before its
    deltas and closed (.done) before the next one opens."""

    def __init__(self, envelope: _Envelope, model: str) -> None:
        self.envelope = envelope
        self.model = model
        self.sequence = 0
        self.items: list[dict[str, Any]] = []
        self._text_id: str | None = None
        self._text: list[str] = []

    def event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return f"event: {kind}\ndata: {data}\n\n"

    def chunk(self, chunk: ipb.GenerateChunk) -> list[str]:
        out: list[str] = []
        if chunk.text:
            if self._text_id is None:
                self._text_id = _id("msg")
                index = len(self.items)
                out.append(
                    self.event(
                        "response.output_item.added",
                        output_index=index,
                        item=message_item(self._text_id, "", "in_progress"),
                    )
                )
                out.append(
                    self.event(
                        "response.content_part.added",
                        item_id=self._text_id,
                        output_index=index,
                        content_index=0,
                        part=text_part(""),
                    )
                )
            self._text.append(chunk.text)
            out.append(
                self.event(
                    "response.output_text.delta",
                    item_id=self._text_id,
                    output_index=len(self.items),
                    content_index=0,
                    delta=chunk.text,
                    logprobs=[],
                )
            )
        for call in chunk.tool_calls:
            out.extend(self.close_text())
            out.extend(self._call(call))
        return out

    def close_text(self, status: str = "completed") -> list[str]:
        """The open message item's closing events (none when no text item is open)."""
        if self._text_id is None:
            return []
        item_id, text = self._text_id, "".join(self._text)
        index = len(self.items)
        self._text_id, self._text = None, []
        item = message_item(item_id, text, status)
        self.items.append(item)
        common = {"item_id": item_id, "output_index": index, "content_index": 0}
        return [
            self.event("response.output_text.done", **common, text=text, logprobs=[]),
            self.event("response.content_part.done", **common, part=text_part(text)),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def _call(self, call: ipb.ToolCall) -> list[str]:
        item_id = _id("fc")
        index = len(self.items)
        item = call_item(call, item_id)
        self.items.append(item)
        common = {"item_id": item_id, "output_index": index}
        return [
            self.event(
                "response.output_item.added",
                output_index=index,
                item=call_item(call, item_id, "in_progress"),
            ),
            self.event("response.function_call_arguments.delta", **common, delta=item["arguments"]),
            self.event(
                "response.function_call_arguments.done",
                **common,
                name=call.name,
                arguments=item["arguments"],
            ),
            self.event("response.output_item.done", output_index=index, item=item),
        ]
