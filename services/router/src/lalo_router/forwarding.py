"""Chat forwarding: decide the route, pick a replica, stream its events back unchanged.

Failures before the first token are retried on another replica of the same pool (a
request that produced no output can be replayed safely); nothing is retried after tokens
were sent — the caller gets an in-band error instead.

A request for ``n`` choices is routed once; each choice is then its own generation on the
routed model (a replica request each, so they spread over replicas and batch with other
traffic), and their events are merged, tagged with the choice they belong to.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    LaloError,
    ResourceExhausted,
    Unavailable,
    error_for_code,
    error_param,
)
from lalo_common.grpc_client import request_metadata
from prometheus_client import Counter

from lalo_router.complex_path import WORKFLOW_POOL, WorkflowChat
from lalo_router.replicas import Replica, ReplicaSet

log = logging.getLogger(__name__)
WORKFLOW_FALLBACKS = Counter(
    "lalo_router_workflow_fallbacks_total",
    "Requests whose policy-chosen workflow did not answer, answered directly, by pool",
    ["pool"],
)

AUTO_MODELS = frozenset({"", "auto"})
# Codes that mean "this replica could not take the request", so another may. CANCELLED
# comes from the replica's side (a server stopping cancels its calls): when our own caller
# goes away the stream raises asyncio.CancelledError instead, never this status.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
MAX_ATTEMPTS = 3
INT64_MAX = 2**63 - 1
# OpenAI's bound on ``n`` (the gateway holds callers to it; this guards the router itself).
MAX_CHOICES = 128
# Codes that are the caller's doing, not a sign of a sick replica.
NOT_REPLICA_FAULTS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND})


@dataclass(frozen=True)
class Route:
    pool: str
    model: str
    reason: str
    category: str = ""
    category_confidence: float = 0.0
    p_escalate: float = 0.0
    classify_ms: float = 0.0
    escalated: bool = False
    # For a workflow the policy chose (``auto``): where the request is answered directly if
    # the workflow does not answer (fails, runs out of budget, or cannot be started).
    direct: Route | None = None


# The route for a request, given the caller's remaining time (PolicyRouter.route).
Decider = Callable[[rpb.ChatRequest, float | None], Awaitable[Route]]


PromptItem: TypeAlias = str | ipb.TokenIds


def offers_tools(chat: ipb.ChatInput) -> bool:
    """Whether the model is to be shown tools (tool_choice "none" hides them): only then
    must it be one that supports them."""
    return len(chat.tools) > 0 and chat.tool_choice.mode != ipb.ToolChoice.MODE_NONE


def prompt_items(request: rpb.ChatRequest) -> list[PromptItem] | None:
    """The prompts of a list (texts, or token ids for a named model); None for any other
    input. A list holding both is refused."""
    if request.WhichOneof("input") != "prompts":
        return None
    texts, token_prompts = request.prompts.prompts, request.prompts.token_prompts
    if texts and token_prompts:
        raise InvalidArgument(
            "a list of prompts is texts or token-id lists, not both", param="prompt"
        )
    return list(texts) if texts else list(token_prompts)


def set_prompt(request: rpb.ChatRequest, item: PromptItem) -> None:
    """Makes ``item`` the request's one prompt."""
    if isinstance(item, str):
        request.prompt = item
    else:
        request.prompt_token_ids.CopyFrom(item)


def single_prompt(request: rpb.ChatRequest) -> rpb.ChatRequest:
    """A list of one prompt is that prompt (routed, answered and reported alike)."""
    items = prompt_items(request)
    if items is None or len(items) != 1:
        return request
    out = rpb.ChatRequest()
    out.CopyFrom(request)
    set_prompt(out, items[0])
    return out


