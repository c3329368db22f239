"""The security layer's FastAPI edge: the per-request context, the dependencies that
authenticate, authorise and rate-limit, the audit middleware and the error handlers.

``deps.py`` re-exports the ``Annotated`` aliases from here; routes declare the permission
they need with ``dependencies=[require(Permission.X)]`` or a ``Principal`` parameter typed
with :func:`permission`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from lalo_common.errors import LaloError

from lalo_gateway.security.audit import AuditRecord
from lalo_gateway.security.edge import (
    ASGIApp,
    EdgeMiddleware,
    Receive,
    Scope,
    Send,
    check_generation_limits,
)
from lalo_gateway.security.errors import (
    AuthenticationFailed,
    Forbidden,
    ModelNotAllowed,
    RateLimited,
    RequestLimitExceeded,
    RequestTooLarge,
)
from lalo_gateway.security.principal import Principal
from lalo_gateway.security.ratelimit import Admission
from lalo_gateway.security.rbac import Permission
from lalo_gateway.security.runtime import SecurityRuntime
from lalo_gateway.security.settings import SecuritySettings

log = logging.getLogger(__name__)

# Paths any caller may reach without credentials (probes and API docs). Everything else
# needs a principal and a permission; the route sweep test holds every route to that.
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/healthz",
        "/readyz",
        "/livez",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
    }
)
# Probes are not audited: they carry no identity and would drown the log.
UNAUDITED_PATHS = frozenset({"/health", "/healthz", "/readyz", "/livez", "/metrics"})

REQUEST_ID_HEADER = "x-request-id"
# How much of a request and of a response the audit keeps for keys that store content.
CONTENT_LIMIT_BYTES = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def make_request_id(given: str) -> str:
    """The caller's request id when well-formed, else a fresh one."""
    return given if _REQUEST_ID.match(given) else f"req_{uuid.uuid4().hex}"


@dataclass
class RequestContext:
    """What the audit record of one request is built from; routes add model and usage."""

    request_id: str
    principal: Principal | None = None
    admitted: bool = False
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    error_code: str = ""
    content: dict[str, Any] | None = None
    admission: Admission | None = None

    def rate_limit_headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's ``x-ratelimit-*`` headers for the limits this caller has."""
        principal, admission = self.principal, self.admission
        if principal is None or admission is None:
            return []
        headers = []
        for kind, limit, remaining in (
            ("requests", principal.rpm, admission.remaining_requests),
            ("tokens", principal.tpm, admission.remaining_tokens),
        ):
            if limit > 0 and remaining is not None:
                headers.append((f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()))
                headers.append(
                    (f"x-ratelimit-remaining-{kind}".encode(), str(max(0, remaining)).encode())
                )
        return headers


# The context of the request being served, for code that has no Request at hand (the serving
# objects' usage hook, which for streams runs inside the response body iterator).
_current: ContextVar[RequestContext | None] = ContextVar("lalo_request_context", default=None)


def usage_hook(prompt_tokens: int, completion_tokens: int, model: str) -> None:
    """``Serving(on_usage=usage_hook)``: records real usage (streamed responses included) on
    the current request; the audit middleware charges the rate limiter with it."""
    context = _current.get()
    if context is None:
        return
    if model:
        context.model = model
    context.tokens_in += max(0, prompt_tokens)
    context.tokens_out += max(0, completion_tokens)


def request_context(request: Request) -> RequestContext:
    context: RequestContext | None = getattr(request.state, "lalo", None)
    if context is None:  # app built without the audit middleware (unit tests of routes)
        context = RequestContext(request_id=str(uuid.uuid4()))
        request.state.lalo = context
    return context


def security_runtime(request: Request) -> SecurityRuntime:
    runtime: SecurityRuntime | None = getattr(request.app.state, "security", None)
    if runtime is None:
        raise RuntimeError("the security runtime is not started (app.state.security)")
    return runtime


