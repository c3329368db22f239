"""Chat and text completions: OpenAI request → router call → OpenAI response or SSE stream.

Built once at start-up and kept on ``app.state``; routes only hand requests over. For a
streamed request the first router event (the route decision, or an error status) is
awaited before the HTTP response starts, so a bad model or an over-long prompt still gets
a proper 4xx; errors after that are sent in-band, as OpenAI does.
"""

from __future__ import annotations

import codecs
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from fastapi.responses import JSONResponse, StreamingResponse
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_common.errors import status_code_from_int

from lalo_gateway.errors import APIError, from_grpc
from lalo_gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    NamedToolChoice,
    ResponseFormat,
    SamplingFields,
)
from lalo_gateway.router_client import RouterClient, stamp_caller
from lalo_gateway.security.principal import Principal

FINISH_REASONS = {
    ipb.FINISH_REASON_STOP: "stop",
    ipb.FINISH_REASON_LENGTH: "length",
    ipb.FINISH_REASON_ABORT: "stop",
    ipb.FINISH_REASON_UNSPECIFIED: "stop",
    ipb.FINISH_REASON_TOOL_CALLS: "tool_calls",
}
TOOL_CHOICE_MODES = {
    None: ipb.ToolChoice.MODE_AUTO,
    "auto": ipb.ToolChoice.MODE_AUTO,
    "none": ipb.ToolChoice.MODE_NONE,
    "required": ipb.ToolChoice.MODE_REQUIRED,
}


def offer_tools(
    chat: ipb.ChatInput,
    tools: list[tuple[str, str | None, dict[str, Any] | None]],
    choice: str | None,
    function: str = "",
) -> None:
    """The request's function tools (name, description, parameters) and tool_choice, in
    the router's terms, whichever API they came in (chat completions, Responses).
    ``choice``: "auto" / "none" / "required" or None; ``function``: the function a named
    tool_choice forces (then ``choice`` is not read)."""
    for name, description, parameters in tools:
        chat.tools.add(
            name=name, description=description or "", parameters_json=json.dumps(parameters or {})
        )
    if function:
        chat.tool_choice.mode = ipb.ToolChoice.MODE_FUNCTION
        chat.tool_choice.function = function
    else:
        chat.tool_choice.mode = TOOL_CHOICE_MODES[choice]


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def template_role(role: str) -> str:
    """The role a model's chat template knows: OpenAI's "developer" (its newer name for
    instructions) is "system" to the open models' templates, which predate it (some
    render it as an unknown turn, some refuse it)."""
    return "system" if role == "developer" else role


def _unsupported(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="unsupported_parameter")


def input_texts(value: str | list[str] | list[int] | list[list[int]], param: str) -> list[str]:
    """Embeddings' ``input`` as a list of texts, in order. Token ids are refused: each LALO
    model has its own vocabulary, so ids from another tokenizer would be other text
    (completions take them for a named model: ``completion_prompts``)."""
    items: list[Any] = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise _unsupported(
            param,
            f"Token ids are not supported as {param}: send the text itself (a string or a "
            "list of strings). LALO's models each have their own vocabulary, so token ids "
            "from another tokenizer would not mean the same text. (LangChain's "
            "OpenAIEmbeddings sends OpenAI's tiktoken ids unless it is created with "
            "check_embedding_ctx_length=False.)",
        )
    return items


def completion_prompts(
    value: str | list[str] | list[int] | list[list[int]],
) -> list[str] | list[list[int]]:
    """Completions' ``prompt`` as a list of prompts, each a text or (OpenAI's token-array
    form, for a named model: the router refuses ids for ``auto``) a list of token ids in
    that model's vocabulary."""
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(item, int) for item in value):
        _check_token_ids(cast(list[int], value), "prompt")
        return [cast(list[int], value)]
    for index, item in enumerate(value):
        if isinstance(item, list):
            if not item:
                raise APIError(
                    400,
                    f"prompt[{index}] is an empty list of token ids.",
                    param=f"prompt[{index}]",
                    code="invalid_value",
                )
            _check_token_ids(item, f"prompt[{index}]")
    return cast(list[str] | list[list[int]], list(value))


