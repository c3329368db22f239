"""What the edge does to every request before a route sees it.

* Headers that only LALO's own components may set (``x-lalo-*``: tenant, priority, route,
  …) are removed from client requests; the gateway derives them from the verified identity.
* Bodies over ``max_body_bytes`` are refused with 413, by ``Content-Length`` up front and by
  counting while streaming (a chunked body cannot slip past).
* Routes call :func:`check_generation_limits` for message count and ``max_tokens`` (400);
  embeddings, over REST and gRPC, call :func:`check_input_count` for their inputs (400).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from lalo_gateway.security.errors import RequestLimitExceeded, RequestTooLarge
from lalo_gateway.security.principal import Principal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INTERNAL_HEADER_PREFIX = b"x-lalo-"
# Other headers only trusted proxies or internal hops may set.
STRIPPED_HEADERS = frozenset({b"x-lalo-service-token", b"x-tenant-id", b"x-principal"})


def is_internal_header(name: bytes) -> bool:
    name = name.lower()
    return name.startswith(INTERNAL_HEADER_PREFIX) or name in STRIPPED_HEADERS


class EdgeMiddleware:
    """Strips internal headers and enforces the body size limit (pure ASGI, so streaming
    responses pass through untouched).

    A body is read in full (it is bounded by the limit) before the app sees it, so an
    oversized chunked upload is answered 413 here rather than surfacing as a parse error.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["headers"] = [(k, v) for k, v in scope["headers"] if not is_internal_header(k)]
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = 0
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = int(value) if value.isdigit() else 0
                break
        if declared > limit:
            await _reject_too_large(scope, send, limit)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(b"", receive, first=message), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await _reject_too_large(scope, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        # Kept for the audit record of keys whose policy stores content; dropped otherwise.
        scope.setdefault("state", {})["lalo_request_body"] = body
        await self.app(scope, _replay(body, receive), send)


def too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"Request body too large: the limit is {limit} bytes (LALO_GATEWAY_MAX_BODY_BYTES)."
    )


async def _reject_too_large(scope: Scope, send: Send, limit: int) -> None:
    error = too_large(limit)
    context = scope.get("state", {}).get("lalo")
    if context is not None:
        context.error_code = error.openai_code
    body = json.dumps(
        {
            "error": {
                "message": error.message,
                "type": error.openai_type,
                "param": None,
                "code": error.openai_code,
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive, first: Message | None = None) -> Receive:
    pending: Message | None = first or {"type": "http.request", "body": body, "more_body": False}

    async def replayed() -> Message:
        nonlocal pending
        if pending is not None:
            message, pending = pending, None
            return message
        return await receive()

    return replayed


# OpenAI's own bound on ``n`` (every choice is a generation of up to max_tokens): REST
# bodies meet it in protocol.py, public gRPC calls in check_generation_limits.
MAX_CHOICES = 128


def check_generation_limits(
    *,
    messages: int | None,
    max_tokens: int | None,
    max_messages: int,
    max_tokens_limit: int,
    choices: int | None = None,
    prompts: int | None = None,
    fields: tuple[str, str] = ("messages", "max_tokens"),
) -> None:
    """400 with a clear message when a request asks for more than the gateway allows.
    ``choices``: n; ``prompts``: how many prompts a text completion sends (each answered
    n times: MAX_CHOICES bounds them all); ``fields``: what the API calls its messages and
    its max_tokens (the Responses API: input, max_output_tokens)."""
    messages_field, max_tokens_field = fields
    if choices is not None and choices > MAX_CHOICES:
        raise RequestLimitExceeded(
            f"n is {choices}; at most {MAX_CHOICES} choices are accepted.", param="n"
        )
    per_prompt = max(choices or 1, 1)
    if prompts is not None and prompts * per_prompt > MAX_CHOICES:
        raise RequestLimitExceeded(
            f"{prompts} prompts with n={per_prompt} ask for {prompts * per_prompt} "
            f"completions; at most {MAX_CHOICES} are accepted per request: split the "
            "prompts over several requests.",
            param="prompt",
        )
    if messages is not None and messages > max_messages:
        what = "messages" if messages_field == "messages" else f"{messages_field} items"
        raise RequestLimitExceeded(
            f"Too many {what}: {messages} given, at most {max_messages} are accepted.",
            param=messages_field,
        )
    if max_tokens is not None and max_tokens > max_tokens_limit:
        raise RequestLimitExceeded(
            f"{max_tokens_field} is {max_tokens}; this gateway accepts at most {max_tokens_limit}.",
            param=max_tokens_field,
        )


def check_input_count(inputs: int, max_inputs: int) -> None:
    """400 when an embeddings request carries more inputs than the gateway accepts."""
    if inputs > max_inputs:
        raise RequestLimitExceeded(
            f"Too many inputs: {inputs} given, at most {max_inputs} are accepted.",
            param="input",
        )


def internal_metadata(principal: Principal, *, priority: str = "normal") -> dict[str, str]:
    """The internal headers the gateway itself sends downstream, derived from the verified
    principal (never copied from the client)."""
    return {
        "x-lalo-tenant": principal.tenant,
        "x-lalo-principal": principal.subject,
        "x-lalo-role": principal.role.value,
        "x-lalo-priority": priority,
    }