async def authenticated_principal(request: Request) -> Principal:
    """The verified caller of this request (once per request); 401 otherwise."""
    context = request_context(request)
    if context.principal is None:
        runtime = security_runtime(request)
        context.principal = await runtime.authenticator.authenticate_header(
            request.headers.get("authorization")
        )
    return context.principal


class RequirePermission:
    """Dependency: authenticated, allowed ``permission`` (403 otherwise), and within the
    caller's rate limit (429 otherwise). Routes are found by the sweep test through this
    class, so every protected route must use it."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(
        self,
        request: Request,
        principal: Annotated[Principal, Depends(authenticated_principal)],
    ) -> Principal:
        if not principal.can(self.permission):
            raise Forbidden(
                f"Your role '{principal.role.value}' does not have permission "
                f"'{self.permission.value}' needed for {request.method} {request.url.path}."
            )
        context = request_context(request)
        if not context.admitted:
            context.admission = await security_runtime(request).limiter.admit(principal)
            context.admitted = True
        return principal

    def __repr__(self) -> str:
        return f"RequirePermission({self.permission.value})"


def require(permission: Permission) -> Any:
    """``dependencies=[require(Permission.X)]`` on a route or router."""
    return Depends(RequirePermission(permission))


def permission(perm: Permission) -> Any:
    """``principal: Annotated[Principal, permission(Permission.X)]`` in a route signature."""
    return Depends(RequirePermission(perm))


def check_model_allowed(request: Request, principal: Principal, model: str) -> None:
    """403 unless the caller's key may use ``model``; records the model for the audit."""
    request_context(request).model = model
    if not principal.may_use_model(model):
        raise ModelNotAllowed(f"This API key is not allowed to use model '{model}'.")


def check_request_limits(
    request: Request,
    principal: Principal,
    *,
    model: str,
    messages: int | None,
    max_tokens: int | None,
    choices: int | None = None,
    prompts: int | None = None,
    fields: tuple[str, str] = ("messages", "max_tokens"),
) -> None:
    """The per-request checks of a generation route: the key's model allowlist (403) and
    the gateway's message-count, ``max_tokens`` and completion-count limits (400), named as
    the route's API names them (``fields``)."""
    check_model_allowed(request, principal, model)
    settings = security_runtime(request).settings
    check_generation_limits(
        messages=messages,
        max_tokens=max_tokens,
        max_messages=settings.max_messages,
        max_tokens_limit=settings.max_tokens_limit,
        choices=choices,
        prompts=prompts,
        fields=fields,
    )


def record_usage(
    request: Request,
    *,
    model: str | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    content: dict[str, Any] | None = None,
) -> None:
    """Report what a request used (the audit middleware charges the rate limiter with it
    once the response is complete, streamed or not). ``content`` is kept only when the
    caller's key says so."""
    context = request_context(request)
    if model:
        context.model = model
    context.tokens_in += max(0, prompt_tokens)
    context.tokens_out += max(0, completion_tokens)
    if content is not None and context.principal is not None and context.principal.store_content:
        context.content = content


def route_template(scope: Scope) -> str:
    """The matched route's template (``/v1/admin/keys/{key_id}``), or "" when none matched.

    A route included with a prefix knows only its own part of the path, so the prefix is
    taken from the request path (prefixes are literal, so the leading segments match)."""
    route = scope.get("route")
    template: str = getattr(route, "path", "") or ""
    if not template:
        return ""
    actual = scope["path"].rstrip("/").split("/")
    own = template.rstrip("/").split("/")
    missing = len(actual) - len(own)
    if missing > 0 and ":path}" not in template:
        return "/".join(actual[: missing + 1]) + template
    return template