class ChatForwarder:
    def __init__(
        self,
        replicas: ReplicaSet,
        decide: Decider,
        timeout_s: float = 600.0,
        workflows: WorkflowChat | None = None,
    ) -> None:
        self.replicas = replicas
        self.decide = decide
        self.timeout_s = timeout_s
        self.workflows = workflows

    def _generate_request(self, request: rpb.ChatRequest, model: str) -> ipb.GenerateRequest:
        out = ipb.GenerateRequest(request_id=request.request_id, model=model)
        which = request.WhichOneof("input")
        if which == "chat":
            out.chat.CopyFrom(request.chat)
        elif which == "prompt_token_ids":
            out.prompt_token_ids.CopyFrom(request.prompt_token_ids)
        else:
            out.prompt = request.prompt
        out.sampling.CopyFrom(request.sampling)
        return out

    async def chat(
        self, request: rpb.ChatRequest, time_remaining: float | None = None
    ) -> AsyncIterator[rpb.ChatResponse]:
        deadline = time.monotonic() + time_remaining if time_remaining else None
        if request.n > MAX_CHOICES:
            raise InvalidArgument(
                f"n is {request.n}; at most {MAX_CHOICES} choices are accepted", param="n"
            )
        request = single_prompt(request)
        items = prompt_items(request)
        if items is not None:
            prompts = len(items)
            if prompts == 0:
                raise InvalidArgument("prompt is an empty list; send at least one", param="prompt")
            if prompts * max(request.n, 1) > MAX_CHOICES:
                raise InvalidArgument(
                    f"{prompts} prompts with n={max(request.n, 1)} ask for "
                    f"{prompts * max(request.n, 1)} completions; at most {MAX_CHOICES} are "
                    "accepted per request: split the prompts over several requests",
                    param="prompt",
                )
        route = await self.decide(request, time_remaining)
        if request.n > 1 or request.WhichOneof("input") == "prompts":
            async for response in self._choices(request, self._direct(route, request), deadline):
                yield response
            return
        if route.pool != WORKFLOW_POOL:
            async for response in self._forward(request, route, deadline):
                yield response
            return
        if self.workflows is None:
            raise Unavailable("workflows are not configured on this router")
        decision = self._decision(route, None)
        announced = False
        failure = ""
        try:
            async with contextlib.aclosing(self.workflows.run(request, decision)) as events:
                async for response in events:
                    kind = response.WhichOneof("event")
                    if kind == "error" and route.direct is not None:
                        failure = response.error.message or "no answer"
                        break
                    announced = announced or kind == "route"
                    yield response
        except (Unavailable, ResourceExhausted, DeadlineExceeded) as exc:
            if route.direct is None:
                raise
            failure = exc.message
        if not failure or route.direct is None:
            return
        # The policy chose the workflow, not the caller: answer the way the default pool
        # would rather than fail a request a model can answer. The failure stays visible.
        log.warning(
            "workflow %s did not answer (%s); answering directly with %s",
            decision.workflow_id or "(not started)",
            failure,
            route.direct.model,
        )
        WORKFLOW_FALLBACKS.labels(pool=route.direct.pool).inc()
        if announced:
            yield rpb.ChatResponse(
                progress=rpb.WorkflowProgress(
                    workflow_id=decision.workflow_id,
                    type="workflow.fallback",
                    text=f"the workflow did not answer ({failure}); answering directly with "
                    f"{route.direct.model}",
                )
            )
        async for response in self._forward(
            request, route.direct, deadline, workflow_id=decision.workflow_id
        ):
            yield response

    @staticmethod
    def _direct(route: Route, request: rpb.ChatRequest) -> Route:
        """The route of a request for several choices: a workflow writes one answer, so
        when the policy chose one the choices come from the model that would answer it
        directly; a caller who named the workflow is told it cannot give several."""
        if route.pool != WORKFLOW_POOL:
            return route
        if route.direct is None and request.WhichOneof("input") == "prompts":
            # As for one raw prompt (complex_path): the policy never sends one to a workflow.
            raise InvalidArgument(
                "workflows answer chat requests (messages), not raw prompts", param="model"
            )
        if route.direct is None:
            raise InvalidArgument(
                "n > 1 is not supported for workflows (a workflow writes one answer); "
                "send n=1, or name a model",
                param="n",
            )
        return dataclasses.replace(
            route.direct, reason=f"{route.direct.reason}; n > 1, so not a workflow"
        )

    async def _choices(
        self, request: rpb.ChatRequest, route: Route, deadline: float | None
    ) -> AsyncIterator[rpb.ChatResponse]:
        """``request.n`` generations (of each prompt, for a list of prompts: choice
        p * n + j is prompt p's j-th) on ``route``, merged as they come. The route goes out
        once, when the first choice has a replica answering. A choice that fails before
        anything was sent fails the whole request (a plain error with its status and field);
        once the route is out, a failure is an in-band error for the response and the other
        choices are stopped: a response is whole or an error, never some of its choices."""
        queue: asyncio.Queue[tuple[int, rpb.ChatResponse | LaloError | None]] = asyncio.Queue()
        per_prompt = max(request.n, 1)
        prompts = prompt_items(request)

        async def pump(index: int) -> None:
            choice = rpb.ChatRequest()
            choice.CopyFrom(request)
            choice.n = 1
            prompt_index, nth = divmod(index, per_prompt)
            if prompts is not None:
                set_prompt(choice, prompts[prompt_index])
            if request.sampling.HasField("seed"):
                # Different samples per choice, still repeatable as a whole (and each
                # prompt of a list answered as it would be alone).
                seed = request.sampling.seed + nth
                choice.sampling.seed = seed if seed <= INT64_MAX else seed - 2**64
            try:
                async for response in self._forward(choice, route, deadline):
                    await queue.put((index, response))
            except LaloError as exc:
                if prompts is not None and exc.code == grpc.StatusCode.INVALID_ARGUMENT:
                    # Say which prompt of the list (one too long for the context, say).
                    exc = type(exc)(
                        f"prompt[{prompt_index}]: {exc.message}",
                        param=exc.param
                        if exc.param and exc.param != "prompt"
                        else f"prompt[{prompt_index}]",
                    )
                await queue.put((index, exc))
            except Exception:  # a bug here must fail the response, not drop a choice
                log.exception("choice %d of request %s failed", index, request.request_id)
                await queue.put((index, LaloError(f"choice {index} failed: internal error")))
            finally:
                await queue.put((index, None))

        count = per_prompt * (len(prompts) if prompts is not None else 1)
        tasks = [asyncio.create_task(pump(index)) for index in range(count)]
        announced = False
        finished = 0
        try:
            while finished < len(tasks):
                index, item = await queue.get()
                if item is None:
                    finished += 1
                    continue
                if isinstance(item, LaloError):
                    if not announced:
                        raise item
                    yield rpb.ChatResponse(
                        error=ipb.GenerateError(
                            code=item.code.value[0], message=item.message, param=item.param or ""
                        ),
                        choice=index,
                    )
                    return
                kind = item.WhichOneof("event")
                if kind == "route":
                    if not announced:
                        announced = True
                        yield item
                    continue
                item.choice = index
                yield item
                if kind == "error":
                    return
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _forward(
        self,
        request: rpb.ChatRequest,
        route: Route,
        deadline: float | None,
        workflow_id: str = "",
    ) -> AsyncIterator[rpb.ChatResponse]:
        """The request answered by a replica of ``route``'s pool; ``workflow_id`` names a
        workflow that was tried first (it goes out with the route decision)."""
        self._check_capabilities(request, route.model)
        generate = self._generate_request(request, route.model)
        # What the caller has left after classification (an LLM strategy takes some).
        left = deadline - time.monotonic() if deadline is not None else None
        if left is not None and left <= 0:
            raise DeadlineExceeded("the request's deadline passed while it was being routed")
        timeout = min(self.timeout_s, left) if left is not None else self.timeout_s
        # When the caller's own deadline is the binding one, its expiry says nothing about
        # the replica: counting it would let a few impatient callers open the circuit of a
        # healthy replica (and black out a pool that has only one).
        caller_bound = timeout < self.timeout_s
        tried: set[str] = set()
        last_error: LaloError | None = None
        for _attempt in range(MAX_ATTEMPTS):
            candidates = self.replicas.candidates(model=route.model, exclude=tried)
            if not candidates:
                break
            replica = candidates[0]
            tried.add(replica.target)
            started = False
            try:
                async for response in self._stream(replica, generate, request, timeout):
                    if not started:
                        started = True
                        decision = self._decision(route, replica)
                        decision.workflow_id = workflow_id
                        yield rpb.ChatResponse(route=decision)
                    yield response
                replica.record_success()
                return
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code not in NOT_REPLICA_FAULTS and not (
                    caller_bound and code is grpc.StatusCode.DEADLINE_EXCEEDED
                ):
                    replica.record_failure()
                if started:
                    yield rpb.ChatResponse(
                        error=ipb.GenerateError(code=code.value[0], message=exc.details() or "")
                    )
                    return
                if code in RETRYABLE:
                    log.warning(
                        "replica %s failed before output (%s); trying another",
                        replica.target,
                        code.name,
                    )
                    last_error = error_for_code(code, exc.details() or code.name)
                    continue
                raise error_for_code(code, exc.details() or code.name, error_param(exc)) from None
        if last_error is not None:
            raise Unavailable(f"every replica for {route.model!r} failed: {last_error.message}")
        if self.replicas.candidates(model=route.model, include_saturated=True, exclude=tried):
            # Healthy but every one at its cap: the caller may retry later (429 upstream).
            raise ResourceExhausted(
                f"every replica serving {route.model!r} is at its limit of outstanding requests"
            )
        raise Unavailable(f"no healthy replica serves {route.model!r}")

    def _check_capabilities(self, request: rpb.ChatRequest, model: str) -> None:
        """Refuse what the chosen model would silently ignore."""
        info = self.replicas.models().get(model)
        if info is None:
            return
        has_tools = request.WhichOneof("input") == "chat" and offers_tools(request.chat)
        if has_tools and not info.supports_tools:
            raise InvalidArgument(
                f"model '{model}' does not support tools; remove 'tools' or use a model that "
                "supports them",
                param="tools",
            )
        fmt = request.sampling.response_format.type
        structured = fmt in (ipb.ResponseFormat.JSON_OBJECT, ipb.ResponseFormat.JSON_SCHEMA)
        if structured and not info.supports_json_schema:
            raise InvalidArgument(
                f"model '{model}' does not support response_format", param="response_format"
            )

    async def _stream(
        self,
        replica: Replica,
        generate: ipb.GenerateRequest,
        request: rpb.ChatRequest,
        deadline_s: float,
    ) -> AsyncIterator[rpb.ChatResponse]:
        replica.outstanding += 1
        call = replica.stub.Generate(
            generate, timeout=deadline_s, metadata=request_metadata(request.request_id)
        )
        try:
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "chunk":
                    yield rpb.ChatResponse(chunk=event.chunk)
                elif kind == "complete":
                    yield rpb.ChatResponse(complete=event.complete)
                elif kind == "error":
                    yield rpb.ChatResponse(error=event.error)
        finally:
            replica.outstanding -= 1
            # Caller gone or done: make sure the backend stops generating too.
            call.cancel()

    @staticmethod
    def _decision(route: Route, replica: Replica | None) -> rpb.RouteDecision:
        return rpb.RouteDecision(
            pool=route.pool,
            model=route.model,
            reason=route.reason,
            category=route.category,
            category_confidence=route.category_confidence,
            p_escalate=route.p_escalate,
            replica=replica.target if replica is not None else "",
            classify_ms=route.classify_ms,
            escalated=route.escalated,
        )