def _check_token_ids(ids: list[int], param: str) -> None:
    """Ids a vocabulary could hold (the model checks its own size): not negative and within
    32 bits, which is all the contract carries."""
    bad = next((t for t in ids if not 0 <= t < 2**31), None)
    if bad is not None:
        raise APIError(
            400,
            f"{param}: token id {bad} is not in any vocabulary (ids are 0 or more).",
            param=param,
            code="invalid_value",
        )


def sampling_from_request(
    body: SamplingFields,
    *,
    max_tokens: int | None,
    logprobs: bool,
    top_logprobs: int,
    response_format: ResponseFormat | None,
) -> ipb.SamplingParams:
    params = ipb.SamplingParams()
    if max_tokens is not None:
        params.max_tokens = max_tokens
    if body.temperature is not None:
        params.temperature = body.temperature
    if body.top_p is not None:
        params.top_p = body.top_p
    if body.top_k is not None and body.top_k > 0:
        params.top_k = body.top_k
    if body.min_p is not None:
        params.min_p = body.min_p
    if body.seed is not None:
        params.seed = body.seed
    if body.stop:
        params.stop.extend(body.stop)
    params.presence_penalty = body.presence_penalty or 0.0
    params.frequency_penalty = body.frequency_penalty or 0.0
    for token, bias in (body.logit_bias or {}).items():
        params.logit_bias[int(token)] = bias
    params.logprobs = logprobs
    params.top_logprobs = top_logprobs
    if response_format is not None:
        fmt = params.response_format
        if response_format.type == "json_object":
            fmt.type = ipb.ResponseFormat.JSON_OBJECT
        elif response_format.type == "json_schema":
            assert response_format.json_schema is not None
            fmt.type = ipb.ResponseFormat.JSON_SCHEMA
            fmt.json_schema = json.dumps(response_format.json_schema.json_schema)
        else:
            fmt.type = ipb.ResponseFormat.TEXT
    return params


def _check_common(body: SamplingFields) -> None:
    if body.stream_options is not None and not body.stream:
        raise APIError(
            400,
            "stream_options is only allowed when stream is true.",
            param="stream_options",
            code="invalid_value",
        )


@dataclass
class CollectedChoice:
    text: list[str] = field(default_factory=list)
    tokens: list[ipb.TokenInfo] = field(default_factory=list)
    tool_calls: list[ipb.ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"


def tool_call_dict(call: ipb.ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json},
    }


@dataclass
class Collected:
    route: rpb.RouteDecision | None = None
    choices: dict[int, CollectedChoice] = field(default_factory=dict)
    usage: ipb.Usage | None = None

    def choice(self, index: int) -> CollectedChoice:
        return self.choices.setdefault(index, CollectedChoice())


class UsageTotal:
    """The usage of a response whose choices each reported their own, as OpenAI counts it:
    each prompt once (all of its choices read it) and every choice's completion. Choice i
    answers prompt i // ``per_prompt`` (``n``; one prompt unless a list of them was sent)."""

    def __init__(self, per_prompt: int = 1) -> None:
        self.per_prompt = max(per_prompt, 1)
        self._prompt_tokens: dict[int, int] = {}
        self._completion_tokens = 0

    def add(self, choice: int, usage: ipb.Usage) -> ipb.Usage:
        """Count one choice's usage; returns the total so far."""
        prompt = choice // self.per_prompt
        self._prompt_tokens[prompt] = max(self._prompt_tokens.get(prompt, 0), usage.prompt_tokens)
        self._completion_tokens += usage.completion_tokens
        return self.total

    @property
    def total(self) -> ipb.Usage:
        return ipb.Usage(
            prompt_tokens=sum(self._prompt_tokens.values()),
            completion_tokens=self._completion_tokens,
        )


def choice_count(body: SamplingFields) -> int:
    return body.n or 1


def prompts_in(request: rpb.ChatRequest) -> int | None:
    """How many prompts a list of them holds (texts or token-id lists); None for any other
    input."""
    if request.WhichOneof("input") != "prompts":
        return None
    return len(request.prompts.prompts) + len(request.prompts.token_prompts)


def choices_in(request: rpb.ChatRequest) -> int:
    """How many choices the router's answer to ``request`` has: n for each prompt."""
    return int(max(request.n, 1) * (prompts_in(request) or 1))