class AuditMiddleware:
    """Outermost middleware: gives each request its context and writes one audit record
    when the response is finished (or failed), whatever the status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNAUDITED_PATHS:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = state.get("request_id", "")
        if not request_id:
            given = ""
            for key, value in scope["headers"]:
                if key == b"x-request-id":
                    given = value.decode("latin-1")
                    break
            request_id = make_request_id(given)
            state["request_id"] = request_id
        context = RequestContext(request_id=request_id)
        state["lalo"] = context
        token = _current.set(context)
        started = time.perf_counter()
        status = 500
        response_body = bytearray()

        async def send_with_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.body":
                principal = context.principal
                if principal is not None and principal.store_content:
                    room = CONTENT_LIMIT_BYTES - len(response_body)
                    response_body.extend(message.get("body", b"")[: max(0, room)])
            elif message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", context.request_id.encode("latin-1")))
                headers += context.rate_limit_headers()
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            _current.reset(token)
            principal = context.principal
            if principal is not None and principal.store_content and context.content is None:
                request_body: bytes = state.get("lalo_request_body", b"")
                context.content = {
                    "request": request_body[:CONTENT_LIMIT_BYTES].decode("utf-8", "replace"),
                    "response": bytes(response_body).decode("utf-8", "replace"),
                }
            state.pop("lalo_request_body", None)
            await self._finish(scope, context, status, started)

    async def _finish(
        self, scope: Scope, context: RequestContext, status: int, started: float
    ) -> None:
        runtime: SecurityRuntime | None = getattr(scope["app"].state, "security", None)
        if runtime is None:
            return
        principal = context.principal
        if principal is not None and (context.tokens_in or context.tokens_out):
            try:
                await runtime.limiter.charge_tokens(
                    principal, context.tokens_in + context.tokens_out
                )
            except Exception:
                log.warning("could not charge tokens to the rate limiter", exc_info=True)
        client = scope.get("client")
        runtime.audit.record(
            AuditRecord(
                method=scope["method"],
                path=scope["path"],
                route=route_template(scope),
                status=status,
                request_id=context.request_id,
                subject=principal.subject if principal else "",
                principal_kind=principal.kind if principal else "",
                role=principal.role.value if principal else "",
                key_id=principal.key_id if principal else "",
                key_prefix=principal.key_prefix if principal else "",
                model=context.model,
                tokens_in=context.tokens_in,
                tokens_out=context.tokens_out,
                latency_ms=(time.perf_counter() - started) * 1000,
                client_addr=client[0] if client else "",
                error_code=context.error_code,
                content=context.content,
            )
        )


_SECURITY_ERRORS: tuple[type[LaloError], ...] = (
    AuthenticationFailed,
    Forbidden,
    ModelNotAllowed,
    RateLimited,
    RequestTooLarge,
    RequestLimitExceeded,
)


def error_body(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


async def security_error_handler(request: Request, exc: Exception) -> JSONResponse:
    status: int = getattr(exc, "http_status", 400)
    code: str = getattr(exc, "openai_code", "error")
    type_: str = getattr(exc, "openai_type", "invalid_request_error")
    message = exc.message if isinstance(exc, LaloError) else str(exc)
    request_context(request).error_code = code
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["retry-after"] = str(exc.retry_after_s)
    if isinstance(exc, AuthenticationFailed):
        headers["www-authenticate"] = 'Bearer realm="lalo"'
    return JSONResponse(
        error_body(message, type_, code, getattr(exc, "param", None)),
        status_code=status,
        headers=headers,
    )


def install_security(app: FastAPI, *, max_body_bytes: int) -> None:
    """Add the middlewares and error handlers; the runtime itself is started in the
    lifespan (``app.state.security = await SecurityRuntime.start(...)``)."""
    for error in _SECURITY_ERRORS:
        app.add_exception_handler(error, security_error_handler)
    app.add_middleware(EdgeMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(AuditMiddleware)  # added last = outermost


AdminPrincipal = Annotated[Principal, permission(Permission.KEYS_ADMIN)]
AuditReader = Annotated[Principal, permission(Permission.AUDIT_READ)]


@contextlib.asynccontextmanager
async def security_lifespan(
    app: FastAPI, settings: SecuritySettings, static_keys: Sequence[str] = ()
) -> AsyncIterator[SecurityRuntime]:
    """Start the security runtime on ``app.state.security`` for the app's lifetime."""
    runtime = await SecurityRuntime.start(settings, static_keys)
    app.state.security = runtime
    try:
        yield runtime
    finally:
        await runtime.close()