def route_headers(route: rpb.RouteDecision | None, request_id: str) -> dict[str, str]:
    headers = {"x-request-id": request_id}
    if route is not None:
        headers["x-lalo-route"] = route.pool
        headers["x-lalo-model"] = route.model
        if route.category:
            headers["x-lalo-category"] = route.category
        headers["x-lalo-escalated"] = "true" if route.escalated else "false"
        if route.workflow_id:
            headers["x-lalo-workflow-id"] = route.workflow_id
    return headers


def _in_band(error: ipb.GenerateError, route: rpb.RouteDecision | None = None) -> APIError:
    """The error an in-band failure becomes; once the route is known its headers go with
    it (a failed workflow's 422 names the workflow to look up, x-lalo-workflow-id)."""
    exc = from_grpc(status_code_from_int(error.code), error.message, error.param or None)
    if route is not None:
        headers = route_headers(route, "")
        del headers["x-request-id"]
        exc.headers.update(headers)
    return exc


async def _prepend(
    pending: list[rpb.ChatResponse], events: AsyncIterator[rpb.ChatResponse]
) -> AsyncIterator[rpb.ChatResponse]:
    for event in pending:
        yield event
    async for event in events:
        yield event


class Serving:
    """Shared machinery of chat and text completions."""

    # The request field an over-long input is reported against.
    input_param = "messages"

    def __init__(self, router: RouterClient, on_usage: UsageHook | None = None) -> None:
        self.router = router
        self.on_usage = on_usage

    async def _first(self, events: AsyncIterator[rpb.ChatResponse]) -> rpb.RouteDecision | None:
        async for event in events:
            kind = event.WhichOneof("event")
            if kind == "route":
                return event.route
            if kind == "error":
                raise _in_band(event.error)
            # Routers always announce the route first; anything else is a router bug.
            raise APIError(
                502,
                "the router sent output before a route decision",
                type_="server_error",
                code="bad_gateway",
            )
        raise APIError(
            502,
            "the router closed the stream without an answer",
            type_="server_error",
            code="bad_gateway",
        )

    async def _open(
        self, events: AsyncIterator[rpb.ChatResponse]
    ) -> tuple[rpb.RouteDecision | None, list[rpb.ChatResponse]]:
        """Reads the route decision and the first event after it (they come together: the
        router announces the route once the model has answered). A failure up to there,
        an error status or an error event before any output, raises APIError, so even a
        streamed request still gets a plain HTTP error instead of a 200 stream."""
        try:
            route = await self._first(events)
            first = await anext(events, None)
            if first is not None and first.WhichOneof("event") == "error":
                raise _in_band(first.error, route)
        except APIError as exc:
            raise self._named(exc) from None
        return route, [first] if first is not None else []

    def _named(self, exc: APIError) -> APIError:
        """A prompt too long for the context names this API's input field (or the item of
        it: "prompt[2]" of a list of prompts)."""
        if exc.code == "context_length_exceeded" and not (exc.param or "").startswith(
            f"{self.input_param}["
        ):
            exc.param = self.input_param
        return exc

    async def _collect(self, request: rpb.ChatRequest) -> Collected:
        out = Collected()
        usage = UsageTotal(request.n)
        events = self.router.chat(request)
        out.route, pending = await self._open(events)
        async for event in _prepend(pending, events):
            kind = event.WhichOneof("event")
            if kind == "route":
                # A second decision: the workflow the policy chose did not answer and a
                # model answers directly (it names the workflow that was tried).
                out.route = event.route
            elif kind == "chunk":
                choice = out.choice(event.choice)
                choice.text.append(event.chunk.text)
                choice.tokens.extend(event.chunk.tokens)
                choice.tool_calls.extend(event.chunk.tool_calls)
            elif kind == "complete":
                out.choice(event.choice).finish_reason = FINISH_REASONS[
                    event.complete.finish_reason
                ]
                out.usage = usage.add(event.choice, event.complete.usage)
            elif kind == "error":
                raise self._named(_in_band(event.error, out.route))
        return out

    def _report_usage(self, usage: ipb.Usage | None, model: str) -> None:
        if self.on_usage is not None and usage is not None:
            self.on_usage(usage.prompt_tokens, usage.completion_tokens, model)

    @staticmethod
    def usage_dict(usage: ipb.Usage | None) -> dict[str, int] | None:
        if usage is None:
            return None
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        }

    async def _stream(
        self,
        request: rpb.ChatRequest,
        request_id: str,
        render: Callable[[rpb.ChatResponse], dict[str, Any] | None],
        finish: Callable[[str, int], dict[str, Any]],
        usage_chunk: Callable[[ipb.Usage], dict[str, Any]] | None,
        opening: Callable[[int], dict[str, Any]] | None,
    ) -> StreamingResponse:
        """``finish`` is sent for each choice as it completes, ``opening`` (when given) for
        each choice before any output."""
        events = self.router.chat(request)
        route, pending = await self._open(events)

        async def body() -> AsyncIterator[str]:
            usage: ipb.Usage | None = None
            total = UsageTotal(request.n)
            answered_by = route.model if route else ""
            try:
                # The opening chunk (built now that the routed model is known) and the
                # output already read go out in one write: each write is a trip through
                # every middleware's send and a syscall.
                head = (
                    [sse(opening(index)) for index in range(choices_in(request))]
                    if opening is not None
                    else []
                )
                while pending and pending[0].WhichOneof("event") in ("chunk", "progress"):
                    payload = render(pending.pop(0))
                    if payload is not None:
                        head.append(sse(payload))
                if head:
                    yield "".join(head)
                async for event in _prepend(pending, events):
                    kind = event.WhichOneof("event")
                    if kind == "route":
                        answered_by = event.route.model
                    if kind == "complete":
                        usage = total.add(event.choice, event.complete.usage)
                        reason = FINISH_REASONS[event.complete.finish_reason]
                        yield sse(finish(reason, event.choice))
                    elif kind == "error":
                        # The 200 is already sent: the error goes in-band, shaped and
                        # classified like the same failure before the stream.
                        yield sse(_in_band(event.error).body())
                        yield SSE_DONE
                        return
                    else:
                        payload = render(event)
                        if payload is not None:
                            yield sse(payload)
                if usage_chunk is not None and usage is not None:
                    yield sse(usage_chunk(usage))
                self._report_usage(usage, answered_by)
                yield SSE_DONE
            except APIError as exc:  # the router failed mid-stream
                yield sse(exc.body())
                yield SSE_DONE

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **route_headers(route, request_id)},
        )


UsageHook = Callable[[int, int, str], None]


class ServingChat(Serving):
    async def create(
        self, body: ChatCompletionRequest, request_id: str, principal: Principal | None = None
    ) -> JSONResponse | StreamingResponse:
        _check_common(body)
        router_request = rpb.ChatRequest(
            request_id=request_id,
            model=body.model,
            stream=bool(body.stream),
            n=choice_count(body),
        )
        stamp_caller(router_request, principal)
        for message in body.messages:
            router_request.chat.messages.add(
                role=template_role(message.role),
                content=message.text(),
                name=message.name or "",
                tool_call_id=message.tool_call_id or "",
                tool_calls=[
                    ipb.ToolCall(
                        id=call.id, name=call.function.name, arguments_json=call.function.arguments
                    )
                    for call in message.tool_calls or []
                ],
            )
        choice = body.tool_choice
        offer_tools(
            router_request.chat,
            [
                (t.function.name, t.function.description, t.function.parameters)
                for t in body.tools or []
            ],
            None if isinstance(choice, NamedToolChoice) else choice,
            choice.function.name if isinstance(choice, NamedToolChoice) else "",
        )
        router_request.sampling.CopyFrom(
            sampling_from_request(
                body,
                max_tokens=body.max_completion_tokens or body.max_tokens,
                logprobs=bool(body.logprobs),
                top_logprobs=body.top_logprobs or 0,
                response_format=body.response_format,
            )
        )
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        want_logprobs = bool(body.logprobs)
        if body.stream:
            return await self._stream_chat(
                router_request, request_id, completion_id, created, want_logprobs, body
            )
        out = await self._collect(router_request)
        model = out.route.model if out.route else body.model
        self._report_usage(out.usage, model)
        response = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": index,
                    "message": chat_message(choice),
                    "logprobs": chat_logprobs(choice.tokens) if want_logprobs else None,
                    "finish_reason": choice.finish_reason,
                }
                for index, choice in ((i, out.choice(i)) for i in range(choices_in(router_request)))
            ],
            "usage": self.usage_dict(out.usage),
            "system_fingerprint": None,
        }
        return JSONResponse(response, headers=route_headers(out.route, request_id))

    async def _stream_chat(
        self,
        router_request: rpb.ChatRequest,
        request_id: str,
        completion_id: str,
        created: int,
        want_logprobs: bool,
        body: ChatCompletionRequest,
    ) -> StreamingResponse:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        model_holder = {"model": body.model}
        calls_made: dict[int, int] = {}

        def chunk(
            delta: dict[str, Any],
            index: int,
            finish_reason: str | None = None,
            logprobs: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_holder["model"],
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": index,
                        "delta": delta,
                        "logprobs": logprobs,
                        "finish_reason": finish_reason,
                    }
                ],
            }
            if include_usage:
                payload["usage"] = None
            return payload

        def render(event: rpb.ChatResponse) -> dict[str, Any] | None:
            kind = event.WhichOneof("event")
            if kind == "route":
                # A second decision (a workflow that did not answer, a model that does):
                # the chunks from here on name the model that writes them.
                model_holder["model"] = event.route.model
                return None
            if kind == "progress":
                # Workflow progress (complex path) is not the answer: it travels beside it,
                # as reasoning models' thoughts do.
                return chunk({"reasoning_content": event.progress.text + "\n"}, 0)
            if kind != "chunk":
                return None
            piece = event.chunk
            if piece.tool_calls:
                # Each call whole in one delta; index counts the choice's calls. Text that
                # came in the same chunk (a held stream merges them) goes with it.
                made = calls_made.get(event.choice, 0)
                calls_made[event.choice] = made + len(piece.tool_calls)
                delta: dict[str, Any] = {"content": piece.text} if piece.text else {}
                delta["tool_calls"] = [
                    {"index": made + i, **tool_call_dict(call)}
                    for i, call in enumerate(piece.tool_calls)
                ]
                return chunk(delta, event.choice)
            if not piece.text and not (want_logprobs and piece.tokens):
                return None
            return chunk(
                {"content": piece.text},
                event.choice,
                logprobs=chat_logprobs(piece.tokens) if want_logprobs else None,
            )

        def usage_chunk(usage: ipb.Usage) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_holder["model"],
                "system_fingerprint": None,
                "choices": [],
                "usage": self.usage_dict(usage),
            }

        response = await self._stream(
            router_request,
            request_id,
            render,
            finish=lambda reason, index: chunk({}, index, reason),
            usage_chunk=usage_chunk if include_usage else None,
            # The opening chunk carries the role, as OpenAI's does.
            opening=lambda index: chunk({"role": "assistant", "content": ""}, index),
        )
        model_holder["model"] = response.headers.get("x-lalo-model", body.model)
        return response


class ServingCompletions(Serving):
    input_param = "prompt"

    async def create(
        self, body: CompletionRequest, request_id: str, principal: Principal | None = None
    ) -> JSONResponse | StreamingResponse:
        _check_common(body)
        if body.suffix:
            raise _unsupported("suffix", "suffix is not supported.")
        if body.max_tokens == 0 and not body.echo:
            raise APIError(
                400,
                "max_tokens must be at least 1 (0 only with echo, to score the prompt).",
                param="max_tokens",
                code="invalid_value",
            )
        if body.best_of is not None and body.best_of > 1:
            raise _unsupported("best_of", "best_of > 1 is not supported yet.")
        prompts = completion_prompts(body.prompt)
        router_request = rpb.ChatRequest(
            request_id=request_id,
            model=body.model,
            stream=bool(body.stream),
            n=choice_count(body),
        )
        texts = [p for p in prompts if isinstance(p, str)]
        token_lists = [ipb.TokenIds(ids=p) for p in prompts if not isinstance(p, str)]
        if len(prompts) == 1 and texts:
            router_request.prompt = texts[0]
        elif len(prompts) == 1:
            router_request.prompt_token_ids.CopyFrom(token_lists[0])
        else:
            # Answered by one routed model; choice p * n + j is prompt p's j-th.
            router_request.prompts.prompts.extend(texts)
            router_request.prompts.token_prompts.extend(token_lists)
        stamp_caller(router_request, principal)
        want_logprobs = body.logprobs is not None
        router_request.sampling.CopyFrom(
            sampling_from_request(
                body,
                max_tokens=body.max_tokens if body.max_tokens is not None else 16,
                logprobs=want_logprobs,
                top_logprobs=body.logprobs or 0,
                response_format=body.response_format,
            )
        )
        # The prompt comes back first (scored, with logprobs) and counts as no completion.
        router_request.sampling.echo = bool(body.echo)
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            model_holder = {"model": body.model}
            # Where each choice's text has got to (logprobs' text_offset).
            offsets: dict[int, int] = {}

            def chunk(
                text: str,
                index: int,
                finish_reason: str | None,
                tokens: list[ipb.TokenInfo] | None = None,
            ) -> dict[str, Any]:
                offset = offsets.get(index, 0)
                payload: dict[str, Any] = {
                    "id": completion_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model_holder["model"],
                    "choices": [
                        {
                            "index": index,
                            "text": text,
                            "finish_reason": finish_reason,
                            "logprobs": completion_logprobs(tokens or [], offset)
                            if want_logprobs and tokens
                            else None,
                        }
                    ],
                }
                if include_usage:
                    payload["usage"] = None
                offsets[index] = offset + len(text)
                return payload

            def render(event: rpb.ChatResponse) -> dict[str, Any] | None:
                if event.WhichOneof("event") != "chunk":
                    return None
                if not event.chunk.text and not (want_logprobs and event.chunk.tokens):
                    return None
                return chunk(event.chunk.text, event.choice, None, list(event.chunk.tokens))

            def usage_chunk(usage: ipb.Usage) -> dict[str, Any]:
                return {
                    "id": completion_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model_holder["model"],
                    "choices": [],
                    "usage": self.usage_dict(usage),
                }

            response = await self._stream(
                router_request,
                request_id,
                render,
                finish=lambda reason, index: chunk("", index, reason),
                usage_chunk=usage_chunk if include_usage else None,
                opening=None,
            )
            model_holder["model"] = response.headers.get("x-lalo-model", body.model)
            return response
        out = await self._collect(router_request)
        model = out.route.model if out.route else body.model
        self._report_usage(out.usage, model)
        payload = {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": index,
                    "text": "".join(choice.text),
                    "logprobs": completion_logprobs(choice.tokens, 0) if want_logprobs else None,
                    "finish_reason": choice.finish_reason,
                }
                for index, choice in ((i, out.choice(i)) for i in range(choices_in(router_request)))
            ],
            "usage": self.usage_dict(out.usage),
            "system_fingerprint": None,
        }
        return JSONResponse(payload, headers=route_headers(out.route, request_id))


def chat_message(choice: CollectedChoice) -> dict[str, Any]:
    """A chat completion's message: its text, and the calls it made (content is null
    when there are calls and no text, as OpenAI sends it)."""
    text = "".join(choice.text)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not choice.tool_calls else None,
        "refusal": None,
    }
    if choice.tool_calls:
        message["tool_calls"] = [tool_call_dict(call) for call in choice.tool_calls]
    return message


def chat_logprobs(tokens: list[ipb.TokenInfo] | Any) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": list(t.token_bytes),
                "top_logprobs": [
                    {"token": a.token, "logprob": a.logprob, "bytes": list(a.token_bytes)}
                    for a in t.top_logprobs
                ],
            }
            for t in tokens
        ],
        "refusal": None,
    }


def completion_logprobs(tokens: list[ipb.TokenInfo], start: int) -> dict[str, Any]:
    # Offsets index the completion's text, so they advance by what each token adds to it:
    # a character split over several tokens counts once, not once per token.
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    offsets = []
    position = start
    for t in tokens:
        offsets.append(position)
        position += len(decoder.decode(t.token_bytes or t.token.encode("utf-8")))
    return {
        "tokens": [t.token for t in tokens],
        # An echoed prompt's first token has nothing before it to be scored on: null, as
        # OpenAI and vLLM give it.
        "token_logprobs": [t.logprob if t.HasField("logprob") else None for t in tokens],
        "top_logprobs": [
            {a.token: a.logprob for a in t.top_logprobs} if t.HasField("logprob") else None
            for t in tokens
        ],
        "text_offset": offsets,
    }
